"""Build ChatEarthNet into a script-free Hugging Face dataset folder: Parquet shards, a dataset card, a build report.

The source is either the four Zenodo zips (members are read straight from the archives) or the extracted tree.
Image columns keep the original PNG bytes; PNGs are checked, not decoded, except small true-colour ones that
may be no-data placeholders.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from PIL import Image as PILImage
from tqdm.auto import tqdm

from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet.card import dataset_card
from earthvl.builders.chatearthnet.features import BAND_COLUMNS, CONFIGS, DEFAULT_CONFIG, EXTRA_GROUPS, features_for
from earthvl.builders.download import ZENODO_API, download_zenodo_record
from earthvl.builders.folder import (
    CARD_FILE,
    DATA_DIR,
    MAX_SHARD_BYTES,
    BuildReport,
    ShardWriter,
    Skip,
    choose,
    default_num_proc,
    name_shards,
    output_folder,
)
from earthvl.cache import cache_dir
from earthvl.errors import EarthvlError
from earthvl.images import PIL_ERRORS

CHUNK_RECORDS = 2_048
"""Records read and written as one unit, in this process or a worker; a shard never spans two chunks."""


# ---------------------------------------------------------------------------------------------------- sources


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
            raise Skip(f"missing PNG {layout.image_path(group, file_name)}")
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
            raise Skip(f"missing PNG {file_name} in {layout.ZIP_NAMES[group]}")
        return data

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()


ZENODO_SOURCE = re.compile(r"^(?:zenodo(?::(?P<record>\d+))?|https?://zenodo\.org/records?/(?P<url_record>\d+)/?)$")
"""`zenodo`, `zenodo:<record>` or a record's URL: download the zips instead of reading a local folder."""


def fetch_zenodo_source(
    source: str, groups: Iterable[str], download_dir: str | Path | None = None, progress: bool = True
) -> Path | None:
    """If `source` names a Zenodo record, download the zips the chosen band `groups` need (resumable, md5-verified)
    into `download_dir` (default: the earthvl cache) and return that folder; otherwise None."""
    match = ZENODO_SOURCE.match(source)
    if match is None or Path(source).exists():
        return None
    record = match["record"] or match["url_record"] or layout.ZENODO_RECORD
    dest = Path(download_dir) if download_dir else cache_dir() / "chatearthnet" / f"zenodo-{record}"
    names = [layout.ZIP_NAMES[key] for key in ("json", *groups)]
    api_url = os.environ.get("EARTHVL_ZENODO_API", ZENODO_API)  # a mirror of Zenodo's records API
    download_zenodo_record(record, dest, names, api_url=api_url, progress=progress)
    return dest


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
        raise Skip(f"caption is not a string (got {type(caption).__name__})")
    return caption


def _base_row(record: Any) -> dict[str, Any]:
    """Every column but the images, from one upstream record (`image` or `image_id`; caption or [caption])."""
    if not isinstance(record, dict):
        raise Skip(f"record is not a JSON object (got {type(record).__name__})")
    file_name = _record_name(record)
    if file_name is None:
        raise Skip("record has no 'image' or 'image_id' string")
    parsed = layout.parse_patch_file_name(file_name)
    if parsed is None:
        raise Skip("file name does not match <x>_<y>_patch<ij>.png")
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
    """Check the true-colour PNG's structure and CRCs and tell whether it is all white or all black.

    Only PNGs that could be uniform are decoded: deflate shrinks a uniform image to under 1/100 of its raw size at
    any compression level, so a file above 1/32 of the raw size that is not stored uncompressed (>= 95% of it)
    cannot be one."""
    raw = _check_png(png, where)
    if raw // 32 < len(png) < raw * 0.95:
        return False
    try:
        with PILImage.open(io.BytesIO(png)) as image:
            extrema = image.getextrema()
    except PIL_ERRORS as error:
        raise Skip(f"corrupt PNG {where}: {error}") from error
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(band == (0, 0) for band in bands) or all(band == (255, 255) for band in bands)


