"""Image galleries for the demo's retrieval tab, and reading user images as the demo's models see them.

A gallery is a folder of small JPEGs with one caption each:

    <folder>/0000.jpg, 0001.jpg, ...
    <folder>/gallery.json   {"format": "earthvl-gallery/1", "source", "config", "split",
                             "images": [{"file", "caption", "id", "credits"}, ...],
                             "skipped": [{"row", "id", "reason"}, ...]}

`make_gallery` cuts one from a built dataset (`earthvl build gaia|chatearthnet`, a local folder or a Hub id);
`sample_gallery` builds one offline from the sample world's GAIA images when no gallery is configured.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image as PILImage

from earthvl.atomic import staged_dir
from earthvl.cache import cache_dir
from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS, BadImage, open_image, to_rgb

logger = logging.getLogger(__name__)

GALLERY_FORMAT = "earthvl-gallery/1"
GALLERY_FILE = "gallery.json"
ID_COLUMNS = ("id", "file_name")
"""Where a row's identifier is found: GAIA's `id`, ChatEarthNet's `file_name`."""
JPEG_QUALITY = 90
SAMPLE_GALLERY_VERSION = 1
"""Part of the cached sample gallery's folder name: bump it when `sample_gallery` changes what it builds."""


@dataclass(frozen=True)
class GalleryImage:
    """One image of a gallery: its file and the text shown with it."""

    path: Path
    caption: str
    id: str | None = None
    credits: str | None = None

    def label(self) -> str:
        """The caption, with the image credit when the source names one (GAIA's NASA and ESA images do)."""
        return f"{self.caption} (credit: {self.credits})" if self.credits else self.caption


def read_image(
    source: str | Path | IO[bytes] | dict, *, max_pixels: int, draft_size: tuple[int, int] | None = None
) -> PILImage.Image:
    """An RGB image (`to_rgb`) from a path, an open file or a `datasets` image cell; `BadImage` with a message for
    the user when it is not an image or is over `max_pixels` (checked from the header, before decoding)."""
    return to_rgb(open_image(source, max_pixels=max_pixels, mode=None, draft_size=draft_size))


def make_gallery(
    source: str | Path,
    out: str | Path,
    *,
    config: str | None = None,
    split: str = "test",
    count: int = 48,
    size: int = 256,
    caption_column: str | None = None,
    image_column: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
    """Write a gallery of the first `count` usable rows of `split` of a built dataset (a local folder or a Hub id)
    to `out`, images downsized to at most `size` px a side. Rows whose image does not decode, has no caption or is
    a no-data patch are skipped, logged and listed in `gallery.json`. `out` is replaced as a whole; a folder that
    holds something else than a gallery is refused."""
    from datasets import Image as ImageFeature

    from earthvl.data import load_split
    from earthvl.eval.benchmarks import CAPTION_COLUMNS, NODATA_COLUMN

    if count < 1 or size < 1:
        raise EarthvlError(f"count and size must be positive, got count={count}, size={size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / GALLERY_FILE).is_file())):
        raise EarthvlError(f"{out} exists and is not a gallery folder; name a new or empty folder")
    rows = load_split(str(source), config, split)
    columns = rows.column_names
    caption_column = caption_column or next((name for name in CAPTION_COLUMNS if name in columns), None)
    missing = [name for name in (image_column, caption_column) if name not in columns]
    if caption_column is None or missing:
        raise EarthvlError(
            f"{source} ({split}) has no {' or '.join(missing) if caption_column else 'caption'} column; "
            f"its columns are {', '.join(columns)}"
        )
    if isinstance(rows.features[image_column], ImageFeature):
        rows = rows.cast_column(image_column, ImageFeature(decode=False))  # decoded by read_image, pixel limit first
    id_column = next((name for name in ID_COLUMNS if name in columns), None)
    images: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with staged_dir(out, replace=True) as staging:
        for index, row in enumerate(rows):
            if len(images) == count:
                break
            key = None if id_column is None else str(row[id_column])
            caption = _first_caption(row[caption_column])
            reason = "no-data patch" if row.get(NODATA_COLUMN) else None
            if not caption:
                reason = "no caption"
            if reason is None:
                try:
                    image = read_image(row[image_column], max_pixels=max_pixels, draft_size=(size, size))
                except BadImage as error:
                    reason = str(error)
            if reason is not None:
                skipped.append({"row": index, "id": key, "reason": reason})
                continue
            image.thumbnail((size, size), PILImage.Resampling.LANCZOS)
            name = f"{len(images):04d}.jpg"
            image.save(staging / name, format="JPEG", quality=JPEG_QUALITY)
            credits = row.get("credits")
            images.append({"file": name, "caption": caption, "id": key, "credits": credits or None})
        if not images:
            why = f"e.g. row {skipped[0]['row']}: {skipped[0]['reason']}" if skipped else "the split is empty"
            raise EarthvlError(f"no row of {source} ({split}) gave a gallery image: {why}")
        manifest = {"format": GALLERY_FORMAT, "source": str(source), "config": config, "split": split,
                    "images": images, "skipped": skipped}
        (staging / GALLERY_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    if skipped:
        logger.warning("gallery %s: skipped %d row(s) of %s, e.g. row %d: %s", out, len(skipped), source,
                       skipped[0]["row"], skipped[0]["reason"])
    return out


def _first_caption(value: Any) -> str:
    """GAIA's list of captions -> the first non-empty one; ChatEarthNet's single caption as it is."""
    texts = value if isinstance(value, (list, tuple)) else [value]
    return next((text.strip() for text in texts if isinstance(text, str) and text.strip()), "")


def read_gallery(folder: str | Path) -> list[GalleryImage]:
    """The images of a gallery folder, in order; an error naming the file when `gallery.json` or an image file is
    missing or `gallery.json` is not a gallery."""
    folder = Path(folder)
    manifest_path = folder / GALLERY_FILE
    if not manifest_path.is_file():
        raise EarthvlError(
            f"{manifest_path} is missing: {folder} is not an earthvl gallery (make one with "
            "earthvl.space.gallery.make_gallery)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != GALLERY_FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}, expected {GALLERY_FORMAT!r}")
        entries = [
            GalleryImage(folder / entry["file"], entry["caption"], entry.get("id"), entry.get("credits"))
            for entry in manifest["images"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise EarthvlError(f"{manifest_path} is not a valid gallery file: {type(error).__name__}: {error}") from error
    absent = [entry.path for entry in entries if not entry.path.is_file()]
    if absent:
        raise EarthvlError(f"{manifest_path} lists {len(absent)} image(s) that are missing, e.g. {absent[0]}")
    return entries


def sample_gallery_dir() -> Path:
    """Where `sample_gallery` keeps its gallery: in the earthvl cache."""
    return cache_dir() / "demo" / f"sample-gallery-v{SAMPLE_GALLERY_VERSION}"


def sample_gallery() -> Path:
    """A gallery of the sample world's GAIA images (its train split, 26 images), built offline into the earthvl
    cache on first use (a few seconds) and reused after."""
    from earthvl.builders.gaia.build import build_gaia
    from earthvl.sample import generate_sample

    target = sample_gallery_dir()
    if (target / GALLERY_FILE).is_file():
        return target
    logger.info("building the sample gallery in %s", target)
    with tempfile.TemporaryDirectory() as scratch:
        world = generate_sample(Path(scratch) / "world", tiles=3, gaia_images=40, progress=False)
        dataset = Path(scratch) / "gaia"
        build_gaia(world.gaia.root, dataset, configs="default", splits="train", progress=False)
        return make_gallery(dataset, target, config="default", split="train")

