"""Build ChatEarthNet into a script-free Hugging Face dataset folder: Parquet shards, a dataset card, a build report.

The source is either the four Zenodo zips (members are read straight from the archives) or the extracted tree.
Image columns keep the original PNG bytes; only the true-colour PNG is decoded, to flag no-data placeholders.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, Value
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image as PILImage
from tqdm.auto import tqdm

from earthvl.builders.chatearthnet import layout
from earthvl.errors import EarthvlError

CONFIGS: dict[str, tuple[str, bool]] = {
    "gpt35": ("gpt35", False),
    "gpt4v": ("gpt4v", False),
    "gpt35-multispectral": ("gpt35", True),
    "gpt4v-multispectral": ("gpt4v", True),
}
"""Config name -> (caption source, with the six extra bands)."""
DEFAULT_CONFIG = "gpt35"
BAND_COLUMNS: dict[str, str] = {group: "image" if group == "rgb" else group for group in layout.BAND_GROUPS}
"""Band group -> its Image column; iterating it yields the groups in `layout.BANDS` order."""
EXTRA_GROUPS = tuple(group for group in layout.BAND_GROUPS if group != "rgb")
MAX_SHARD_BYTES = 500 * 2**20
ROW_GROUP_ROWS = 100
"""Small row groups keep image datasets cheap to stream (the Hub's own advice for image Parquet)."""
DATA_DIR = "data"
REPORT_FILE = "build_report.json"
PIL_ERRORS = (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError)


def features_for(multispectral: bool) -> Features:
    """The `datasets.Features` of an RGB-only or a multispectral config."""
    columns: dict[str, Any] = {
        "image": Image(),
        "caption": Value("string"),
        "file_name": Value("string"),
        "tile_x": Value("int32"),
        "tile_y": Value("int32"),
        "patch": Value("string"),
        "lat": Value("float32"),
        "lon": Value("float32"),
        "is_nodata": Value("bool"),
    }
    if multispectral:
        columns.update({BAND_COLUMNS[group]: Image() for group in EXTRA_GROUPS})
    return Features(columns)


# ---------------------------------------------------------------------------------------------------- sources


class _Skip(Exception):
    """A record that cannot become a row; its message is the reason written to the report."""


class _TreeSource:
    """The extracted Zenodo layout."""

    kind = "tree"

    def __init__(self, root: Path, groups: Iterable[str]) -> None:
        self.root = root
        for group in groups:
            if not (root / layout.IMAGE_DIRS[group]).is_dir():
                raise EarthvlError(f"{root / layout.IMAGE_DIRS[group]} is missing: needed for the {group} bands")

    def read_json(self, rel: str) -> bytes:
        path = self.root / rel
        if not path.is_file():
            raise EarthvlError(f"caption file {path} is missing")
        return path.read_bytes()

    def read_image(self, group: str, file_name: str) -> bytes:
        path = self.root / layout.image_path(group, file_name)
        if not path.is_file():
            raise _Skip(f"missing PNG {layout.image_path(group, file_name)}")
        return path.read_bytes()

    def close(self) -> None:
        pass


class _ZipSource:
    """The Zenodo zips; members are found by base name, tolerating a different folder prefix inside an archive."""

    kind = "zip"

    def __init__(self, root: Path, groups: Iterable[str]) -> None:
        self.root = root
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._members: dict[str, dict[str, str]] = {}
        try:
            for key in ("json", *groups):
                self._open(key)
        except BaseException:
            self.close()
            raise

    def _open(self, key: str) -> None:
        path = self.root / layout.ZIP_NAMES[key]
        if not path.is_file():
            raise EarthvlError(f"{path} is missing: needed for the {key} files")
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise EarthvlError(f"{path} is not a valid zip archive: {error}") from error
        self._zips[key] = archive
        self._members[key] = {name.rsplit("/", 1)[-1]: name for name in archive.namelist() if not name.endswith("/")}

    def _read(self, key: str, base_name: str) -> bytes | None:
        member = self._members[key].get(base_name)
        return None if member is None else self._zips[key].read(member)

    def read_json(self, rel: str) -> bytes:
        data = self._read("json", rel.rsplit("/", 1)[-1])
        if data is None:
            raise EarthvlError(f"caption file {rel} is missing from {self.root / layout.ZIP_NAMES['json']}")
        return data

    def read_image(self, group: str, file_name: str) -> bytes:
        data = self._read(group, file_name)
        if data is None:
            raise _Skip(f"missing PNG {file_name} in {layout.ZIP_NAMES[group]}")
        return data

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()


def open_source(source: Path, groups: Iterable[str]) -> _TreeSource | _ZipSource:
    """The zips if `json_files.zip` is in `source`, else the extracted tree if `json_files/` is; else an error."""
    if (source / layout.ZIP_NAMES["json"]).is_file():
        return _ZipSource(source, groups)
    if (source / layout.JSON_DIR).is_dir():
        return _TreeSource(source, groups)
    raise EarthvlError(
        f"no ChatEarthNet data in {source}: expected the Zenodo zips ({', '.join(layout.ZIP_NAMES.values())}) "
        f"or the extracted tree ({layout.JSON_DIR}/, {', '.join(d + '/' for d in layout.IMAGE_DIRS.values())})"
    )


# ---------------------------------------------------------------------------------------------------- records


def _record_name(record: Any) -> str | None:
    if isinstance(record, dict):
        name = record.get("image", record.get("image_id"))
        return name if isinstance(name, str) else None
    return None


def _caption(record: dict) -> str:
    caption = record.get("caption")
    if isinstance(caption, list) and len(caption) == 1:
        caption = caption[0]
    if not isinstance(caption, str):
        raise _Skip(f"caption is not a string (got {type(caption).__name__})")
    return caption


def _base_row(record: Any) -> dict[str, Any]:
    """Every column but the images, from one upstream record (`image` or `image_id`; caption or [caption])."""
    if not isinstance(record, dict):
        raise _Skip(f"record is not a JSON object (got {type(record).__name__})")
    file_name = _record_name(record)
    if file_name is None:
        raise _Skip("record has no 'image' or 'image_id' string")
    parsed = layout.parse_patch_file_name(file_name)
    if parsed is None:
        raise _Skip("file name does not match <x>_<y>_patch<ij>.png")
    tile_x, tile_y, patch = parsed
    lat, lon = layout.patch_center(tile_x, tile_y, patch)
    return {
        "caption": _caption(record),
        "file_name": file_name,
        "tile_x": tile_x,
        "tile_y": tile_y,
        "patch": patch,
        "lat": lat,
        "lon": lon,
    }


def _is_blank(png: bytes, where: str) -> bool:
    """Decode the true-colour PNG (also proving it intact) and tell whether it is all white or all black."""
    try:
        with PILImage.open(io.BytesIO(png)) as image:
            extrema = image.getextrema()
    except PIL_ERRORS as error:
        raise _Skip(f"corrupt PNG {where}: {error}") from error
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(band == (0, 0) for band in bands) or all(band == (255, 255) for band in bands)


def _check_png(png: bytes, where: str) -> None:
    """Check chunk structure and CRCs without decoding the pixels."""
    try:
        with PILImage.open(io.BytesIO(png)) as image:
            image.verify()
    except PIL_ERRORS as error:
        raise _Skip(f"corrupt PNG {where}: {error}") from error


def _image(png: bytes, file_name: str) -> dict[str, Any]:
    return {"bytes": png, "path": file_name}


def _rgb_columns(source: _TreeSource | _ZipSource, file_name: str) -> dict[str, Any]:
    png = source.read_image("rgb", file_name)
    return {"image": _image(png, file_name), "is_nodata": _is_blank(png, layout.image_path("rgb", file_name))}


def _extra_columns(source: _TreeSource | _ZipSource, file_name: str) -> dict[str, Any]:
    columns = {}
    for group in EXTRA_GROUPS:
        png = source.read_image(group, file_name)
        _check_png(png, layout.image_path(group, file_name))
        columns[BAND_COLUMNS[group]] = _image(png, file_name)
    return columns


def _row_bytes(row: Mapping[str, Any]) -> int:
    images = sum(len(row[column]["bytes"]) for column in BAND_COLUMNS.values() if column in row)
    return images + len(row["caption"].encode()) + len(row["file_name"]) + 64


# ---------------------------------------------------------------------------------------------------- writing


class _ShardWriter:
    """Streams rows of one config split into `<split>-XXXXX-of-YYYYY.parquet` shards of at most `max_bytes`."""

    def __init__(self, folder: Path, split: str, features: Features, max_bytes: int) -> None:
        self.folder, self.split, self.max_bytes = folder, split, max_bytes
        self.schema = features.arrow_schema  # carries the Features under metadata key b"huggingface"
        self.rows = 0
        self._paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[dict[str, Any]] = []
        self._shard_bytes = 0

    def write(self, row: dict[str, Any]) -> None:
        size = _row_bytes(row)
        if self._writer is None or (self._shard_bytes and self._shard_bytes + size > self.max_bytes):
            self._next_shard()
        self._buffer.append(row)
        self._shard_bytes += size
        self.rows += 1
        if len(self._buffer) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            assert self._writer is not None
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self._buffer = []

    def _next_shard(self) -> None:
        self._close_shard()
        path = self.folder / f"{self.split}-{len(self._paths):05d}.partial"
        self._paths.append(path)
        self._writer = pq.ParquetWriter(path, self.schema)
        self._shard_bytes = 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def close(self) -> list[Path]:
        """Finish the last shard (an empty one if no row came, so the split still loads) and name them all."""
        if not self._paths:
            self._next_shard()
        self._close_shard()
        total = len(self._paths)
        final = [p.with_name(f"{self.split}-{i:05d}-of-{total:05d}.parquet") for i, p in enumerate(self._paths)]
        for partial, path in zip(self._paths, final):
            partial.rename(path)
        return final


@dataclass
class _Report:
    source: str
    source_kind: str
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, configs: Iterable[str], where: dict[str, Any], reason: str) -> None:
        """Record a skipped record once per config it was meant for; `where` names split, JSON file, index, file."""
        self.skipped.extend({"config": config, **where, "reason": reason} for config in configs)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "source_kind": self.source_kind, "rows": self.rows, "skipped": self.skipped}


