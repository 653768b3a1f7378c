"""Build ChatEarthNet into a script-free Hugging Face dataset folder: Parquet shards, a dataset card, a build report.

The source is either the four Zenodo zips (members are read straight from the archives) or the extracted tree.
Image columns keep the original PNG bytes; PNGs are checked, not decoded, except small true-colour ones that
may be no-data placeholders.
"""

from __future__ import annotations

import io
import json
import lzma
import multiprocessing
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping

from PIL import Image as PILImage
from tqdm.auto import tqdm

from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet.card import dataset_card
from earthvl.builders.chatearthnet.features import BAND_COLUMNS, CONFIGS, DEFAULT_CONFIG, EXTRA_GROUPS, features_for
from earthvl.builders.download.zenodo import ZENODO_API, download_zenodo_record
from earthvl.builders.folder import (
    MAX_SHARD_BYTES,
    BuildReport,
    ShardWriter,
    Skip,
    check_output,
    choose,
    default_num_proc,
    name_shards,
    output_folder,
)
from earthvl.cache import cache_dir
from earthvl.dataset_folder import CARD_FILE, DATA_DIR
from earthvl.errors import EarthvlError
from earthvl.images import PIL_ERRORS

CHUNK_RECORDS = 2_048
"""Records read and written as one unit, in this process or a worker; a shard never spans two chunks."""
MAX_JSON_BYTES = 512 * 2**20
"""Largest caption JSON read (upstream's largest, gpt35 train, is about a fifth of this)."""
MAX_JSON_RATIO = 100
"""Largest compression ratio of a caption JSON in `json_files.zip` (JSON text deflates about 10-fold; bombs 1000)."""
MAX_PNG_BYTES = 2**20
"""Largest PNG read: a 256x256 8-bit RGB PNG is at most ~200 KB, even stored uncompressed."""
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
"""Compression methods Python's zipfile reads (not deflate64, method 9, which some Windows tools write)."""
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError, NotImplementedError)
"""What reading a damaged, encrypted or oddly compressed member raises (bad CRC, bad deflate data, ...)."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale-alpha", 6: "RGBA"}


class _Unreadable(Exception):
    """A file or zip member that cannot be read; its message says why."""


def _read_capped(stream: IO[bytes], limit: int, claimed: int) -> bytes:
    """All of `stream`, read in chunks, refusing to go past `limit` bytes whatever its header `claimed`."""
    chunks, total = [], 0
    while chunk := stream.read(min(2**20, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _Unreadable(f"holds more than the {claimed:,} bytes its header claims")
    return b"".join(chunks)


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
        try:
            return self._read(path, MAX_JSON_BYTES)
        except _Unreadable as error:
            raise EarthvlError(f"cannot read caption file {path}: {error}") from error

    def read_image(self, group: str, file_name: str) -> bytes:
        rel = layout.image_path(group, file_name)
        path = self.root / rel
        if not path.is_file():
            raise Skip(f"missing PNG {rel}")
        try:
            return self._read(path, MAX_PNG_BYTES)
        except _Unreadable as error:
            raise Skip(f"cannot read {rel}: {error}") from error

    @staticmethod
    def _read(path: Path, limit: int) -> bytes:
        try:
            size = path.stat().st_size
            if size > limit:
                raise _Unreadable(f"it is {size:,} bytes, over the limit of {limit:,}")
            with path.open("rb") as stream:
                return _read_capped(stream, limit, size)
        except OSError as error:
            raise _Unreadable(error.strerror or str(error)) from error

    def duplicates(self) -> dict[str, dict[str, list[str]]]:
        return {}

    def close(self) -> None:
        pass


class _ZipSource:
    """The Zenodo zips; members are found by base name, tolerating a different folder prefix inside an archive."""

    kind = "zip"

    def __init__(self, root: Path, groups: Iterable[str]) -> None:
        self.root = root
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._members: dict[str, dict[str, list[zipfile.ZipInfo]]] = {}
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
        members: dict[str, list[zipfile.ZipInfo]] = {}
        for info in archive.infolist():
            if not info.is_dir():
                members.setdefault(info.filename.rsplit("/", 1)[-1], []).append(info)
        self._members[key] = members

    def duplicates(self) -> dict[str, dict[str, list[str]]]:
        """Base names that more than one member has, per zip: the member at the upstream path is read, if any."""
        shared: dict[str, dict[str, list[str]]] = {}
        for key, members in self._members.items():
            for base, infos in sorted(members.items()):
                if len(infos) > 1:
                    shared.setdefault(layout.ZIP_NAMES[key], {})[base] = sorted(info.filename for info in infos)
        return shared

    def _find(self, key: str, upstream: str) -> zipfile.ZipInfo | None:
        """The member for the upstream path `upstream`: the only one with its base name, else the one at that path."""
        base = upstream.rsplit("/", 1)[-1]
        infos = self._members[key].get(base, [])
        if len(infos) < 2:
            return infos[0] if infos else None
        exact = [info for info in infos if info.filename == upstream]
        if len(exact) == 1:
            return exact[0]
        names = ", ".join(sorted(info.filename for info in infos))
        where = "" if exact else f", none at {upstream}"
        raise _Unreadable(f"{len(infos)} members named {base} in {layout.ZIP_NAMES[key]}{where}: {names}")

    def _read(self, key: str, info: zipfile.ZipInfo, limit: int, max_ratio: float | None = None) -> bytes:
        """The member's bytes, checked from its header (encryption, method, size, ratio) before any is inflated."""
        if info.flag_bits & 0x1:
            raise _Unreadable("it is encrypted")
        if info.compress_type not in ZIP_METHODS:
            method = zipfile.compressor_names.get(info.compress_type, "unknown")
            raise _Unreadable(
                f"compression method {info.compress_type} ({method}) is not supported by Python's zipfile: extract "
                f"{layout.ZIP_NAMES[key]} (e.g. with 7-Zip) and build from the extracted tree"
            )
        if info.file_size > limit:
            raise _Unreadable(f"it is {info.file_size:,} bytes, over the limit of {limit:,}")
        ratio = info.file_size / max(info.compress_size, 1)
        if max_ratio is not None and ratio > max_ratio:
            raise _Unreadable(
                f"it inflates {info.compress_size:,} bytes to {info.file_size:,} ({ratio:,.0f} to 1), over the "
                f"limit of {max_ratio} to 1"
            )
        try:
            with self._zips[key].open(info) as stream:
                return _read_capped(stream, limit, info.file_size)
        except ZIP_READ_ERRORS as error:
            raise _Unreadable(str(error) or type(error).__name__) from error

    def read_json(self, rel: str) -> bytes:
        zip_name = layout.ZIP_NAMES["json"]
        try:
            info = self._find("json", rel)
        except _Unreadable as error:
            raise EarthvlError(f"caption file {rel}: {error}") from error
        if info is None:
            raise EarthvlError(f"caption file {rel} is missing from {self.root / zip_name}")
        try:
            return self._read("json", info, MAX_JSON_BYTES, MAX_JSON_RATIO)
        except _Unreadable as error:
            raise EarthvlError(f"cannot read caption file {info.filename} in {zip_name}: {error}") from error

    def read_image(self, group: str, file_name: str) -> bytes:
        zip_name = layout.ZIP_NAMES[group]
        try:
            info = self._find(group, layout.image_path(group, file_name))
        except _Unreadable as error:
            raise Skip(str(error)) from error
        if info is None:
            raise Skip(f"missing PNG {file_name} in {zip_name}")
        try:
            return self._read(group, info, MAX_PNG_BYTES)
        except _Unreadable as error:
            raise Skip(f"cannot read {info.filename} in {zip_name}: {error}") from error

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
    try:
        lat, lon = layout.patch_center(tile_x, tile_y, patch)
    except ValueError as error:
        raise Skip(str(error)) from error
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
    """Check from the header that `png` is an 8-bit RGB PNG of the patch size, then its chunk structure and CRCs,
    without decoding the pixels; the raw size in bytes of the decoded image."""
    if not png.startswith(PNG_SIGNATURE):
        raise Skip(f"{where} is not a PNG ({_format_of(png)})")
    if len(png) < 26 or png[12:16] != b"IHDR":
        raise Skip(f"corrupt PNG {where}: it does not start with an IHDR chunk")
    width, height, depth, color = struct.unpack(">IIBB", png[16:26])
    if (depth, color) != (8, 2):
        kind = f"{depth}-bit {PNG_COLOR_TYPES.get(color, f'colour type {color}')}"
        raise Skip(f"{where} is {'an' if kind.startswith('8') else 'a'} {kind} PNG, expected 8-bit RGB")
    size = layout.PATCH_SIZE
    if (width, height) != (size, size):
        raise Skip(f"{where} is {width}x{height} px, expected {size}x{size}")
    try:
        with PILImage.open(io.BytesIO(png)) as image:
            image.verify()
    except PIL_ERRORS as error:
        raise Skip(f"corrupt PNG {where}: {error}") from error
    return width * height * 3


