"""The benchmarks of `earthvl eval`: short names resolving to Hub datasets and their columns, and one loaded split.

`dataset` is a short name of `KNOWN`, a Hub id (a known benchmark's id is recognised as it), a local folder (an
earthvl build with a dataset card, or an imagefolder of one sub-folder per class), or `<short name>:<Hub id or
folder>` to evaluate a known benchmark from a mirror with its class names, templates and columns. Explicit
arguments override everything a spec or auto-detection would choose.

For unknown datasets: the image column is the first `Image` feature; the label column the first `ClassLabel`, else a
column named label/labels/class; the caption column captions/caption/text/sentences (a string or a list of strings).
Prompt names come from the ClassLabel names, or for a string label column from its sorted unique values, written as
words (`classnames.readable`); an integer label column without names needs `class_names`.

Rows are left out only for a stated reason, counted in `Benchmark.skipped`: `nodata` (a true `is_nodata`, as
ChatEarthNet marks its blank patches), `unlabelled` (a missing or negative label, as ImageNet's test split has) and
`max_samples` (past the first N kept rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from datasets import ClassLabel, Dataset, Image, LargeList, List, Value, get_dataset_split_names

from earthvl.builders.chatearthnet import layout as chatearthnet_layout
from earthvl.builders.chatearthnet.features import DEFAULT_CONFIG as CHATEARTHNET_CONFIG
from earthvl.builders.gaia import layout as gaia_layout
from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.eval.classnames import (
    EUROSAT_TEMPLATES,
    IMAGENET_TEMPLATES,
    REMOTE_SENSING_TEMPLATES,
    prompt_names,
    readable,
)

TASKS = ("classify", "caption", "retrieve")
NODATA_COLUMN = "is_nodata"
LABEL_COLUMNS = ("label", "labels", "class")
CAPTION_COLUMNS = ("captions", "caption", "text", "sentences")
TEXT_DTYPES = ("string", "large_string")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a known benchmark lives on the Hub and how to read it."""

    hub_id: str
    split: str
    image_column: str
    license: str
    citation: str
    url: str
    config: str | None = None
    revision: str | None = None
    label_column: str | None = None
    caption_column: str | None = None
    class_names: str | None = None
    """Key of `classnames.CLASS_NAMES`."""
    templates: tuple[str, ...] | None = None
    note: str = ""