def _load_records(source: _TreeSource | _ZipSource, json_file: str) -> list[Any]:
    try:
        records = json.loads(source.read_json(json_file))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EarthvlError(f"caption file {json_file} is not valid JSON: {error}") from error
    if not isinstance(records, list):
        raise EarthvlError(f"caption file {json_file} should hold a list of records, got {type(records).__name__}")
    return records


def _build_split(
    source: _TreeSource | _ZipSource,
    caption_source: str,
    split: str,
    writers: dict[str, _ShardWriter],
    report: _Report,
    progress: bool,
) -> None:
    """One pass over a caption JSON feeding both its RGB-only and its multispectral config (whichever are built)."""
    json_file = layout.json_path(caption_source, split)
    rgb_configs = [c for c in writers if not CONFIGS[c][1]]
    ms_configs = [c for c in writers if CONFIGS[c][1]]
    records = _load_records(source, json_file)
    for index, record in enumerate(tqdm(records, desc=f"{caption_source} {split}", disable=not progress)):
        where = {"split": split, "json_file": json_file, "record": index, "file_name": _record_name(record)}
        try:
            row = _base_row(record)
            row.update(_rgb_columns(source, row["file_name"]))
        except _Skip as skip:
            report.skip(writers, where, str(skip))
            continue
        for config in rgb_configs:
            writers[config].write(row)
        if not ms_configs:
            continue
        try:
            ms_row = {**row, **_extra_columns(source, row["file_name"])}
        except _Skip as skip:
            report.skip(ms_configs, where, str(skip))
            continue
        for config in ms_configs:
            writers[config].write(ms_row)


