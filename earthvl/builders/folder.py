"""What every builder shares: Parquet shard writing, the build report, atomic output into the folder layout that
`earthvl.dataset_folder` names."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image

from earthvl import __version__
from earthvl.atomic import check_writable, refuse_symlink, staged_dir
from earthvl.dataset_folder import BUILD_MARKER, DATA_DIR, REPORT_FILE
from earthvl.errors import EarthvlError

MAX_SHARD_BYTES = 500 * 2**20
ROW_GROUP_ROWS = 100
"""Small row groups keep image datasets cheap to stream (the Hub's own advice for image Parquet)."""


class Skip(Exception):
    """A record that cannot become a row; its message is the reason written to the report."""


class ShardWriter:
    """Streams the rows of one config split into `<split>-XXXXX-of-YYYYY.parquet` shards of at most `max_bytes`.

    `close` names the shards. Writers of consecutive parts of one split (e.g. in several processes) give each a
    distinct `part`, `finish` them, and name all their shards at once with `name_shards`."""

    def __init__(
        self, folder: Path, split: str, features: Features, max_bytes: int = MAX_SHARD_BYTES, part: int = 0
    ) -> None:
        self.folder, self.split, self.features, self.max_bytes, self.part = folder, split, features, max_bytes, part
        self.schema = features.arrow_schema  # carries the Features under metadata key b"huggingface"
        self.image_columns = [name for name, feature in features.items() if isinstance(feature, Image)]
        self.rows = 0
        # Encoded images are incompressible and unique: compressing them or trying dictionaries only costs time.
        image_bytes = {f"{column}.bytes" for column in self.image_columns}
        self._compression = {
            name: "none" if name in image_bytes else "snappy" for name in _leaf_columns(self.schema)
        }
        self._paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[dict[str, Any]] = []
        self._shard_bytes = 0
        folder.mkdir(parents=True, exist_ok=True)

    def _row_bytes(self, row: Mapping[str, Any]) -> int:
        return 256 + sum(len(row[column]["bytes"]) for column in self.image_columns)

    def write(self, row: dict[str, Any]) -> None:
        size = self._row_bytes(row)
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
        path = self.folder / f"{self.split}-{self.part:05d}-{len(self._paths):05d}.partial"
        self._paths.append(path)
        self._writer = pq.ParquetWriter(
            path,
            self.schema,
            compression=self._compression,
            use_dictionary=[name for name, codec in self._compression.items() if codec != "none"],
        )
        self._shard_bytes = 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def finish(self) -> list[Path]:
        """Close the last shard; the unnamed shards written (none if no row came)."""
        self._close_shard()
        return list(self._paths)

    def close(self) -> list[Path]:
        """Finish and name the shards."""
        return name_shards(self.folder, self.split, self.finish())


def name_shards(folder: Path, split: str, partials: list[Path]) -> list[Path]:
    """Rename a split's unnamed shards, in order, to `<split>-XXXXX-of-YYYYY.parquet`. A split without rows has
    none and gets none: `datasets` cannot load a Parquet file without rows, so the split is left out (see
    `BuildReport.empty_splits`)."""
    total = len(partials)
    final = [folder / f"{split}-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
    for partial, path in zip(partials, final):
        partial.rename(path)
    return final


def _leaf_columns(schema: pa.Schema) -> list[str]:
    """Dotted paths of the Parquet leaf columns of `schema`, as Parquet names them (`captions.list.element`)."""

    def leaves(name: str, kind: pa.DataType) -> list[str]:
        if pa.types.is_struct(kind):
            return [leaf for child in kind for leaf in leaves(f"{name}.{child.name}", child.type)]
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return leaves(f"{name}.list.element", kind.value_type)
        return [name]

    return [leaf for field in schema for leaf in leaves(field.name, field.type)]


@dataclass
class BuildReport:
    """Rows per config and split, and every skipped record with where it came from and why."""

    source: str
    source_kind: str
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def skip(self, configs: Iterable[str], where: Mapping[str, Any], reason: str) -> None:
        """Record a skipped record once per config it was meant for; `where` names split, file, index, id."""
        self.skipped.extend({"config": config, **where, "reason": reason} for config in configs)

    def empty_splits(self) -> dict[str, list[str]]:
        """config -> its splits without rows, which are not written (for the configs that have any)."""
        empty = {config: [split for split, rows in splits.items() if not rows] for config, splits in self.rows.items()}
        return {config: splits for config, splits in empty.items() if splits}

    def as_dict(self) -> dict[str, Any]:
        report = {"source": self.source, "source_kind": self.source_kind, "rows": self.rows, "skipped": self.skipped}
        return {**report, "empty_splits": self.empty_splits(), **self.notes}

    def save(self, folder: Path) -> None:
        """Write `build_report.json` as strict JSON: NaN and infinities (which JSON lacks) become null."""
        (folder / REPORT_FILE).write_text(json.dumps(_finite(self.as_dict()), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def choose(kind: str, wanted: str | Iterable[str] | None, known: Iterable[str]) -> list[str]:
    """The `known` names picked by `wanted` (all when None), in `known` order; unknown names are an error."""
    known = list(known)
    if wanted is None:
        return known
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        raise EarthvlError(f"unknown or no {kind} {unknown or wanted}: choose from {', '.join(known)}")
    return [k for k in known if k in wanted]


def card_configs(configs: Iterable[str], rows: Mapping[str, Mapping[str, int]], default: str) -> list[dict[str, Any]]:
    """The YAML `configs` entries that point each config's splits with rows (`rows`: config -> split -> rows) at
    its shards."""
    configs = list(configs)
    default = default if default in configs else configs[0]
    entries = []
    for config in configs:
        splits = [split for split, count in rows[config].items() if count]
        entry: dict[str, Any] = {
            "config_name": config,
            "data_files": [{"split": split, "path": f"{DATA_DIR}/{config}/{split}-*.parquet"} for split in splits],
        }
        if config == default:
            entry["default"] = True
        entries.append(entry)
    return entries


def _paths(folder: Path) -> list[str]:
    """Every folder, file and link under `folder`, relative, in POSIX form (links are not followed)."""
    paths = []
    for parent, folders, files in os.walk(folder):
        relative = Path(parent).relative_to(folder)
        paths += [(relative / name).as_posix() for name in folders + files]
    return sorted(paths)


def check_output(out: str | Path, dataset: str) -> Path:
    """`out` if a `dataset` build may go there: a new path, an empty folder, or an earlier `dataset` build by earthvl
    (its `BUILD_MARKER`) that holds nothing earthvl did not write; an EarthvlError saying why not otherwise."""
    out = Path(out)
    refuse_symlink(out)
    check_writable(out, f"{dataset} build", folder=True)
    if not out.exists() or not any(out.iterdir()):
        return out
    try:
        marker = json.loads((out / BUILD_MARKER).read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("built_by") != "earthvl":
        raise EarthvlError(
            f"output {out} exists and is not an earlier {dataset} build by earthvl (no valid {BUILD_MARKER}); not "
            "replacing it: choose another --out, or empty it yourself"
        )
    if marker.get("dataset") != dataset:
        raise EarthvlError(f"output {out} is an earlier {marker.get('dataset')} build, not {dataset}; not replacing it")
    extra = sorted(set(_paths(out)) - set(marker.get("files") or ()) - {BUILD_MARKER})
    if extra:
        more = f" and {len(extra) - 3:,} more" if len(extra) > 3 else ""
        raise EarthvlError(
            f"output {out} holds files earthvl did not write ({', '.join(extra[:3])}{more}); not replacing it: move "
            "them elsewhere first"
        )
    return out


@contextmanager
def output_folder(out: str | Path, dataset: str) -> Iterator[Path]:
    """A staging folder that replaces `out` in one rename once the build succeeds, and vanishes if it fails; the
    build's `BUILD_MARKER` is written last. `check_output` says which `out` may be replaced."""
    out = check_output(out, dataset)
    with staged_dir(out, replace=True) as staging:
        yield staging
        marker = {"built_by": "earthvl", "version": __version__, "dataset": dataset, "files": _paths(staging)}
        (staging / BUILD_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def default_num_proc() -> int:
    """Worker processes a build uses by default: one per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def report_summary(dataset: str, out: str | Path, report: Mapping[str, Any]) -> str:
    """A few lines for the terminal: where the build went, rows per config and split, how many were skipped."""
    lines = [f"{dataset} built into {out} from the {report['source_kind']} at {report['source']}"]
    for config, splits in report["rows"].items():
        counts = (f"{split} {rows:,}" if rows else f"{split} 0 (not written)" for split, rows in splits.items())
        lines.append(f"  {config}: " + ", ".join(counts))
    if report["skipped"]:
        lines.append(f"  skipped {len(report['skipped']):,} records; reasons in {Path(out) / REPORT_FILE}")
    shared = sum(len(names) for names in report.get("duplicate_members", {}).values())
    if shared:
        lines.append(f"  {shared:,} file names belong to more than one zip member; listed in {Path(out) / REPORT_FILE}")
    return "\n".join(lines)
