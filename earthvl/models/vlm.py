"""LLaVA-style vision-language models for instruction tuning: loading (optionally in 4-bit), and where LoRA goes.

QLoRA layout: the language model's linear layers are NF4 with double quantisation and bf16 compute; the vision
tower, the projector and `lm_head` stay unquantised, and LoRA adapts only the language model's linear layers
(the projector is trained in full on request).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from peft import LoraConfig, PeftModel
from transformers import AutoProcessor, LlavaForConditionalGeneration, ProcessorMixin

from earthvl.errors import EarthvlError
from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE
from earthvl.models.loading import adapter_base, check_safetensors, load_pretrained, lora_targets, save_merged
from earthvl.models.vision import interpolate_position_embeddings, vision_embeddings, widen_patch_embedding

UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
"""Full module paths: in transformers 5 short names silently match nothing and the vision tower gets quantised."""
LLM_LINEAR_LAYERS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA targets: every linear layer of the language model and nothing in the vision tower or projector
(`"all-linear"` would adapt those too)."""
PROJECTOR = "multi_modal_projector"
PATCH_EMBEDDING = "patch_embedding"
VISION_FILE = "vision.json"
"""Beside an adapter: how the base's vision tower was changed before training (`apply_vision`'s argument)."""


def load_vlm(name_or_path: str, **kwargs: Any) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    """A LLaVA checkpoint (Hub id, local folder or a tiny model name) and its processor.

    With `load_in_4bit` (or `load_in_8bit`) the language model is quantised and the vision side and `lm_head` are
    not (`UNQUANTIZED_MODULES`); the keyword arguments are `earthvl.models.loading.load_pretrained`'s. A processor
    without a chat template gets earthvl's LLaVA-1.5 training template, which ends assistant turns with `</s>` and
    marks them for assistant-only loss."""
    model, processor = load_pretrained(LlavaForConditionalGeneration, name_or_path, skip_modules=UNQUANTIZED_MODULES, **kwargs)
    if not getattr(processor, "chat_template", None):
        processor.chat_template = LLAVA_CHAT_TEMPLATE
    return model, processor


def apply_vision(model: LlavaForConditionalGeneration, processor: ProcessorMixin | None, vision: dict[str, Any]) -> None:
    """Change the vision tower (and processor) in place as `vision` says, before LoRA wraps the model.

    Keys, all optional: `image_size` (interpolated position embeddings, GeoChat-style), `num_channels` (a patch
    embedding widened from RGB, extra channels zero), `band_mean` / `band_std` (per-band normalisation, kept in the
    vision config so that a saved model carries them)."""
    unknown = set(vision) - {"image_size", "num_channels", "band_mean", "band_std"}
    if unknown:
        raise EarthvlError(f"unknown vision settings {sorted(unknown)}")
    if vision.get("image_size"):
        interpolate_position_embeddings(model, int(vision["image_size"]), processor)
    if vision.get("num_channels") and vision["num_channels"] != vision_embeddings(model).patch_embedding.in_channels:
        widen_patch_embedding(model, int(vision["num_channels"]))
    for key in ("band_mean", "band_std"):
        if vision.get(key) is not None:
            setattr(model.config.vision_config, key, list(vision[key]))


def lora_config(
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: str | list[str] | None = None,
    train_projector: bool = False,
    train_patch_embedding: bool = False,
    modules_to_save: list[str] | None = None,
    **kwargs: Any,
) -> LoraConfig:
    """LoRA on the language model's linear layers (or `target_modules`); the projector and the (widened) patch
    embedding trained in full if asked, and saved with the adapter, as are `modules_to_save`. Other keyword
    arguments (`use_rslora`, `use_dora`, `target_parameters`, ...) go to `peft.LoraConfig`."""
    saved = [PROJECTOR] * train_projector + [PATCH_EMBEDDING] * train_patch_embedding + list(modules_to_save or [])
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(target_modules, LLM_LINEAR_LAYERS),
        modules_to_save=saved or None,
        task_type=kwargs.pop("task_type", "CAUSAL_LM"),
        **kwargs,
    )


def load_adapter(
    adapter: str | Path, *, base: str | None = None, dtype: torch.dtype | str = torch.bfloat16, **kwargs: Any
) -> tuple[PeftModel, ProcessorMixin]:
    """A trained adapter on its (unquantised) base, with the vision changes of its `vision.json` applied first, and
    the processor saved beside it. `base` defaults to the adapter's `base_model_name_or_path`."""
    adapter = Path(adapter)
    check_safetensors(adapter, "adapter_model")
    model, _ = load_vlm(base or adapter_base(adapter), dtype=dtype, **kwargs)
    processor = AutoProcessor.from_pretrained(str(adapter))
    if (adapter / VISION_FILE).is_file():
        apply_vision(model, None, json.loads((adapter / VISION_FILE).read_text()))
    return PeftModel.from_pretrained(model, str(adapter)), processor


def merge_adapter(
    base: str, adapter: str | Path, out: str | Path, *, dtype: torch.dtype | str = torch.bfloat16
) -> Path:
    """Fold a LoRA adapter into an unquantised copy of `base` and save it, with the adapter's processor, as a plain
    transformers model in `out` (safetensors) that `LlavaForConditionalGeneration.from_pretrained` loads; a widened
    or resized vision tower is saved as such."""
    return save_merged(*load_adapter(adapter, base=base, dtype=dtype), out)
