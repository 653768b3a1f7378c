"""A trained model folder as a card sees it: the training output (`earthvl.training_output`) with its family."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from earthvl.cards.families import FAMILIES, MODEL_TYPES
from earthvl.training_output import ADAPTER_CONFIG_FILE, CONFIG_FILE, read_training_output


@dataclass
class ModelFolder:
    """What a trained model folder says about the model (the parts a card shows)."""

    path: Path
    family: str | None
    adapter: bool
    base_model: str | None
    """The base an adapter names."""
    files: dict[str, Any]
    """The JSON side files (training_args.json, adapter_config.json, captioning.json, ...) by name."""
    state: dict[str, Any] | None
    """`trainer_state.json` of the folder, else of its newest checkpoint."""
    run: dict[str, Any]
    """`run.json`: the datasets (revisions, rows), the base model, device and wall time ({} in older folders)."""


def _family(files: Mapping[str, Any]) -> str | None:
    model_type = (files.get(CONFIG_FILE) or {}).get("model_type")
    if model_type:
        return MODEL_TYPES.get(model_type)
    base_class = ((files.get(ADAPTER_CONFIG_FILE) or {}).get("auto_mapping") or {}).get("base_model_class")
    return next((family for family, spec in FAMILIES.items() if spec.model_class == base_class), None)


def read_model_folder(folder: str | Path, *, merged: bool = False) -> ModelFolder:
    """A trained model folder (full model or PEFT adapter, see `earthvl.training_output`), with `merged/` as the
    model when `merged`; an error naming what is missing otherwise."""
    output = read_training_output(folder, merged=merged)
    return ModelFolder(
        path=output.path,
        family=_family(output.files),
        adapter=output.adapter,
        base_model=output.base_model,
        files=output.files,
        state=output.state,
        run=output.run,
    )
