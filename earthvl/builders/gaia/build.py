"""Build GAIA into a script-free Hugging Face dataset folder: Parquet shards, a dataset card, a build report.

The metadata comes from `{train,val,test}_data.json` (a local folder or the Hub repo `azavras/GAIA`); the pixels
from img2dataset shards, a folder of `<id>.<ext>`, or the source websites through the polite fetcher.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from datasets import Features, Image, List, Value
from tqdm.auto import tqdm

from earthvl.builders.download.crawler import fetch_all, key_problem
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.folder import (
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
from earthvl.dataset_folder import CARD_FILE, DATA_DIR
from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS

CONFIGS = ("default", "metadata")
"""`default`: one row per image with its pixels; `metadata`: the same rows without pixels, from the JSON alone."""
IMAGE_SOURCES = ("webdataset", "folder", "fetch")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
STRING_FIELDS = ("image_src", "image_alt", "credits", "location", "resolution")
FLOAT_FIELDS = ("lat", "lon")
INT64 = range(-(2**63), 2**63)
MAX_INT_DIGITS = 4000
"""Longer integer literals are read as floats (then refused as out of range or not an id): Python's int() refuses
them, which would make the whole file unreadable for one bad value."""
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist = 3, 80, 80, 6
"""How a bad value is quoted in a reason: short, whatever its size or depth."""


def _field_feature(name: str, id_type: str) -> Value | List:
    if name == "id":
        return Value(id_type)
    if name in layout.LIST_FIELDS:
        return List(Value("string"))
    return Value("float64") if name in FLOAT_FIELDS else Value("string")


def features(config: str, id_type: str) -> Features:
    """The features of a config, with an `id` column of type `id_type` (see `id_type`)."""
    metadata = {name: _field_feature(name, id_type) for name in layout.FIELDS}
    return Features({"image": Image(), **metadata} if config == "default" else metadata)


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
        data = json.loads(path.read_bytes(), parse_int=_parse_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EarthvlError(f"GAIA metadata file {path} is not valid JSON: {error}") from error
    except RecursionError:
        raise EarthvlError(f"GAIA metadata file {path} cannot be read: it is nested too deeply") from None
    except ValueError as error:
        raise EarthvlError(f"GAIA metadata file {path} cannot be read: {error}") from error
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


def _parse_int(literal: str) -> int | float:
    return int(literal) if len(literal) <= MAX_INT_DIGITS else float(literal)


def _index_order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isascii() and key.isdigit() else (math.inf, key)  # type: ignore[return-value]


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def id_type(records: Iterable[Any]) -> str:
    """The type of the `id` column: `string` when any record's id is a string, else `int64`. Upstream's type is not
    confirmed, so the files decide; ids of other types are skipped either way."""
    ids = (record.get("id") for record in records if isinstance(record, dict))
    return "string" if any(isinstance(sample_id, str) for sample_id in ids) else "int64"


def reported_id(record: Any) -> Any:
    """A record's id as the report shows it: as it is when JSON can hold it, shortened when it is long or deep."""
    value = record.get("id") if isinstance(record, dict) else None
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= _SHOWN.maxstring and _unicode(value):
        return value
    return _SHOWN.repr(value)


