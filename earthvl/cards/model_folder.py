"""A trained model folder as a card sees it: the training output (`earthvl.training_output`) with its family."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from earthvl.models.families import family_of_class, family_of_model_type
from earthvl.training_output import ADAPTER_CONFIG_FILE, CONFIG_FILE, TrainingOutput, read_training_output


@dataclass
class ModelFolder(TrainingOutput):
    """What a trained model folder says about the model (the parts a card shows)."""

    family: str | None = None
    """From the model's config, else from the base class the adapter names; None if neither says."""


def _family(files: Mapping[str, Any]) -> str | None:
    model_type = (files.get(CONFIG_FILE) or {}).get("model_type")
    if model_type:
        family = family_of_model_type(model_type)
    else:
        base_class = ((files.get(ADAPTER_CONFIG_FILE) or {}).get("auto_mapping") or {}).get("base_model_class")
        family = family_of_class(base_class)
    return family.name if family else None


def read_model_folder(folder: str | Path, *, merged: bool = False) -> ModelFolder:
    """A trained model folder (full model or PEFT adapter, see `earthvl.training_output`), with `merged/` as the
    model when `merged`; an error naming what is missing otherwise."""
    output = read_training_output(folder, merged=merged)
    return ModelFolder(output.path, output.files, output.state, output.merged, family=_family(output.files))