def _build_into(
    source: _TreeSource | _ZipSource,
    folder: Path,
    configs: list[str],
    splits: list[str],
    max_bytes: int,
    progress: bool,
) -> _Report:
    report = _Report(str(source.root), source.kind)
    for caption_source in dict.fromkeys(CONFIGS[c][0] for c in configs):
        chosen = [c for c in configs if CONFIGS[c][0] == caption_source]
        for split in splits:
            writers = {}
            for config in chosen:
                config_dir = folder / DATA_DIR / config
                config_dir.mkdir(parents=True, exist_ok=True)
                writers[config] = _ShardWriter(config_dir, split, features_for(CONFIGS[config][1]), max_bytes)
            _build_split(source, caption_source, split, writers, report, progress)
            for config, writer in writers.items():
                writer.close()
                report.rows.setdefault(config, {})[split] = writer.rows
    return report


# ---------------------------------------------------------------------------------------------------- card


CITATION = """@article{yuan2025chatearthnet,
  title   = {{ChatEarthNet}: a global-scale image-text dataset empowering vision-language geo-foundation models},
  author  = {Yuan, Zhenghang and Xiong, Zhitong and Mou, Lichao and Zhu, Xiao Xiang},
  journal = {Earth System Science Data},
  year    = {2025}
}"""