def _format_of(data: bytes) -> str:
    """What a non-PNG image slot holds, for the report: `JPEG data`, or `unrecognised data`."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            return f"{image.format} data"
    except PIL_ERRORS:
        return "unrecognised data"


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
    except RecursionError as error:
        raise EarthvlError(f"caption file {json_file} nests its JSON too deeply to be read") from error
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
    duplicates: dict[int, str]
    """Record index -> why it repeats an earlier record (skipped)."""


@dataclass
class _ChunkResult:
    rows: dict[str, int]
    skipped: list[tuple[list[str], dict[str, Any], str]]
    shards: dict[str, list[Path]]


def _write_chunk(source: _TreeSource | _ZipSource, chunk: _Chunk) -> _ChunkResult:
    """Read, check and write one chunk: each RGB row feeds the RGB-only config, and with its extra bands the
    multispectral one of the same caption source."""
    writers = {
        config: ShardWriter(chunk.folder / DATA_DIR / config, chunk.split, features_for(CONFIGS[config].multispectral), chunk.max_bytes, chunk.part)
        for config in chunk.configs
    }
    rgb_configs = [c for c in chunk.configs if not CONFIGS[c].multispectral]
    ms_configs = [c for c in chunk.configs if CONFIGS[c].multispectral]
    json_file = layout.json_path(chunk.caption_source, chunk.split)
    skipped = []
    for index, record in enumerate(chunk.records, start=chunk.start):
        where = {"split": chunk.split, "json_file": json_file, "record": index, "file_name": _record_name(record)}
        if index in chunk.duplicates:
            skipped.append((chunk.configs, where, chunk.duplicates[index]))
            continue
        row, extra = _record_rows(source, record, multispectral=bool(ms_configs))
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


def _duplicates(records: list[Any], json_file: str, seen: dict[str, str]) -> dict[int, str]:
    """Records whose file name an earlier record of the caption source (`seen`: name -> where) already has."""
    duplicates = {}
    for index, record in enumerate(records):
        name = _record_name(record)
        if name is None:
            continue
        if name in seen:
            duplicates[index] = f"duplicate file name {name}: first in {seen[name]}"
        else:
            seen[name] = f"{json_file} record {index}"
    return duplicates


def _build_split(
    writer: _ChunkWriter,
    caption_source: str,
    split: str,
    configs: list[str],
    folder: Path,
    report: BuildReport,
    options: Mapping[str, Any],
    seen: dict[str, str],
) -> int:
    """One pass over a caption JSON feeding both its RGB-only and its multispectral config (whichever are built);
    the number of records it holds."""
    json_file = layout.json_path(caption_source, split)
    records = _load_records(writer.source, json_file)
    duplicates = _duplicates(records, json_file, seen)
    size = CHUNK_RECORDS
    chunks = [
        _Chunk(
            caption_source, split, part, start, records[start : start + size], configs, folder, options["max_bytes"],
            {index: why for index, why in duplicates.items() if start <= index < start + size},
        )
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
        name_shards(folder / DATA_DIR / config, split, shards[config])
        report.rows.setdefault(config, {})[split] = rows[config]
    return len(records)


def _nothing_usable(config: str, counts: Mapping[str, int], report: BuildReport) -> EarthvlError:
    """The error for a config that got no row: which caption files, how many records, and why they were skipped."""
    files = ", ".join(f"{json_file} ({count:,} records)" for json_file, count in counts.items())
    if not any(counts.values()):
        return EarthvlError(f"no usable record for {config}: {files} hold no records")
    reasons = list(dict.fromkeys(s["reason"] for s in report.skipped if s["config"] == config))
    examples = "; ".join(reasons[:3])
    return EarthvlError(f"no usable record for {config}: every record of {files} was skipped, e.g. {examples}")


def _build_into(
    writer: _ChunkWriter,
    folder: Path,
    configs: list[str],
    splits: list[str],
    options: Mapping[str, Any],
) -> BuildReport:
    report = BuildReport(str(writer.source.root), writer.source.kind)
    for caption_source in dict.fromkeys(CONFIGS[c].captions for c in configs):
        chosen = [c for c in configs if CONFIGS[c].captions == caption_source]
        counts, seen = {}, {}
        for split in splits:
            for config in chosen:
                (folder / DATA_DIR / config).mkdir(parents=True, exist_ok=True)
            counts[layout.json_path(caption_source, split)] = _build_split(
                writer, caption_source, split, chosen, folder, report, options, seen
            )
        for config in chosen:
            if not any(report.rows[config].values()):
                raise _nothing_usable(config, counts, report)
    report.notes["duplicate_members"] = writer.source.duplicates()
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
    if num_proc is not None and num_proc < 1:
        raise EarthvlError(f"num_proc must be at least 1, got {num_proc}")
    check_output(out, "ChatEarthNet")  # before any download
    groups = ["rgb", *(EXTRA_GROUPS if any(CONFIGS[c].multispectral for c in config_list) else ())]
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


__all__ = [
    "CONFIGS",
    "DEFAULT_CONFIG",
    "build_chatearthnet",
    "dataset_card",
    "features_for",
    "open_source",
]
