"""Build GAIA into a script-free Hugging Face dataset folder: Parquet shards, a dataset card, a build report.

The metadata comes from `{train,val,test}_data.json` (a local folder or the Hub repo `azavras/GAIA`); the pixels
from img2dataset shards, a folder of `<id>.<ext>`, or the source websites through the polite fetcher.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from datasets import Features, Image, List, Value
from tqdm.auto import tqdm

from earthvl.builders.download import fetch_all
from earthvl.builders.folder import (
    CARD_FILE,
    DATA_DIR,
    MAX_SHARD_BYTES,
    BuildReport,
    ShardWriter,
    Skip,
    choose,
    output_folder,
)
from earthvl.builders.gaia import layout
from earthvl.builders.gaia.card import dataset_card
from earthvl.builders.gaia.images import FolderImages, ShardImages, image_column, split_images
from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS

CONFIGS = ("default", "metadata")
"""`default`: one row per image with its pixels; `metadata`: the same rows without pixels, from the JSON alone."""
IMAGE_SOURCES = ("webdataset", "folder", "fetch")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
STRING_FIELDS = ("image_src", "image_alt", "credits", "location", "resolution")
FLOAT_FIELDS = ("lat", "lon")


def _field_feature(name: str) -> Value | List:
    if name == "id":
        return Value("int64")
    if name in layout.LIST_FIELDS:
        return List(Value("string"))
    return Value("float64") if name in FLOAT_FIELDS else Value("string")


METADATA_FEATURES = Features({name: _field_feature(name) for name in layout.FIELDS})
DEFAULT_FEATURES = Features({"image": Image(), **METADATA_FEATURES})
FEATURES = {"default": DEFAULT_FEATURES, "metadata": METADATA_FEATURES}


# ---------------------------------------------------------------------------------------------------- metadata


def metadata_folder(source: str | Path, splits: Iterable[str]) -> tuple[Path, str]:
    """The folder holding the metadata JSONs and its kind: `source` itself, or the Hub repo's files downloaded."""
    path = Path(source)
    if path.is_dir():
        return path, "folder"
    if path.exists() or not HUB_ID.match(str(source)):
        raise EarthvlError(f"GAIA source {source} is neither a folder with {layout.json_path('train')} nor a Hub dataset id")
    from huggingface_hub import hf_hub_download

    files = [layout.json_path(split) for split in splits]
    try:
        paths = [hf_hub_download(str(source), name, repo_type="dataset") for name in files]
    except Exception as error:  # offline mode, no network, missing repo or file: all end the same way for a user
        raise EarthvlError(
            f"cannot download {', '.join(files)} from the Hub dataset {source} ({type(error).__name__}: {error}). "
            f"Without network access, copy those files into a folder and pass it as --source"
        ) from error
    return Path(paths[0]).parent, "hub"


def load_records(path: Path) -> list[Any]:
    """The records of one metadata JSON, in either orientation: a list of records, or pandas' column dict
    (`{"id": {"0": ..., "1": ...}, ...}`), or pandas' index dict (`{"0": {"id": ...}, ...}`)."""
    if not path.is_file():
        raise EarthvlError(f"GAIA metadata file {path} is missing")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EarthvlError(f"GAIA metadata file {path} is not valid JSON: {error}") from error
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        if set(data) & set(layout.FIELDS):
            index = sorted({key for column in data.values() for key in column}, key=_index_order)
            return [{name: column[key] for name, column in data.items() if key in column} for key in index]
        return [data[key] for key in sorted(data, key=_index_order)]
    raise EarthvlError(
        f"GAIA metadata file {path} holds neither a list of records nor a pandas column or index dict "
        f"(top level: {type(data).__name__})"
    )


def _index_order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (math.inf, key)  # type: ignore[return-value]