def _check_png(png: bytes, where: str) -> int:
    """Check chunk structure and CRCs without decoding the pixels; the raw size in bytes of the decoded image."""
    try:
        with PILImage.open(io.BytesIO(png)) as image:
            raw = image.width * image.height * len(image.getbands())
            image.verify()
    except PIL_ERRORS as error:
        raise Skip(f"corrupt PNG {where}: {error}") from error
    return raw


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


# ---------------------------------------------------------------------------------------------------- building


def _load_records(source: _TreeSource | _ZipSource, json_file: str) -> list[Any]:
    try:
        records = json.loads(source.read_json(json_file))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EarthvlError(f"caption file {json_file} is not valid JSON: {error}") from error
    if not isinstance(records, list):
        raise EarthvlError(f"caption file {json_file} should hold a list of records, got {type(records).__name__}")
    return records


def _record_rows(
    source: _TreeSource | _ZipSource, record: Any, multispectral: bool
) -> tuple[dict[str, Any] | str, dict[str, Any] | str | None]:
    """(the RGB row or why it was skipped, the six extra bands' columns or why not, or None when not wanted)."""
    try:
        row = _base_row(record)
        row.update(_rgb_columns(source, row["file_name"]))
    except Skip as skip:
        return str(skip), None
    if not multispectral:
        return row, None
    try:
        return row, _extra_columns(source, row["file_name"])
    except Skip as skip:
        return row, str(skip)


@dataclass
class _Chunk:
    """Consecutive records of one caption JSON, to be written as part `part` of each chosen config's split."""

    caption_source: str
    split: str
    part: int
    start: int
    records: list[Any]
    configs: list[str]
    folder: Path
    max_bytes: int


@dataclass
class _ChunkResult:
    rows: dict[str, int]
    skipped: list[tuple[list[str], dict[str, Any], str]]
    shards: dict[str, list[Path]]


def _write_chunk(source: _TreeSource | _ZipSource, chunk: _Chunk) -> _ChunkResult:
    """Read, check and write one chunk: each RGB row feeds the RGB-only config, and with its extra bands the
    multispectral one of the same caption source."""
    writers = {
        config: ShardWriter(chunk.folder / DATA_DIR / config, chunk.split, features_for(CONFIGS[config][1]), chunk.max_bytes, chunk.part)
        for config in chunk.configs
    }
    rgb_configs = [c for c in chunk.configs if not CONFIGS[c][1]]
    ms_configs = [c for c in chunk.configs if CONFIGS[c][1]]
    json_file = layout.json_path(chunk.caption_source, chunk.split)
    skipped = []
    for index, record in enumerate(chunk.records, start=chunk.start):
        row, extra = _record_rows(source, record, multispectral=bool(ms_configs))
        where = {"split": chunk.split, "json_file": json_file, "record": index, "file_name": _record_name(record)}
        if isinstance(row, str):
            skipped.append((chunk.configs, where, row))
            continue
        for config in rgb_configs:
            writers[config].write(row)
        if isinstance(extra, str):
            skipped.append((ms_configs, where, extra))
        elif extra is not None:
            ms_row = {**row, **extra}
            for config in ms_configs:
                writers[config].write(ms_row)
    return _ChunkResult({c: w.rows for c, w in writers.items()}, skipped, {c: w.finish() for c, w in writers.items()})


_worker_source: _TreeSource | _ZipSource | EarthvlError | None = None


def _open_worker_source(root: Path, groups: list[str]) -> None:
    global _worker_source
    try:
        _worker_source = open_source(root, groups)
    except EarthvlError as error:  # raised from the first task: a failing initializer would be respawned forever
        _worker_source = error


def _worker_write_chunk(chunk: _Chunk) -> _ChunkResult:
    if isinstance(_worker_source, EarthvlError):
        raise _worker_source
    assert _worker_source is not None
    return _write_chunk(_worker_source, chunk)