KNOWN: dict[str, BenchmarkSpec] = {
    "eurosat": BenchmarkSpec(
        "timm/eurosat-rgb", "test", "image", "mit", "Helber et al., IEEE JSTARS 2019 (arXiv:1709.00029)",
        "https://huggingface.co/datasets/timm/eurosat-rgb", label_column="label", class_names="eurosat",
        templates=EUROSAT_TEMPLATES, note="27,000 64 px Sentinel-2 RGB images; labels AnnualCrop ... SeaLake",
    ),
    "resisc45": BenchmarkSpec(
        "timm/resisc45", "test", "image", "unknown (card); NWPU-RESISC45 is for research use",
        "Cheng et al., Proc. IEEE 2017 (arXiv:1703.00121)", "https://huggingface.co/datasets/timm/resisc45",
        revision="fe12fc5f1b7606543b0355eda392f1ddc54625c6", label_column="label", class_names="resisc45",
        templates=REMOTE_SENSING_TEMPLATES, note="the revision MTEB's RESISC45 tasks pin; test split of 6,300 images",
    ),
    "ucmerced": BenchmarkSpec(
        "blanchon/UC_Merced", "train", "image", "unknown (card); USGS imagery, public domain",
        "Yang and Newsam, ACM SIGSPATIAL 2010", "https://huggingface.co/datasets/blanchon/UC_Merced",
        label_column="label", class_names="ucmerced", templates=REMOTE_SENSING_TEMPLATES,
        note="no official split: the Hub copy's only split holds all 2,100 images",
    ),
    "aid": BenchmarkSpec(
        "blanchon/AID", "train", "image", "unknown (card)", "Xia et al., IEEE TGRS 2017",
        "https://huggingface.co/datasets/blanchon/AID", label_column="label", class_names="aid",
        templates=REMOTE_SENSING_TEMPLATES,
        note="imagefolder data/<Class>/ with no official split: the only split holds all 10,000 images",
    ),
    "imagenet1k": BenchmarkSpec(
        "ILSVRC/imagenet-1k", "validation", "image", "ImageNet terms of access (non-commercial research; gated)",
        "Russakovsky et al., IJCV 2015", "https://huggingface.co/datasets/ILSVRC/imagenet-1k",
        label_column="label", class_names="imagenet1k", templates=IMAGENET_TEMPLATES,
        note="gated: accept the terms on the Hub and log in; the test split has no labels, CLIP_benchmark uses val",
    ),
    "gaia": BenchmarkSpec(
        "earthvl/gaia", "test", "image", gaia_layout.LICENSE, "Zavras et al., IEEE GRSM 2026",
        "https://huggingface.co/datasets/earthvl/gaia", config="default", caption_column="captions",
        note="earthvl's build of GAIA: five captions per image",
    ),
    "chatearthnet": BenchmarkSpec(
        "earthvl/chatearthnet", "test", "image", chatearthnet_layout.LICENSE, "Yuan et al., ESSD 2025",
        "https://huggingface.co/datasets/earthvl/chatearthnet", config=CHATEARTHNET_CONFIG, caption_column="caption",
        note="earthvl's build of ChatEarthNet: one caption per patch; blank patches (is_nodata) are left out",
    ),
}


@dataclass
class Benchmark:
    """One loaded split of a benchmark, ready for a task."""

    name: str | None
    source: str
    config: str | None
    split: str
    revision: str | None
    rows: Dataset
    """The split, rows without data or labels removed, the image column cast to `Image(decode=False)`."""
    image_column: str
    label_column: str | None
    caption_column: str | None
    label_names: list[str] | None
    """The dataset's own label names, in label-index order."""
    class_names: list[str] | None
    """Prompt names, in the same order."""
    templates: tuple[str, ...] | None
    skipped: dict[str, int]
    """Rows left out, by reason."""

    def references(self, index: int) -> list[str]:
        """The reference captions of row `index`."""
        if self.caption_column is None:
            raise EarthvlError(f"{self.source} was loaded without a caption column")
        value = self.rows[self.caption_column][index]
        return [value] if isinstance(value, str) else list(value)

    def labels(self) -> list[int]:
        """The label index of every row (string labels mapped to the order of `label_names`)."""
        if self.label_column is None:
            raise EarthvlError(f"{self.source} was loaded without a label column")
        values = list(self.rows[self.label_column])
        if _is_text(self.rows.features[self.label_column]):
            index = {name: i for i, name in enumerate(self.label_names or [])}
            return [index[value] for value in values]
        return [int(value) for value in values]


