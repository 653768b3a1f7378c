"""What an `earthvl train` run leaves in its output folder, named once: the file names, the writer the trainers'
`save_outputs` uses and the reader of the model card, the eval loader and the adapter loaders.

A run's folder holds the model (`config.json` and weights) or PEFT adapter (`adapter_config.json` and
`adapter_model.safetensors`), the processor, `generation_config.json`, transformers' `trainer_state.json` (whose log
holds the training time and throughput), `training_args.json`, earthvl's settings files (`vision.json`,
`captioning.json`, `text_fit.json`, `memory_budget.json`), `skipped_images.json` when rows were skipped, `run.json`
(what was trained on and where: datasets with their revisions and row counts, base model, device, wall time) and,
with `--merge_adapter`, the merged model in `merged/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earthvl.atomic import write_bytes
from earthvl.errors import EarthvlError

CONFIG_FILE = "config.json"
"""transformers: a full model's config (its `model_type` names the family)."""
ADAPTER_CONFIG_FILE = "adapter_config.json"
"""PEFT: an adapter's config (its `base_model_name_or_path` names the base)."""
GENERATION_CONFIG_FILE = "generation_config.json"
TRAINING_ARGS_FILE = "training_args.json"
"""Every `TrainingArguments` field, as JSON (the pickled `training_args.bin` of transformers is not kept)."""
TRAINER_STATE_FILE = "trainer_state.json"
"""transformers' `Trainer.save_state()` file: the log history and step count."""
TRAIN_RESULTS_FILE = "train_results.json"
"""transformers' `save_metrics("train", ...)` file, read when a folder has it."""
VISION_FILE = "vision.json"
"""Beside an adapter: how the base's vision tower was changed before training (`models.vlm.apply_vision`'s argument)."""
CAPTIONING_FILE = "captioning.json"
"""Beside a BLIP-2 adapter: the prompt the captions were trained after, for generation to use."""
TEXT_FIT_FILE = "text_fit.json"
"""CLIP: per dataset, how its captions fit the text tower (measured before training)."""
MEMORY_BUDGET_FILE = "memory_budget.json"
"""VLM with `--memory_budget_gb`: the micro-batch chosen, kept by a resumed run."""
SKIPPED_IMAGES_FILE = "skipped_images.json"
"""The training rows skipped for images that failed to decode."""
RUN_FILE = "run.json"
"""earthvl's record of the run: datasets (revision, row counts), base model, device and wall time."""
MERGED_DIR = "merged"
"""`--merge_adapter`: the adapter folded into its base, a plain transformers model."""

SIDE_FILES = (
    TRAINING_ARGS_FILE, ADAPTER_CONFIG_FILE, CONFIG_FILE, GENERATION_CONFIG_FILE, CAPTIONING_FILE, VISION_FILE, TEXT_FIT_FILE, SKIPPED_IMAGES_FILE,
    TRAIN_RESULTS_FILE, RUN_FILE,
)  # fmt: skip
"""The JSON files of an output folder that `read_training_output` reads."""
MERGED_FILES = (CONFIG_FILE, GENERATION_CONFIG_FILE)
"""What `merged/` overrides of them."""


def read_json(path: Path) -> Any:
    """A JSON file, or an error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EarthvlError(f"{path} is not readable JSON: {error}") from error


def read_side_file(folder: str | Path | None, name: str) -> dict[str, Any]:
    """One JSON side file of a model folder (e.g. `captioning.json`), {} when the folder or the file is absent."""
    if folder is None or not (Path(folder) / name).is_file():
        return {}
    return read_json(Path(folder) / name)


def write_side_file(folder: str | Path, name: str, value: Any) -> Path:
    """Write one JSON side file into an output folder (atomically)."""
    return write_bytes(Path(folder) / name, (json.dumps(value, indent=2) + "\n").encode("utf-8"))


def adapter_base(adapter: str | Path) -> str:
    """The base checkpoint a PEFT adapter folder was trained on (its `base_model_name_or_path`)."""
    if not (Path(adapter) / ADAPTER_CONFIG_FILE).is_file():
        raise EarthvlError(f"{adapter} is not a PEFT adapter folder: it has no {ADAPTER_CONFIG_FILE}")
    base = read_json(Path(adapter) / ADAPTER_CONFIG_FILE).get("base_model_name_or_path")
    if not base:
        raise EarthvlError(f"{Path(adapter) / ADAPTER_CONFIG_FILE} names no base_model_name_or_path")
    return base


def newest_state(folder: Path) -> dict[str, Any] | None:
    """`trainer_state.json` of the folder, else of its newest checkpoint, else None."""
    if (folder / TRAINER_STATE_FILE).is_file():
        return read_json(folder / TRAINER_STATE_FILE)
    steps = {p.parent.name.removeprefix("checkpoint-"): p for p in folder.glob(f"checkpoint-*/{TRAINER_STATE_FILE}")}
    numbered = {int(step): p for step, p in steps.items() if step.isdigit()}
    return read_json(numbered[max(numbered)]) if numbered else None


@dataclass
class TrainingOutput:
    """What a training output folder holds, read back."""

    path: Path
    files: dict[str, Any]
    """The JSON side files (`SIDE_FILES`) present, by name."""
    state: dict[str, Any] | None
    """`trainer_state.json` of the folder, else of its newest checkpoint."""
    merged: bool = False
    """Whether `files` describe `merged/` (its config and generation settings) rather than the adapter."""

    @property
    def adapter(self) -> bool:
        return ADAPTER_CONFIG_FILE in self.files and not self.merged

    @property
    def run(self) -> dict[str, Any]:
        """`run.json` ({} for folders written before it was recorded)."""
        return self.files.get(RUN_FILE) or {}

    @property
    def base_model(self) -> str | None:
        """The base an adapter names (None for a full model: its run's base is in `run`)."""
        return (self.files.get(ADAPTER_CONFIG_FILE) or {}).get("base_model_name_or_path")


def read_training_output(folder: str | Path, *, merged: bool = False) -> TrainingOutput:
    """A trained model folder (full model or PEFT adapter), with `merged/` as the model when `merged`; an error
    naming what is missing otherwise."""
    path = Path(folder)
    if not (path / CONFIG_FILE).is_file() and not (path / ADAPTER_CONFIG_FILE).is_file():
        raise EarthvlError(f"{path} is not a trained model folder: it has no {CONFIG_FILE} or {ADAPTER_CONFIG_FILE}")
    files = {name: read_json(path / name) for name in SIDE_FILES if (path / name).is_file()}
    if merged:
        model = path / MERGED_DIR
        if not (model / CONFIG_FILE).is_file():
            raise EarthvlError(f"{path} has no merged model ({MERGED_DIR}/{CONFIG_FILE}): train with --merge_adapter")
        files.update({name: read_json(model / name) for name in MERGED_FILES if (model / name).is_file()})
    return TrainingOutput(path=path, files=files, state=newest_state(path), merged=merged)
