"""LLaVA-style vision-language models for instruction tuning: loading (optionally in 4-bit), and where LoRA goes.

QLoRA layout: the language model's linear layers are NF4 with double quantisation and bf16 compute; the vision
tower, the projector and `lm_head` stay unquantised, and LoRA adapts only the language model's linear layers
(the projector is trained in full on request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from peft import LoraConfig, PeftModel
from transformers import AutoProcessor, BitsAndBytesConfig, LlavaForConditionalGeneration, ProcessorMixin

from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE
from earthvl.models.tiny import resolve_model

UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
"""Full module paths: in transformers 5 short names silently match nothing and the vision tower gets quantised."""
LLM_LINEAR_LAYERS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA targets: every linear layer of the language model and nothing in the vision tower or projector
(`"all-linear"` would adapt those too)."""
PROJECTOR = "multi_modal_projector"


def quantization_config(compute_dtype: torch.dtype = torch.bfloat16) -> BitsAndBytesConfig:
    """NF4 with double quantisation and `compute_dtype` compute, leaving the vision side and `lm_head` alone."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=UNQUANTIZED_MODULES,
    )


def load_vlm(
    name_or_path: str,
    *,
    load_in_4bit: bool = False,
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    """A LLaVA checkpoint (Hub id, local folder or a tiny model name) and its processor.

    With `load_in_4bit` the language model is quantised as in `quantization_config` (compute in `dtype`, default
    bf16). A processor without a chat template gets earthvl's LLaVA-1.5 training template, which ends assistant
    turns with `</s>` and marks them for assistant-only loss."""
    path = resolve_model(name_or_path)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if load_in_4bit:
        compute = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
        kwargs["quantization_config"] = quantization_config(compute)
        dtype = dtype or compute
    model = LlavaForConditionalGeneration.from_pretrained(
        path,
        revision=revision,
        dtype=dtype or "auto",
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    processor = AutoProcessor.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if not getattr(processor, "chat_template", None):
        processor.chat_template = LLAVA_CHAT_TEMPLATE
    return model, processor


def lora_config(
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: str | list[str] | None = None,
    train_projector: bool = False,
) -> LoraConfig:
    """LoRA on the language model's linear layers (or `target_modules`), the projector trained in full if asked."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or LLM_LINEAR_LAYERS,
        modules_to_save=[PROJECTOR] if train_projector else None,
        task_type="CAUSAL_LM",
    )


def merge_adapter(
    base: str, adapter: str | Path, out: str | Path, *, dtype: torch.dtype | str = torch.bfloat16
) -> Path:
    """Fold a LoRA adapter into an unquantised copy of `base` and save it, with the adapter's processor, as a plain
    transformers model in `out` (safetensors) that `LlavaForConditionalGeneration.from_pretrained` loads."""
    model, _ = load_vlm(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoProcessor.from_pretrained(str(adapter)).save_pretrained(out)
    return Path(out)