def _card_configs(configs: list[str], splits: list[str]) -> list[dict[str, Any]]:
    default = DEFAULT_CONFIG if DEFAULT_CONFIG in configs else configs[0]
    entries = []
    for config in configs:
        entry: dict[str, Any] = {
            "config_name": config,
            "data_files": [{"split": split, "path": f"{DATA_DIR}/{config}/{split}-*.parquet"} for split in splits],
        }
        if config == default:
            entry["default"] = True
        entries.append(entry)
    return entries


def _card_body(rows: Mapping[str, Mapping[str, int]]) -> str:
    counts = "\n".join(
        f"| `{config}` | " + " | ".join(f"{split}: {n:,}" for split, n in splits.items()) + " |"
        for config, splits in rows.items()
    )
    return f"""# ChatEarthNet

Sentinel-2 patches (256x256 px, 8-bit) paired with captions that gpt-3.5-turbo (`gpt35`) or gpt-4-vision (`gpt4v`)
wrote from ESA WorldCover land-cover statistics, repackaged as Parquet from Zenodo record
[{layout.ZENODO_RECORD}](https://zenodo.org/records/{layout.ZENODO_RECORD}) with the official splits.

| config | rows |
|---|---|
{counts}

## Columns and band order

- `image`: true colour, bands {", ".join(layout.BAND_GROUPS["rgb"])} as R, G, B (the original PNG bytes).
- `red_edge` ({", ".join(layout.BAND_GROUPS["red_edge"])}) and `nir_swir` ({", ".join(layout.BAND_GROUPS["nir_swir"])}):
  `*-multispectral` configs only. Stacked, the nine bands are {", ".join(layout.BANDS)}
  (`earthvl.builders.chatearthnet.build.stack_bands`).
- `caption`, `file_name` (upstream `<x>_<y>_patch<ij>.png`), `tile_x`, `tile_y` (Web-Mercator zoom-13 tile),
  `patch` (quarter `<row><col>`), `lat`, `lon` (approximate patch centre, derived from the name),
  `is_nodata` (the image is an all-white or all-black placeholder).

Captions describe image regions ("top left", "middle"): flips and rotations break image-text consistency.

## License and citation

Data: CC-BY-4.0 (upstream code: Apache-2.0). Cite ChatEarthNet (Yuan et al., ESSD 2025):

```bibtex
{CITATION}
```
"""