def _unicode(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (JSON parsers let lone surrogates such as "\\ud800" through)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(name: str, value: str) -> str:
    if not _unicode(value):
        raise Skip(f"{name} is not valid Unicode (it holds a lone surrogate): {_SHOWN.repr(value)}")
    return value


def _sample_id(value: Any, kind: str) -> int | str:
    """The id of a record in an `id` column of type `kind`; a `Skip` for a wrong type, never a truncated value."""
    if _is_integer(value):
        if kind == "string":
            return str(value)
        if value not in INT64:
            raise Skip(f"id {value} does not fit in int64")
        return value
    if not isinstance(value, str):
        raise Skip(f"id is not an integer or a string (got {_SHOWN.repr(value)})")
    if not value:
        raise Skip("id is an empty string")
    return _string("id", value)


def metadata_row(record: Any, strip_prefix: bool, counts: Counter, kind: str = "int64") -> dict[str, Any]:
    """One record as a `metadata` row under the upstream field names, with its id typed as `kind` (see `id_type`);
    missing fields become null (and are counted in `counts`), values of the wrong type make the record a `Skip`."""
    if not isinstance(record, dict):
        raise Skip(f"record is not a JSON object (got {type(record).__name__})")
    counts.update(f"extra field {_SHOWN.repr(name)}" for name in record if name not in layout.FIELDS)
    counts.update(f"missing field {name!r}" for name in layout.FIELDS if name not in record)
    row: dict[str, Any] = {"id": _sample_id(record.get("id"), kind)}
    for name in layout.FIELDS[1:]:
        value = record.get(name)
        if value is None:
            row[name] = None
        elif name in layout.LIST_FIELDS:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise Skip(f"{name} is not a list of strings (got {_SHOWN.repr(value)})")
            row[name] = [_string(f"{name}[{index}]", item) for index, item in enumerate(value)]
        elif name in FLOAT_FIELDS:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise Skip(f"{name} is not a number (got {_SHOWN.repr(value)})")
            if not _is_integer(value) and not math.isfinite(value):
                raise Skip(f"{name} is not a finite number (got {value})")
            if abs(value) > (90 if name == "lat" else 180):  # before float(): a huge integer would overflow it
                raise Skip(f"{name} {_SHOWN.repr(value)} is out of range")
            row[name] = float(value)
        else:
            if not isinstance(value, str):
                raise Skip(f"{name} is not a string (got {_SHOWN.repr(value)})")
            row[name] = _string(name, value)
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


def _fetched_images(
    records: Iterable[Mapping[str, Any]], image_dir: Path, progress: bool, policy: FetchPolicy
) -> FolderImages:
    failures = {}
    items: dict[str, str] = {}
    for row in records:
        key = str(row["id"])
        if not row.get("image_src") or key in items:  # a duplicate id is reported when the split is built
            continue
        problem = key_problem(key)
        if problem is None:
            items[key] = row["image_src"]
        else:
            failures[key] = f"not fetched: the id {problem} and cannot name the image file"
    results = fetch_all(items.items(), image_dir, policy, progress=progress)
    for key, result in results.items():
        if result.status == "opted_out":
            failures[key] = f"{result.url} opted out of AI use (X-Robots-Tag); not fetched"
        elif result.status == "failed":
            failures[key] = f"fetching {result.url} failed: {result.error}"
    return FolderImages(image_dir, failures)


# ---------------------------------------------------------------------------------------------------- building


def _build_split(
    records: list[Any],
    json_file: Path,
    split: str,
    images: ShardImages | FolderImages | None,
    writers: Mapping[str, ShardWriter],
    report: BuildReport,
    seen: dict[int | str, str],
    options: Mapping[str, Any],
) -> None:
    counts: Counter = report.notes.setdefault("field_counts", Counter())
    resized = 0
    for index, record in enumerate(tqdm(records, desc=f"GAIA {split}", unit="row", disable=not options["progress"])):
        where = {"split": split, "json_file": json_file.name, "record": index}
        try:
            row = metadata_row(record, options["strip_prefix"], counts, options["id_type"])
        except Skip as skip:
            report.skip(writers, {**where, "id": reported_id(record)}, str(skip))
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
    kind: str, root: Path, split: str, image_dir: Path | None, records: list[Any], options: Mapping[str, Any]
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
            rows.append(metadata_row(record, False, Counter(), options["id_type"]))
        except Skip:
            continue  # reported when the split is built
    return _fetched_images(rows, image_dir, options["progress"], options["policy"])


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
    fetch_policy: FetchPolicy | None = None,
) -> dict[str, Any]:
    """Build the GAIA Hugging Face dataset folder `out` from `source` (a folder with the metadata JSONs, or the Hub
    id `azavras/GAIA`).

    `images` picks where pixels come from: `webdataset` (img2dataset shards in `{split}/` beside the JSONs),
    `folder` (`<id>.<ext>` files in `image_dir`) or `fetch` (downloaded politely from `image_src` into `image_dir`,
    resumable, as `fetch_policy` says). `resize` downscales to that shortest side (never upscales). The `id` column
    keeps the type the files hold (see `id_type`). Returns the build report (also in `build_report.json`): rows per
    config and split, every skipped record with its reason, and the `id_type`."""
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
    records = {split: load_records(root / layout.json_path(split)) for split in split_list}
    kind_of_id = id_type(record for split in split_list for record in records[split])
    options = {
        "strip_prefix": strip_prefix,
        "resize": resize,
        "max_pixels": max_pixels,
        "progress": progress,
        "id_type": kind_of_id,
        "policy": fetch_policy or FetchPolicy(),
    }
    report = BuildReport(str(source), kind)
    report.notes.update({"images_from": images if "default" in config_list else None, "strip_prefix": strip_prefix, "resize": resize})
    report.notes["id_type"] = kind_of_id
    seen: dict[int | str, str] = {}
    with output_folder(out, "GAIA") as staging:
        for split in split_list:
            json_file = root / layout.json_path(split)
            pixels = None
            if "default" in config_list:
                pixels = _images_for(images, root, split, image_dir, records[split], options)
            writers = {
                config: ShardWriter(staging / DATA_DIR / config, split, features(config, kind_of_id), max_shard_bytes)
                for config in config_list
            }
            _build_split(records[split], json_file, split, pixels, writers, report, seen, options)
            for config, writer in writers.items():
                writer.close()
                report.rows.setdefault(config, {})[split] = writer.rows
        for config in config_list:
            if not any(report.rows[config].values()):
                examples = [entry for entry in report.skipped if entry["config"] == config][:3]
                raise EarthvlError(f"no usable GAIA record for {config} in {source}: see the reasons, e.g. {examples}")
        report.notes["field_counts"] = dict(report.notes.get("field_counts", {}))
        dataset_card(staging, report, config_list, split_list, strip_prefix).save(staging / CARD_FILE)
        report.save(staging)
    return report.as_dict()