def metadata_row(record: Any, strip_prefix: bool, counts: Counter) -> dict[str, Any]:
    """One record as a `metadata` row under the upstream field names; missing fields become null (and are
    counted in `counts`), values of the wrong type make the record a `Skip`."""
    if not isinstance(record, dict):
        raise Skip(f"record is not a JSON object (got {type(record).__name__})")
    counts.update(f"extra field {name!r}" for name in record if name not in layout.FIELDS)
    counts.update(f"missing field {name!r}" for name in layout.FIELDS if name not in record)
    sample_id = record.get("id")
    if isinstance(sample_id, str) and sample_id.isdigit():
        sample_id = int(sample_id)
    if not isinstance(sample_id, int) or isinstance(sample_id, bool):
        raise Skip(f"id is not an integer (got {sample_id!r})")
    row: dict[str, Any] = {"id": sample_id}
    for name in layout.FIELDS[1:]:
        value = record.get(name)
        if value is None:
            row[name] = None
        elif name in layout.LIST_FIELDS:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise Skip(f"{name} is not a list of strings (got {value!r:.80})")
            row[name] = value
        elif name in FLOAT_FIELDS:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise Skip(f"{name} is not a number (got {value!r})")
            if abs(value) > (90 if name == "lat" else 180):
                raise Skip(f"{name} {value} is out of range")
            row[name] = float(value)
        else:
            if not isinstance(value, str):
                raise Skip(f"{name} is not a string (got {value!r:.80})")
            row[name] = value
    if strip_prefix and row["captions"]:
        row["captions"] = [strip_caption_prefix(caption) for caption in row["captions"]]
    return row


def strip_caption_prefix(caption: str) -> str:
    """The caption without the "The image showcases:" opening that the generating prompt forced on every one."""
    if caption.startswith(layout.CAPTION_PREFIX):
        caption = caption[len(layout.CAPTION_PREFIX) :].lstrip()
        return caption[:1].upper() + caption[1:]
    return caption


# ---------------------------------------------------------------------------------------------------- images


def _fetched_images(records: Iterable[Mapping[str, Any]], image_dir: Path, progress: bool) -> FolderImages:
    items = [(str(row["id"]), row["image_src"]) for row in records if row.get("image_src")]
    results = fetch_all(items, image_dir, progress=progress)
    failures = {}
    for key, result in results.items():
        if result.status == "opted_out":
            failures[int(key)] = f"{result.url} opted out of AI use (X-Robots-Tag); not fetched"
        elif result.status == "failed":
            failures[int(key)] = f"fetching {result.url} failed: {result.error}"
    return FolderImages(image_dir, failures)


# ---------------------------------------------------------------------------------------------------- building


def _build_split(
    records: list[Any],
    json_file: Path,
    split: str,
    images: ShardImages | FolderImages | None,
    writers: Mapping[str, ShardWriter],
    report: BuildReport,
    seen: dict[int, str],
    options: Mapping[str, Any],
) -> None:
    counts: Counter = report.notes.setdefault("field_counts", Counter())
    resized = 0
    for index, record in enumerate(tqdm(records, desc=f"GAIA {split}", unit="row", disable=not options["progress"])):
        where = {"split": split, "json_file": json_file.name, "record": index}
        try:
            row = metadata_row(record, options["strip_prefix"], counts)
        except Skip as skip:
            report.skip(writers, {**where, "id": record.get("id") if isinstance(record, dict) else None}, str(skip))
            continue
        where["id"] = row["id"]
        if row["id"] in seen:
            report.skip(writers, where, f"duplicate id {row['id']} (first seen in {seen[row['id']]})")
            continue
        seen[row["id"]] = f"{split} record {index}"
        if "metadata" in writers:
            writers["metadata"].write(row)
        if "default" in writers:
            assert images is not None
            try:
                data, ext = images.find(row["id"])
                cell, was_resized = image_column(
                    data, row["id"], ext, resize=options["resize"], max_pixels=options["max_pixels"]
                )
            except Skip as skip:
                report.skip(["default"], where, str(skip))
                continue
            resized += was_resized
            writers["default"].write({"image": cell, **row})
    if images is not None:
        report.notes.setdefault("images", {})[split] = {
            "source": images.kind,
            "found": len(images),
            "failed_downloads": images.failed_downloads,
            "resized": resized,
            "problems": images.problems,
        }


