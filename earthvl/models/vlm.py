"""LLaVA-style vision-language models for instruction tuning: loading (optionally in 4-bit), and where LoRA goes.

QLoRA layout: the language model's linear layers are NF4 with double quantisation and bf16 compute; the vision
tower, the projector and `lm_head` stay unquantised, and LoRA adapts only the language model's linear layers
(the projector is trained in full on request).

Chat template for training: every assistant answer's labels end with the token generation stops at (`</s>` for
LLaVA-1.5), whatever template the checkpoint ships. `training_chat_template` renders a two-turn conversation with
the assistant mask TRL trains on: the checkpoint's own template is kept when each answer is marked together with
that end of turn (it is then the checkpoint's training format, e.g. an earthvl-trained model's); otherwise earthvl's
LLaVA-1.5 template replaces it (llava-hf's marks the answer plus a space and no `</s>`, so a model trained with it
never learns to stop). A template the user names is checked the same way and refused if it cannot end turns. The
processor saved with the adapter carries the template used, so generation sees the prompt format it was trained on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from peft import LoraConfig, PeftModel
from transformers import AutoProcessor, LlavaForConditionalGeneration, ProcessorMixin

from earthvl.errors import EarthvlError
from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE, turn_end_problem
from earthvl.models.loading import (
    check_safetensors,
    load_pretrained,
    lora_targets,
    save_merged,
    stop_token_ids,
)
from earthvl.models.vision import interpolate_position_embeddings, vision_embeddings, widen_patch_embedding
from earthvl.training_output import VISION_FILE, adapter_base, read_side_file

logger = logging.getLogger(__name__)

UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
"""Full module paths: in transformers 5 short names silently match nothing and the vision tower gets quantised."""
LLM_LINEAR_LAYERS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA targets: every linear layer of the language model and nothing in the vision tower or projector
(`"all-linear"` would adapt those too)."""
PROJECTOR = "multi_modal_projector"
PATCH_EMBEDDING = "patch_embedding"


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


def read_chat_template(path: str | Path) -> str:
    """A chat template file: Jinja text, or a `chat_template.json` (`{"chat_template": ...}`) as processors save it."""
    path = Path(path)
    if not path.is_file():
        raise EarthvlError(f"chat template {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)["chat_template"]
        except (ValueError, KeyError, TypeError) as error:
            raise EarthvlError(f"chat template {path}: a .json file must hold {{\"chat_template\": ...}} ({error})") from error
    return text


def training_chat_template(
    model: LlavaForConditionalGeneration, processor: ProcessorMixin, template_file: str | Path | None = None
) -> str:
    """The chat template to train `model` with (the policy is in the module docstring): the one in `template_file`
    if it ends turns (else an error naming the file), the processor's own if it does, else earthvl's LLaVA-1.5
    template."""
    stops = stop_token_ids(model, processor.tokenizer)
    if template_file is not None:
        template = read_chat_template(template_file)
        problem = turn_end_problem(processor, template, stops)
        if problem:
            raise EarthvlError(f"chat template {template_file} cannot teach the model to stop: {problem}")
        return template
    shipped = getattr(processor, "chat_template", None)
    if isinstance(shipped, str):
        problem = turn_end_problem(processor, shipped, stops)
        if problem is None:
            return shipped
        logger.info("the checkpoint's chat template is not used for training (%s): earthvl's LLaVA-1.5 template is", problem)
    problem = turn_end_problem(processor, LLAVA_CHAT_TEMPLATE, stops)
    if problem:
        raise EarthvlError(f"earthvl's LLaVA-1.5 chat template cannot teach this model to stop ({problem}): give one with --chat_template")
    return LLAVA_CHAT_TEMPLATE


def use_chat_template(processor: ProcessorMixin, template: str) -> None:
    """Make `template` the processor's (and its tokenizer's) chat template, so that both save it."""
    processor.chat_template = template
    processor.tokenizer.chat_template = template


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
    vision = read_side_file(adapter, VISION_FILE)
    if vision:
        apply_vision(model, None, vision)
    return PeftModel.from_pretrained(model, str(adapter)), processor


def merge_adapter(
    base: str, adapter: str | Path, out: str | Path, *, dtype: torch.dtype | str = torch.bfloat16
) -> Path:
    """Fold a LoRA adapter into an unquantised copy of `base` and save it, with the adapter's processor, as a plain
    transformers model in `out` (safetensors) that `LlavaForConditionalGeneration.from_pretrained` loads; a widened
    or resized vision tower is saved as such."""
    return save_merged(*load_adapter(adapter, base=base, dtype=dtype), out)
