"""Image-caption rows for the CLIP and BLIP-2 trainers: preprocessed pixels and the caption texts of a scheme.

Caption schemes (`caption_scheme`), as the GAIA paper compared them:

- `alt-text`: the image's alt text from the web page (GAIA's `image_alt`), one caption per image;
- `synthetic-mean`: every synthetic caption of the image (GAIA's five, ChatEarthNet's one); CLIP averages their
  text embeddings into one target per image (the GAIA recipe);
- `synthetic-sample`: one synthetic caption drawn per image per epoch (BLIP-2's recipe; for CLIP, one per step).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Callable, Sequence

import torch
from datasets import Dataset

from earthvl.data import first_column
from earthvl.errors import EarthvlError
from earthvl.train.conversations import CAPTION_COLUMNS
from earthvl.train.foundation import load_sources, short_name
from earthvl.train.rows import BAD_IMAGE, RowTransform, prepare_rows

SCHEMES = ("alt-text", "synthetic-mean", "synthetic-sample")
SCHEME_HELP = {
    "synthetic-mean": "every synthetic caption's text embedding averaged into one",
    "synthetic-sample": "one synthetic caption drawn per image per epoch",
    "alt-text": "the web alt text, --alt_text_column",
}
ALT_TEXT_COLUMN = "image_alt"
TEXTS = "texts"


def caption_scheme_option(default: str, schemes: Sequence[str]) -> Any:
    """The `caption_scheme` option of a trainer's dataclass, offering `schemes`.

    The defaults differ on purpose, each being its trainer's GAIA recipe: CLIP averages the text embeddings of all
    synthetic captions (`synthetic-mean`), BLIP-2 learns to write one caption drawn per epoch (`synthetic-sample`;
    a mean of captions is no target for a captioner, so it is not offered)."""
    if default not in schemes or not set(schemes) <= set(SCHEMES):
        raise ValueError(f"caption_scheme default {default!r} must be one of {', '.join(schemes)}, themselves of {', '.join(SCHEMES)}")
    described = ", ".join(f"{scheme} ({SCHEME_HELP[scheme]})" for scheme in schemes)
    return field(default=default, metadata={"help": f"Text target per image: {described}.", "choices": list(schemes)})


def alt_text_column_option() -> Any:
    """The `alt_text_column` option of a trainer's dataclass."""
    return field(default=ALT_TEXT_COLUMN, metadata={"help": "Column of the alt-text scheme."})


class CaptionRows(RowTransform):
    """The transform behind `caption_rows`: per row, `pixel_values` (3, H, W) and the scheme's `texts`."""

    def __init__(
        self,
        name: str,
        key_column: str,
        caption_column: str,
        scheme: str,
        pixels: Callable[[list[Any]], torch.Tensor],
        **options: Any,
    ) -> None:
        super().__init__(name, key_column, **options)
        self.caption_column, self.scheme, self.pixels = caption_column, scheme, pixels

    def texts(self, row: dict[str, Any]) -> list[str]:
        """The caption texts the scheme takes from a row."""
        value = row[self.caption_column]
        captions = [text for text in (value if isinstance(value, list) else [value]) if text]
        if self.scheme == "synthetic-sample":
            return [self.choose(row[self.key_column], captions, "caption")]
        return captions

    def _open(self, row: dict[str, Any]) -> torch.Tensor:
        return self.pixels([row["image"]])[0]

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if "image" not in batch:  # a single column read
            return batch
        out: dict[str, list[Any]] = {"pixel_values": [], TEXTS: [], BAD_IMAGE: []}
        for values in zip(*batch.values()):
            row = dict(zip(batch, values))
            pixel_values, problem = self.decode(row, self._open)
            out["pixel_values"].append(pixel_values)
            out[TEXTS].append(self.texts(row))
            out[BAD_IMAGE].append(problem)
        return out


def caption_rows(
    dataset: Dataset,
    *,
    pixels: Callable[[list[Any]], torch.Tensor],
    name: str = "dataset",
    scheme: str = "synthetic-mean",
    alt_text_column: str = ALT_TEXT_COLUMN,
    **options: Any,
) -> tuple[Dataset, CaptionRows]:
    """`dataset` as rows of `pixel_values` (made by `pixels` from image cells) and caption `texts`, and the transform
    (`set_epoch` re-draws `synthetic-sample` captions). Rows without captions are left out and counted; `options`
    are `seed`, `on_bad_image` and `max_pixels`."""
    if scheme not in SCHEMES:
        raise EarthvlError(f"caption_scheme={scheme!r}: choose one of {', '.join(SCHEMES)}")
    if scheme == "alt-text":
        if alt_text_column not in dataset.column_names:
            raise EarthvlError(
                f"caption_scheme alt-text needs the column {alt_text_column!r}, which {name} lacks (columns: "
                f"{', '.join(dataset.column_names)}); GAIA has alt texts, ChatEarthNet only generated captions"
            )
        column = alt_text_column
    else:
        column = first_column(dataset, CAPTION_COLUMNS)
        if column is None:
            raise EarthvlError(
                f"{name} has no caption column ({' or '.join(CAPTION_COLUMNS)}); its columns are {', '.join(dataset.column_names)}"
            )
    kept, key_column = prepare_rows(dataset, name=name, answer_column=column)
    transform = CaptionRows(name, key_column, column, scheme, pixels, **options)
    return kept.with_transform(transform), transform


def caption_texts(dataset: Dataset, transform: CaptionRows, limit: int) -> list[str]:
    """The caption texts of the first `limit` rows of a `caption_rows` dataset, read without decoding images."""
    plain = dataset.with_format(None).select(range(min(limit, len(dataset))))
    return [text for row in plain.select_columns([transform.caption_column, transform.key_column]) for text in transform.texts(row)]


def load_caption_rows(
    specs: list[str], split: str, *, limit: int | None = None, **options: Any
) -> tuple[list[Dataset], list[CaptionRows]]:
    """Each dataset's `split` as `caption_rows` (with `options`), and their transforms."""
    datasets, transforms = [], []
    for spec, dataset in zip(specs, load_sources(specs, split, limit)):
        rows, transform = caption_rows(dataset, name=spec, **options)
        datasets.append(rows)
        transforms.append(transform)
    return datasets, transforms


def caption_datasets(
    script_args: Any, pixels: Callable[[list[Any]], torch.Tensor], seed: int
) -> tuple[list[Dataset], list[CaptionRows], dict[str, Dataset] | None]:
    """The training sources, their transforms and the held-out sets by name (None without `eval_split`) that the
    options of a CLIP or BLIP-2 run (`DataArguments` plus `caption_scheme` and `alt_text_column`) ask for."""
    options: dict[str, Any] = dict(
        pixels=pixels,
        scheme=script_args.caption_scheme,
        alt_text_column=script_args.alt_text_column,
        seed=seed,
        on_bad_image=script_args.on_bad_image,
        max_pixels=script_args.max_pixels,
    )
    sources, transforms = load_caption_rows(script_args.datasets, script_args.train_split, **options)
    if not script_args.eval_split:
        return sources, transforms, None
    held_out, _ = load_caption_rows(script_args.datasets, script_args.eval_split, limit=script_args.max_eval_samples, **options)
    return sources, transforms, {short_name(spec): rows for spec, rows in zip(script_args.datasets, held_out)}