def _images_for(
    kind: str, root: Path, split: str, image_dir: Path | None, records: list[Any], progress: bool
) -> ShardImages | FolderImages:
    """Where the split's pixels come from; `fetch` downloads them first (only what earlier runs did not get)."""
    if kind == "webdataset":
        images = split_images(root, split)
        if images.shards == 0:
            raise EarthvlError(
                f"no WebDataset shards (*.tar) in {root / layout.shard_dir(split)} for the {split} split: put the "
                f"img2dataset output there, or take pixels from --images folder or --images fetch"
            )
        return images
    assert image_dir is not None
    if kind == "folder":
        if not image_dir.is_dir():
            raise EarthvlError(f"image folder {image_dir} does not exist")
        return FolderImages(image_dir)
    rows = []
    for record in records:
        try:
            rows.append(metadata_row(record, False, Counter()))
        except Skip:
            continue  # reported when the split is built
    return _fetched_images(rows, image_dir, progress)


def build_gaia(
    source: str | Path,
    out: str | Path,
    configs: str | Iterable[str] | None = None,
    splits: str | Iterable[str] | None = None,
    images: str = "webdataset",
    image_dir: str | Path | None = None,
    strip_prefix: bool = False,
    resize: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> dict[str, Any]:
    """Build the GAIA Hugging Face dataset folder `out` from `source` (a folder with the metadata JSONs, or the Hub
    id `azavras/GAIA`).

    `images` picks where pixels come from: `webdataset` (img2dataset shards in `{split}/` beside the JSONs),
    `folder` (`<id>.<ext>` files in `image_dir`) or `fetch` (downloaded politely from `image_src` into `image_dir`,
    resumable). `resize` downscales to that shortest side (never upscales). Returns the build report (also in
    `build_report.json`): rows per config and split, and every skipped record with its reason."""
    config_list = choose("configs", configs, CONFIGS)
    split_list = choose("splits", splits, layout.SPLITS)
    if images not in IMAGE_SOURCES:
        raise EarthvlError(f"unknown image source {images!r}: choose from {', '.join(IMAGE_SOURCES)}")
    if resize is not None and resize < 1:
        raise EarthvlError(f"resize must be a positive shortest side in pixels, got {resize}")
    root, kind = metadata_folder(source, split_list)
    if images != "webdataset" and image_dir is None:
        if kind != "folder":
            raise EarthvlError(f"--images {images} needs --image_dir when the source is a Hub id")
        image_dir = root / "images"
    image_dir = None if image_dir is None else Path(image_dir)
    options = {"strip_prefix": strip_prefix, "resize": resize, "max_pixels": max_pixels, "progress": progress}
    report = BuildReport(str(source), kind)
    report.notes.update({"images_from": images if "default" in config_list else None, "strip_prefix": strip_prefix, "resize": resize})
    seen: dict[int, str] = {}
    with output_folder(out, "GAIA") as staging:
        for split in split_list:
            json_file = root / layout.json_path(split)
            records = load_records(json_file)
            pixels = None
            if "default" in config_list:
                pixels = _images_for(images, root, split, image_dir, records, progress)
            writers = {
                config: ShardWriter(staging / DATA_DIR / config, split, FEATURES[config], max_shard_bytes)
                for config in config_list
            }
            _build_split(records, json_file, split, pixels, writers, report, seen, options)
            for config, writer in writers.items():
                writer.close()
                report.rows.setdefault(config, {})[split] = writer.rows
        if not any(report.rows[config][split] for config in config_list for split in split_list):
            raise EarthvlError(f"no usable GAIA record in {source}: see the reasons, e.g. {report.skipped[:3]}")
        report.notes["field_counts"] = dict(report.notes.get("field_counts", {}))
        dataset_card(staging, report, config_list, split_list, strip_prefix).save(staging / CARD_FILE)
        report.save(staging)
    return report.as_dict()
