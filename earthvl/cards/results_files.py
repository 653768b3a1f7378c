"""The `earthvl eval` results files a card shows: read and checked together (one model, no task on one dataset split
twice), and copied beside the card under `eval/`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from earthvl.atomic import write_bytes
from earthvl.errors import EarthvlError
from earthvl.eval_results import check_results, read_results
from earthvl.models.families import FAMILIES

EVAL_DIR = "eval"
"""Folder of the results files, beside the card (in the model folder and in the Hub repo)."""


@dataclass
class Results:
    """One results file: its name under `eval/`, its checked content and, if it was read from a file, that file."""

    name: str
    data: dict[str, Any]
    path: Path | None = None

    def content(self) -> bytes:
        """The file's bytes as written by `earthvl eval` (JSON for a results dict)."""
        if self.path is not None:
            return self.path.read_bytes()
        return (json.dumps(self.data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _results_name(data: Mapping[str, Any]) -> str:
    dataset = data["dataset"]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(dataset.get("name") or Path(dataset["id"]).name)).strip("-")
    return f"{data['task']}-{slug}-{dataset['split']}.json"


def load_results(results: Sequence[str | Path | Mapping[str, Any]]) -> list[Results]:
    """Read (or check) each results file; an error if they are of different models or two give the same task on the
    same dataset split, or if two files would get one name under `eval/`."""
    loaded: list[Results] = []
    for item in results:
        if isinstance(item, Mapping):
            data = check_results(dict(item))
            loaded.append(Results(_results_name(data), data))
        else:
            loaded.append(Results(Path(item).name, read_results(item), Path(item)))
        family = loaded[-1].data["model"]["family"]
        if family not in FAMILIES:
            raise EarthvlError(f"{loaded[-1].name}: model.family {family!r} is not one of {', '.join(FAMILIES)}")
    models: dict[str, str] = {}
    for r in loaded:
        models.setdefault(r.data["model"]["id"], r.name)
    if len(models) > 1:
        named = ", ".join(f"{model!r} in {name}" for model, name in models.items())
        raise EarthvlError(f"the results are of different models ({named}): one card describes one model")
    seen: dict[Any, str] = {}
    for r in loaded:
        dataset = r.data["dataset"]
        key = (r.data["task"], dataset["id"], dataset.get("config"), dataset["split"], dataset.get("revision"))
        for clash, what in ((key, "task on the same dataset split"), (r.name, "file name")):
            if clash in seen:
                raise EarthvlError(f"results {seen[clash]} and {r.name} have the same {what}: give one of them")
            seen[clash] = r.name
    return loaded


def copy_results(loaded: Sequence[Results], eval_dir: Path) -> None:
    """Write the results files into `eval_dir`; an error if it already holds other results (the card would not
    show them, yet `earthvl publish` would push them)."""
    others = sorted(p.name for p in eval_dir.glob("*.json") if p.name not in {r.name for r in loaded})
    if others:
        raise EarthvlError(
            f"{eval_dir} holds results this card does not show: {', '.join(others)}; remove them or add them "
            "with --results"
        )
    for r in loaded:
        write_bytes(eval_dir / r.name, r.content())
