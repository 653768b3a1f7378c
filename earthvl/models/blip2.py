"""BLIP-2 captioners: loading (optionally 8-/4-bit), where LoRA goes, the caption prompt, and generation.

In transformers 5 the BLIP-2 processor puts `num_query_tokens` `<image>` tokens before the text and the model
writes the Q-Former outputs there. The GAIA paper's setting: LoRA r 16, alpha 32, dropout 0.1 on the OPT language
model's attention projections; vision tower, Q-Former and projection frozen; beam search with 5 beams and at most
120 generated tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoProcessor, Blip2ForConditionalGeneration, GenerationConfig, ProcessorMixin

from earthvl.models.loading import (
    check_safetensors,
    load_pretrained,
    lora_targets,
    save_merged,
    weights_dtype,
)
from earthvl.training_output import GENERATION_CONFIG_FILE, adapter_base

UNQUANTIZED_MODULES = ["vision_model", "qformer", "language_projection", "language_model.lm_head"]
"""Full module paths kept out of 8-/4-bit: only the language model's decoder is quantised."""
LLM_ATTENTION = r".*language_model.*\.(q_proj|k_proj|v_proj|out_proj)"
"""LoRA targets: the attention projections of the OPT decoder (the Q-Former's are named query/key/value, the vision
tower's qkv/projection, and `fc1`/`fc2` exist on both sides, hence a path-anchored pattern)."""
GAIA_GENERATION = {"num_beams": 5, "max_new_tokens": 120}
"""Generation as the GAIA authors captioned: beam search with 5 beams, at most 120 new tokens (LAVIS feeds the
prompt as embeddings, so its `max_length=120` counts generated tokens only)."""


def load_blip2(name_or_path: str, **kwargs: Any) -> tuple[Blip2ForConditionalGeneration, ProcessorMixin]:
    """A BLIP-2 checkpoint (Hub id, folder or `tiny-blip2`) and its processor. With `load_in_8bit`/`load_in_4bit`
    only the language model is quantised; the keyword arguments are `earthvl.models.loading.load_pretrained`'s."""
    return load_pretrained(Blip2ForConditionalGeneration, name_or_path, skip_modules=UNQUANTIZED_MODULES, **kwargs)


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.1, target_modules: str | list[str] | None = None, **kwargs: Any) -> LoraConfig:
    """The GAIA paper's LoRA (r 16, alpha 32, dropout 0.1) on the language model's attention projections (or
    `target_modules`); other keyword arguments go to `peft.LoraConfig`."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(target_modules, LLM_ATTENTION),
        task_type=kwargs.pop("task_type", None),
        **kwargs,
    )


def blip2_prompt_ids(processor: ProcessorMixin, prompt: str = "") -> list[int]:
    """The ids before a caption: `num_query_tokens` image tokens, then the tokenised prompt with its `bos`, exactly as
    `processor(images=..., text=prompt)` lays them out."""
    tokenizer = processor.tokenizer
    image_token = getattr(processor.image_token, "content", processor.image_token)  # an AddedToken or a str
    image_token_id = tokenizer.convert_tokens_to_ids(image_token)
    return [image_token_id] * processor.num_query_tokens + tokenizer(prompt)["input_ids"]


def generation_config(model: Blip2ForConditionalGeneration, **overrides: Any) -> GenerationConfig:
    """The model's generation config with the GAIA defaults, then `overrides`, applied."""
    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    config.update(**{**GAIA_GENERATION, **overrides})
    return config


@torch.no_grad()
def generate_captions(
    model: Blip2ForConditionalGeneration | PeftModel,
    processor: ProcessorMixin,
    pixel_values: torch.Tensor,
    *,
    prompt: str = "",
    batch_size: int = 16,
    **generation: Any,
) -> list[str]:
    """One caption per image of `pixel_values` (N, 3, H, W), generated after `prompt`; settings default to the
    model's generation config (GAIA's beam search in earthvl's saved models), overridden by `generation`. Every
    image shares the prompt, so batches need no padding."""
    # BLIP-2's `generate` hands over to its language model's, which would otherwise read the language model's own
    # generation config (transformers' defaults: greedy, max_length 20) instead of the one saved with the model.
    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    unused = config.update(**generation)
    prefix = torch.tensor([blip2_prompt_ids(processor, prompt)], device=model.device)
    dtype = weights_dtype(model)
    captions: list[str] = []
    for start in range(0, len(pixel_values), batch_size):
        pixels = pixel_values[start : start + batch_size].to(model.device, dtype)
        input_ids = prefix.expand(len(pixels), -1)
        out = model.generate(
            pixel_values=pixels,
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            **unused,
        )
        captions += [text.strip() for text in processor.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)]
    return captions


def load_adapter(adapter: str | Path, *, base: str | None = None, dtype: torch.dtype | str = torch.float32, **kwargs: Any) -> tuple[PeftModel, ProcessorMixin]:
    """A trained BLIP-2 adapter on its (unquantised) base, with the processor and generation settings saved beside it."""
    check_safetensors(Path(adapter), "adapter_model")
    model, _ = load_blip2(base or adapter_base(adapter), dtype=dtype, **kwargs)
    if (Path(adapter) / GENERATION_CONFIG_FILE).is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(adapter))
    return PeftModel.from_pretrained(model, str(adapter)), AutoProcessor.from_pretrained(str(adapter))


def merge_adapter(base: str, adapter: str | Path, out: str | Path, *, dtype: torch.dtype | str = torch.float32) -> Path:
    """Fold a BLIP-2 LoRA adapter into an unquantised `base` and save it with its processor and generation settings
    in `out`, loadable with `Blip2ForConditionalGeneration.from_pretrained`."""
    return save_merged(*load_adapter(adapter, base=base, dtype=dtype), out)
