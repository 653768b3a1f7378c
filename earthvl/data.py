"""Loading one split of a dataset, from the Hub or from a local Hub-style folder (a built earthvl dataset), and
the column that names its rows.

`load_dataset(<folder>, config)` in datasets 5.2 caches a local folder under its name and config alone: a second
folder with the same name (a rebuild elsewhere, another sample world) is silently served the first one's rows. A
local folder is therefore read through the `parquet` builder with its files listed, which datasets caches by
path and modification time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard

from earthvl.dataset_folder import CARD_FILE
from earthvl.errors import EarthvlError

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
        if folder.is_dir() and (folder / CARD_FILE).is_file():
            return load_dataset("parquet", data_files={split: _local_files(folder, config, split)}, split=split)
        return load_dataset(source, config, split=split, revision=revision)
    except (OSError, ValueError) as error:  # a missing file, a bad config, no network (ConnectionError)
        raise EarthvlError(f"cannot load split {split!r} of {source}{f':{config}' if config else ''}: {error}") from error