def dataset_card(rows: Mapping[str, Mapping[str, int]], configs: list[str], splits: list[str]) -> DatasetCard:
    """The dataset card: YAML `configs` pointing at the shards, license, tasks, and a short description."""
    data = DatasetCardData(
        license=layout.LICENSE,
        language="en",
        pretty_name="ChatEarthNet",
        task_categories=["image-to-text", "zero-shot-image-classification"],
        tags=["remote-sensing", "earth-observation", "sentinel-2", "multispectral"],
        configs=_card_configs(configs, splits),
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{_card_body(rows)}")


# ---------------------------------------------------------------------------------------------------- entry


def _choose(kind: str, wanted: str | Iterable[str] | None, known: Iterable[str]) -> list[str]:
    known = list(known)
    if wanted is None:
        return known
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        raise EarthvlError(f"unknown or no {kind} {unknown or wanted}: choose from {', '.join(known)}")
    return [k for k in known if k in wanted]


def _check_output(out: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier build."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_FILE).is_file())):
        raise EarthvlError(
            f"output {out} exists and is not an earlier ChatEarthNet build (no {REPORT_FILE}); not replacing it"
        )


def _sibling(out: Path, role: str) -> Path:
    """A hidden, unique sibling of `out` (same filesystem, so renames are atomic)."""
    return out.with_name(f".{out.name}.{role}-{uuid.uuid4().hex[:12]}")


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished build into place with renames, so `out` is never a half-written dataset."""
    if out.exists():
        old = _sibling(out, "old")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


def build_chatearthnet(
    source: str | Path,
    out: str | Path,
    configs: str | Iterable[str] | None = None,
    splits: str | Iterable[str] | None = None,
    progress: bool = True,
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> dict[str, Any]:
    """Build the ChatEarthNet Hugging Face dataset folder `out` from `source` (Zenodo zips or extracted tree).

    `configs` picks among `CONFIGS` and `splits` among train/validation/test (default: all). The folder loads
    with `datasets.load_dataset(out, config)`. Returns the build report (also written to `build_report.json`):
    rows per config and split, and every skipped record with its reason."""
    config_list = _choose("configs", configs, CONFIGS)
    split_list = _choose("splits", splits, layout.SPLITS)
    source, out = Path(source), Path(out)
    _check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    groups = ["rgb", *(EXTRA_GROUPS if any(CONFIGS[c][1] for c in config_list) else ())]
    reader = open_source(source, groups)
    staging = _sibling(out, "building")
    staging.mkdir()  # unlike tempfile.mkdtemp, honours the umask (mkdtemp's 0700 would survive the rename)
    try:
        report = _build_into(reader, staging, config_list, split_list, max_shard_bytes, progress)
        dataset_card(report.rows, config_list, split_list).save(staging / "README.md")
        (staging / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        reader.close()
    return report.as_dict()


# ---------------------------------------------------------------------------------------------------- reading


def _as_array(value: Any, column: str) -> np.ndarray:
    if isinstance(value, dict):
        value = PILImage.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"])
    if not isinstance(value, PILImage.Image):
        kind = type(value).__name__
        raise EarthvlError(f"column '{column}' should hold an image or a {{'bytes': ...}} dict, got {kind}")
    return np.asarray(value.convert("RGB"))


def stack_bands(row: Mapping[str, Any]) -> np.ndarray:
    """The nine bands of a multispectral row as a (9, H, W) uint8 array in `layout.BANDS` order."""
    planes = []
    for group, column in BAND_COLUMNS.items():
        if column not in row:
            raise EarthvlError(
                f"stack_bands needs column '{column}' ({', '.join(layout.BAND_GROUPS[group])}), which this row lacks "
                f"(columns: {', '.join(row)}): load a '-multispectral' config"
            )
        planes.append(_as_array(row[column], column))
    return np.ascontiguousarray(np.concatenate(planes, axis=-1).transpose(2, 0, 1))


__all__ = [
    "CONFIGS",
    "DEFAULT_CONFIG",
    "build_chatearthnet",
    "dataset_card",
    "features_for",
    "open_source",
    "stack_bands",
]