def load_benchmark(
    dataset: str,
    task: str,
    *,
    config: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    caption_column: str | None = None,
    class_names: list[str] | None = None,
    templates: list[str] | tuple[str, ...] | None = None,
    max_samples: int | None = None,
) -> Benchmark:
    """Load one split of `dataset` for `task` ("classify", "caption" or "retrieve"); see the module docstring."""
    if task not in TASKS:
        raise EarthvlError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if max_samples is not None and max_samples < 1:
        raise EarthvlError(f"max_samples must be a positive number of rows, got {max_samples}")
    name, spec, source = resolve(dataset)
    if revision and Path(source).is_dir():
        raise EarthvlError(f"revision {revision!r} applies to Hub datasets only, and {source} is a local folder")
    config = config or (spec.config if spec else None)
    if revision is None and spec and source == spec.hub_id:
        revision = spec.revision
    split = split or (spec.split if spec else _default_split(source, config, revision))
    where = f"{source}" + (f" (config {config!r}, split {split!r})" if config else f" (split {split!r})")
    try:
        rows = load_split(source, config, split, revision)
    except (OSError, RuntimeError) as error:  # offline, gated, missing or script-based repos
        raise EarthvlError(f"cannot load {where}{f' at revision {revision}' if revision else ''}: {error}") from error
    columns = _Columns(rows, where, spec)
    image = columns.image(image_column)
    rows = rows.cast_column(image, Image(decode=False))
    skipped: dict[str, int] = {}
    if columns.is_flag(NODATA_COLUMN):
        rows = _drop(rows, NODATA_COLUMN, bool, "nodata", skipped)

    label = caption = label_names = prompts = chosen_templates = None
    if task == "classify":
        label = columns.label(label_column)
        rows = _drop(rows, label, _unlabelled, "unlabelled", skipped)
        label_names = _label_names(rows, label)
        prompts = _class_names(rows, label, label_names, class_names, spec, where)
        chosen_templates = _templates(templates, spec)
    else:
        caption = columns.caption(caption_column)
    if len(rows) == 0:
        raise EarthvlError(f"{where} has no rows left to evaluate (left out: {skipped or 'none'})")
    if max_samples is not None and max_samples < len(rows):
        skipped["max_samples"] = len(rows) - max_samples
        rows = rows.select(range(max_samples))
    return Benchmark(
        name=name, source=source, config=config, split=split, revision=revision, rows=rows, image_column=image,
        label_column=label, caption_column=caption, label_names=label_names, class_names=prompts,
        templates=chosen_templates, skipped=skipped,
    )


def resolve(dataset: str) -> tuple[str | None, BenchmarkSpec | None, str]:
    """(short name, spec, source) of a `dataset` argument: a short name, `<short name>:<source>`, a known benchmark's
    Hub id, or any other Hub id or folder (no name, no spec)."""
    prefix, sep, rest = dataset.partition(":")
    if sep and rest and prefix.lower() in KNOWN:
        return prefix.lower(), KNOWN[prefix.lower()], rest
    if dataset.lower() in KNOWN:
        return dataset.lower(), KNOWN[dataset.lower()], KNOWN[dataset.lower()].hub_id
    for name, spec in KNOWN.items():
        if dataset.lower() == spec.hub_id.lower():
            return name, spec, spec.hub_id
    return None, None, dataset


def _default_split(source: str, config: str | None, revision: str | None) -> str:
    try:
        splits = get_dataset_split_names(source, config, revision=revision)
    except Exception as error:  # the Hub clients raise many types for one outcome: the splits cannot be listed
        raise EarthvlError(f"cannot list the splits of {source}{f':{config}' if config else ''}: {error}") from error
    if "test" in splits:
        return "test"
    if len(splits) == 1:
        return splits[0]
    raise EarthvlError(f"{source} has no test split and several others ({', '.join(splits)}): name one with split")