class _ChunkWriter:
    """Writes chunks in this process or in up to `num_proc` worker processes; results come back in chunk order.

    Each worker opens the source itself and writes its chunks' shards directly, so no pixels cross processes."""

    def __init__(self, source: _TreeSource | _ZipSource, groups: list[str], num_proc: int) -> None:
        self.source, self.groups, self.num_proc = source, groups, num_proc
        self.pool: Any = None

    def map(self, chunks: list[_Chunk]) -> Iterator[_ChunkResult]:
        if self.num_proc < 2 or len(chunks) < 2:
            return (_write_chunk(self.source, chunk) for chunk in chunks)
        if self.pool is None:
            context = multiprocessing.get_context("spawn")  # fork is unsafe with pyarrow's and tqdm's threads
            self.pool = context.Pool(self.num_proc, _open_worker_source, (self.source.root, self.groups))
        return self.pool.imap(_worker_write_chunk, chunks)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _build_split(
    writer: _ChunkWriter,
    caption_source: str,
    split: str,
    configs: list[str],
    folder: Path,
    report: BuildReport,
    options: Mapping[str, Any],
) -> None:
    """One pass over a caption JSON feeding both its RGB-only and its multispectral config (whichever are built)."""
    records = _load_records(writer.source, layout.json_path(caption_source, split))
    size = CHUNK_RECORDS
    chunks = [
        _Chunk(caption_source, split, part, start, records[start : start + size], configs, folder, options["max_bytes"])
        for part, start in enumerate(range(0, len(records), size))
    ]
    shards: dict[str, list[Path]] = {config: [] for config in configs}
    rows = dict.fromkeys(configs, 0)
    with tqdm(total=len(records), desc=f"{caption_source} {split}", unit="row", disable=not options["progress"]) as bar:
        for chunk, result in zip(chunks, writer.map(chunks)):
            for config in configs:
                shards[config] += result.shards[config]
                rows[config] += result.rows[config]
            for skipped_configs, where, reason in result.skipped:
                report.skip(skipped_configs, where, reason)
            bar.update(len(chunk.records))
    for config in configs:
        name_shards(folder / DATA_DIR / config, split, features_for(CONFIGS[config][1]), shards[config])
        report.rows.setdefault(config, {})[split] = rows[config]


def _build_into(
    writer: _ChunkWriter,
    folder: Path,
    configs: list[str],
    splits: list[str],
    options: Mapping[str, Any],
) -> BuildReport:
    report = BuildReport(str(writer.source.root), writer.source.kind)
    for caption_source in dict.fromkeys(CONFIGS[c][0] for c in configs):
        chosen = [c for c in configs if CONFIGS[c][0] == caption_source]
        for split in splits:
            for config in chosen:
                (folder / DATA_DIR / config).mkdir(parents=True, exist_ok=True)
            _build_split(writer, caption_source, split, chosen, folder, report, options)
    return report


# ---------------------------------------------------------------------------------------------------- entry


def build_chatearthnet(
    source: str | Path,
    out: str | Path,
    configs: str | Iterable[str] | None = None,
    splits: str | Iterable[str] | None = None,
    progress: bool = True,
    *,
    download_dir: str | Path | None = None,
    num_proc: int | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> dict[str, Any]:
    """Build the ChatEarthNet Hugging Face dataset folder `out` from `source`: a folder with the Zenodo zips, the
    extracted tree, or `zenodo[:<record>]` to download the zips first (into `download_dir`, default the cache).

    `configs` picks among `CONFIGS` and `splits` among train/validation/test (default: all). The folder loads
    with `datasets.load_dataset(out, config)`. Returns the build report (also written to `build_report.json`):
    rows per config and split, and every skipped record with its reason. Chunks of `CHUNK_RECORDS` records are
    read, checked and written by up to `num_proc` worker processes (default: one per core; 1: all in this
    process); the output does not depend on `num_proc`."""
    config_list = choose("configs", configs, CONFIGS)
    split_list = choose("splits", splits, layout.SPLITS)
    groups = ["rgb", *(EXTRA_GROUPS if any(CONFIGS[c][1] for c in config_list) else ())]
    source = open_source(fetch_zenodo_source(str(source), groups, download_dir, progress) or Path(source), groups)
    writer = _ChunkWriter(source, groups, num_proc or default_num_proc())
    options = {"max_bytes": max_shard_bytes, "progress": progress}
    try:
        with output_folder(out, "ChatEarthNet") as staging:
            report = _build_into(writer, staging, config_list, split_list, options)
            dataset_card(staging, report, config_list, split_list).save(staging / CARD_FILE)
            report.save(staging)
    finally:
        writer.close()
        source.close()
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
