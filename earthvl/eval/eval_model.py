"""Loading any checkpoint of the three families for evaluation: CLIP, BLIP-2 and LLaVA, full models or PEFT adapters
(earthvl's training outputs), from the Hub, a folder or a tiny model name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from transformers import AutoConfig, ProcessorMixin

from earthvl.errors import EarthvlError
from earthvl.model_names import resolve_model
from earthvl.models.families import CLIP, FAMILIES, VLM, Family, family_of_model_type
from earthvl.training_output import ADAPTER_CONFIG_FILE, adapter_base

logger = logging.getLogger(__name__)


@dataclass
class EvalModel:
    """A model ready for inference, with what a results file records about it."""

    model: torch.nn.Module
    processor: ProcessorMixin
    family: str
    name: str
    revision: str | None
    base_model: str | None
    folder: Path | None
    """The local folder the weights came from (an adapter's own folder for adapters)."""

    def describe(self) -> dict[str, Any]:
        return {"id": self.name, "revision": self.revision, "family": self.family, "base_model": self.base_model}


def _config(path_or_id: str, revision: str | None) -> Any:
    try:
        return AutoConfig.from_pretrained(path_or_id, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise EarthvlError(f"cannot read the model config of {path_or_id}: {error}") from error


def family_of(config: Any, name: str) -> Family:
    """earthvl's family of a transformers config, or an error naming what is supported."""
    family = family_of_model_type(getattr(config, "model_type", None))
    if family is None:
        displays = ", ".join(known.display for known in FAMILIES.values())
        model_types = ", ".join(model_type for known in FAMILIES.values() for model_type in known.model_types)
        raise EarthvlError(
            f"{name} is a {getattr(config, 'model_type', 'unknown')!r} model; earthvl evaluates {displays} "
            f"checkpoints (transformers model types {model_types}) and their PEFT adapters"
        )
    return family


def _adapter_folder(name: str, revision: str | None) -> Path | None:
    """The local folder of `name` (a path or Hub id) if it is a PEFT adapter (downloading a Hub adapter repo), else
    None."""
    path = Path(name)
    if path.is_dir():
        return path if (path / ADAPTER_CONFIG_FILE).is_file() else None
    try:
        folder = Path(snapshot_download(name, revision=revision, allow_patterns=[ADAPTER_CONFIG_FILE]))
    except Exception as error:  # offline, unknown repo, gated: from_pretrained will say it better
        logger.debug("no adapter config for %s: %s", name, error)
        return None
    if not (folder / ADAPTER_CONFIG_FILE).is_file():
        return None
    return Path(snapshot_download(name, revision=revision))


def load_eval_model(
    name: str,
    *,
    task: str,
    revision: str | None = None,
    base_model: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
) -> EvalModel:
    """The model `name` (Hub id, folder, tiny model name, or a PEFT adapter of one of those) in eval mode on
    `device`, checked to be able to do `task`. An adapter is loaded on `base_model` or the base its
    `adapter_config.json` names, with the side files earthvl saved beside it (processor, `vision.json`,
    generation settings)."""
    path = resolve_model(name)
    adapter = _adapter_folder(path, revision)
    base = (base_model or adapter_base(adapter)) if adapter is not None else None
    base_path = resolve_model(base) if base is not None else None
    config = _config(base_path if base_path is not None else path, None if adapter is not None else revision)
    family = family_of(config, base or name)
    if task not in family.tasks:
        raise EarthvlError(f"{name} is a {family.name} model: it can {' or '.join(family.tasks)}, not {task}")
    if dtype is None:
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    options: dict[str, Any] = dict(dtype=dtype, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
    quantised = load_in_4bit or load_in_8bit
    if quantised:
        options["device_map"] = {"": str(device)}
    if adapter is not None and family.load_adapter is None:
        raise EarthvlError(f"{name} is a PEFT adapter on {family.display}; earthvl's {family.display} training saves full models")
    if family is CLIP and quantised:
        raise EarthvlError("CLIP models are evaluated unquantised (they are small): drop --load_in_4bit/8bit")
    if adapter is not None:
        model, processor = family.load_adapter(adapter, base=base_path, **options)
    else:
        model, processor = family.load(path, revision=revision, **options)
    if family is VLM:
        _check_rgb(model, name)
    if not quantised:
        model = model.to(device)
    model.eval()
    local = Path(path)
    return EvalModel(
        model=model,
        processor=processor,
        family=family.name,
        name=name,
        revision=revision or _commit_hash(model, adapter),
        base_model=base,
        folder=adapter if adapter is not None else local if local.is_dir() else None,
    )


def _commit_hash(model: torch.nn.Module, adapter: Path | None) -> str | None:
    """The Hub commit the weights were downloaded at (None for local folders)."""
    if adapter is not None:
        return adapter.name if adapter.parent.name == "snapshots" else None
    return getattr(model.config, "_commit_hash", None)


def _check_rgb(model: torch.nn.Module, name: str) -> None:
    channels = getattr(model.config.vision_config, "num_channels", 3)
    if channels != 3:
        raise EarthvlError(
            f"{name} reads {channels}-band images; earthvl eval feeds RGB image columns. Evaluate multispectral "
            "models through earthvl.models.vlm with the band columns of a multispectral config"
        )