class _Columns:
    """Chooses the columns of a split: explicit name, else the spec's, else auto-detection; errors name them all."""

    def __init__(self, rows: Dataset, where: str, spec: BenchmarkSpec | None) -> None:
        self.features, self.where, self.spec = rows.features, where, spec

    def _fail(self, message: str) -> EarthvlError:
        listed = ", ".join(f"{name} ({_describe(feature)})" for name, feature in self.features.items())
        return EarthvlError(f"{message} in {self.where}; its columns are: {listed}")

    def _pick(self, kind: str, explicit: str | None, known: str | None, detected: str | None) -> str:
        if explicit is not None:
            if explicit not in self.features:
                raise self._fail(f"no {kind} column {explicit!r}")
            return explicit
        chosen = known if known in self.features else detected
        if chosen is None:
            raise self._fail(f"no {kind} column found (pass {kind}_column to name one)")
        return chosen

    def image(self, explicit: str | None) -> str:
        detected = next((name for name, f in self.features.items() if isinstance(f, Image)), None)
        name = self._pick("image", explicit, self.spec.image_column if self.spec else None, detected)
        if not isinstance(self.features[name], Image) and not _is_string(self.features[name]):
            raise self._fail(f"column {name!r} holds neither images nor image paths")
        return name

    def label(self, explicit: str | None) -> str:
        classes = (name for name, f in self.features.items() if isinstance(f, ClassLabel))
        detected = next(classes, next((name for name in LABEL_COLUMNS if name in self.features), None))
        name = self._pick("label", explicit, self.spec.label_column if self.spec else None, detected)
        feature = self.features[name]
        if not isinstance(feature, ClassLabel) and not _is_string(feature) and not _is_integer(feature):
            raise self._fail(f"label column {name!r} is neither a class label, an integer nor a string")
        return name

    def caption(self, explicit: str | None) -> str:
        detected = next((name for name in CAPTION_COLUMNS if name in self.features), None)
        name = self._pick("caption", explicit, self.spec.caption_column if self.spec else None, detected)
        if not _is_text(self.features[name]):
            raise self._fail(f"caption column {name!r} is neither a string nor a list of strings")
        return name

    def is_flag(self, name: str) -> bool:
        return name in self.features and isinstance(self.features[name], Value) and self.features[name].dtype == "bool"


def _drop(rows: Dataset, column: str, left_out: Callable[[Any], bool], reason: str, skipped: dict[str, int]) -> Dataset:
    """`rows` without those whose `column` value `left_out` accepts, counted under `reason` in `skipped` if any."""
    keep = [i for i, value in enumerate(rows[column]) if not left_out(value)]
    if len(keep) == len(rows):
        return rows
    skipped[reason] = len(rows) - len(keep)
    return rows.select(keep)


def _unlabelled(value: int | str | None) -> bool:
    return value is None or (isinstance(value, int) and value < 0)


def _label_names(rows: Dataset, label: str) -> list[str] | None:
    feature = rows.features[label]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if _is_string(feature):
        return sorted(set(rows[label]))
    return None


def _class_names(
    rows: Dataset,
    label: str,
    label_names: list[str] | None,
    explicit: list[str] | None,
    spec: BenchmarkSpec | None,
    where: str,
) -> list[str]:
    if explicit is not None:
        if label_names is not None:
            if len(explicit) != len(label_names):
                raise EarthvlError(f"{len(explicit)} class names given for the {len(label_names)} labels of {where}")
        elif len(explicit) <= (highest := max(rows[label], default=-1)):
            raise EarthvlError(f"{len(explicit)} class names given, but {where} has label {highest}")
        return list(explicit)
    if label_names is None:
        raise EarthvlError(
            f"label column {label!r} of {where} holds bare integers: pass class_names (one prompt name per label index)"
        )
    if spec is not None and spec.class_names is not None:
        try:
            return prompt_names(spec.class_names, label_names)
        except EarthvlError as error:
            raise EarthvlError(f"{where}: {error}") from None
    return [readable(name) for name in label_names]


def _templates(explicit: list[str] | tuple[str, ...] | None, spec: BenchmarkSpec | None) -> tuple[str, ...]:
    if explicit is None:
        return spec.templates if spec and spec.templates else REMOTE_SENSING_TEMPLATES
    missing = [template for template in explicit if "{c}" not in template]
    if not explicit or missing:
        raise EarthvlError(
            f"templates need the placeholder {{c}} for the class name; lacking it: {missing or 'none given'}"
        )
    return tuple(explicit)


def _is_string(feature: object) -> bool:
    return isinstance(feature, Value) and feature.dtype in TEXT_DTYPES


def _is_integer(feature: object) -> bool:
    return isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))


def _is_text(feature: object) -> bool:
    """A string, or a list of strings."""
    return _is_string(feature) or (isinstance(feature, (List, LargeList)) and _is_string(feature.feature))


def _describe(feature: object) -> str:
    if isinstance(feature, Value):
        return feature.dtype
    return type(feature).__name__
