"""Loading one split of a dataset, from the Hub or from a local Hub-style folder (a built earthvl dataset), and
the column that names its rows.

`load_dataset(<folder>, config)` in datasets 5.2 caches a local folder under its name and config alone: a second
folder with the same name (a rebuild elsewhere, another sample world) is silently served the first one's rows. A
local folder is therefore read through the `parquet` builder with its files listed, which datasets caches by
path and modification time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from datasets import Dataset, load_dataset, load_dataset_builder
from huggingface_hub import DatasetCard

from earthvl.dataset_folder import BUILD_MARKER, CARD_FILE, DATA_DIR, REPORT_FILE
from earthvl.errors import EarthvlError

logger = logging.getLogger(__name__)

KEY_COLUMNS = ("id", "file_name")
"""The column that names a row stably (to seed its training choices, to report a failed eval row), else the row
number."""


def first_column(dataset: Dataset, candidates: Sequence[str]) -> str | None:
    """The first of `candidates` that is a column of `dataset`."""
    return next((name for name in candidates if name in dataset.column_names), None)


def folder_configs(folder: Path) -> list[dict]:
    """The `configs` of a Hub-style folder's card, or an error naming what is wrong with the card."""
    try:
        configs = DatasetCard.load(folder / CARD_FILE).data.to_dict().get("configs") or []
    except Exception as error:  # the card parser raises plain ValueErrors and YAML errors alike
        raise EarthvlError(f"{folder / CARD_FILE} is not a valid dataset card: {error}") from error
    if not configs:
        raise EarthvlError(f"{folder / CARD_FILE} lists no configs in its YAML front matter")
    return configs


def _local_files(folder: Path, config: str | None, split: str) -> list[str]:
    """The Parquet files of `config`'s `split`, from the `configs` of the folder's card."""
    configs = folder_configs(folder)
    names = [entry["config_name"] for entry in configs]
    if config is None:
        chosen = next((entry for entry in configs if entry.get("default")), configs[0] if len(configs) == 1 else None)
        if chosen is None:
            raise EarthvlError(f"{folder} has several configs ({', '.join(names)}) and no default: name one")
    else:
        chosen = next((entry for entry in configs if entry["config_name"] == config), None)
        if chosen is None:
            raise EarthvlError(f"{folder} has no config {config!r}; its configs are {', '.join(names)}")
    patterns = {entry["split"]: entry["path"] for entry in chosen["data_files"]}
    if split not in patterns:
        raise EarthvlError(f"config {chosen['config_name']!r} of {folder} has no split {split!r}; it has {', '.join(patterns)}")
    pattern = patterns[split]
    files = sorted(str(path) for p in ([pattern] if isinstance(pattern, str) else pattern) for path in folder.glob(p))
    if not files:
        raise EarthvlError(f"no files match {pattern} in {folder} (config {chosen['config_name']!r}, split {split!r})")
    return files


def load_split(source: str, config: str | None, split: str, revision: str | None = None) -> Dataset:
    """`split` of `config` of a Hub dataset id (at `revision`: a branch, tag or commit) or a local Hub-style folder
    (with a card listing its configs)."""
    folder = Path(source)
    try:
        if is_built_folder(folder):
            return load_dataset("parquet", data_files={split: _local_files(folder, config, split)}, split=split)
        return load_dataset(source, config, split=split, revision=revision)
    except (OSError, ValueError) as error:  # a missing file, a bad config, no network (ConnectionError)
        raise EarthvlError(f"cannot load split {split!r} of {source}{f':{config}' if config else ''}: {error}") from error


def is_built_folder(source: str | Path) -> bool:
    """Whether `source` is a local Hub-style dataset folder (a card listing its configs), as `load_split` reads it."""
    return Path(source).is_dir() and (Path(source) / CARD_FILE).is_file()


def data_version(source: str, config: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """Which data `source` is, for a training run's record: a Hub dataset's commit (`revision`, the sha `datasets`
    resolves `revision` to), or for a local folder a `fingerprint` (sha256 of its card, build report, build marker
    and the names and sizes of its data files) and the earthvl version that built it."""
    folder = Path(source)
    if not is_built_folder(folder):
        try:
            return {"revision": load_dataset_builder(source, config, revision=revision).hash}
        except Exception as error:  # offline without a cached copy, gated: the run itself loaded it, so say why
            logger.warning("the commit of %s is not recorded: %s", source, error)
            return {"revision": None}
    digest = hashlib.sha256()
    for name in (CARD_FILE, REPORT_FILE, BUILD_MARKER):
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    for path in sorted((folder / DATA_DIR).rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
    try:
        built_by = json.loads((folder / BUILD_MARKER).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        built_by = None
    return {"fingerprint": digest.hexdigest(), "built_by": f"earthvl {built_by}" if built_by else None}
