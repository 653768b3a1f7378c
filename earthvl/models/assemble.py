"""A LLaVA-1.5-style model assembled from a CLIP vision tower and a causal LLM, joined by a fresh GELU projector.

What LLaVA's stage 1 starts from: the two pretrained halves as they are, the projector random (so it must be
trained, `--train_projector`). The result is saved as a plain `LlavaForConditionalGeneration` folder with its
processor, so everything else (4-bit loading, LoRA, merging) treats it like any LLaVA checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel, LlavaForConditionalGeneration

from earthvl.atomic import staged_dir
from earthvl.cache import cache_dir
from earthvl.errors import EarthvlError
from earthvl.models.llava import llava15_config, llava15_processor

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"


def assemble_vlm(
    vision_tower: str,
    language_model: str,
    out: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Path:
    """Join `vision_tower` (a CLIP or CLIP-vision checkpoint) and `language_model` (a causal LM with a tokenizer)
    into a LLaVA-1.5 model saved in `out` (default: a cache folder named by the two ids and the seed).

    The layout is `earthvl.models.llava`'s; the projector is initialised from `seed` and an `<image>` token is added
    to the tokenizer. The two halves' weights are copied unchanged."""
    if out is None:
        key = hashlib.sha256(f"{vision_tower}\n{language_model}\n{seed}\n{dtype}".encode()).hexdigest()[:16]
        out = cache_dir() / "assembled" / key
    out = Path(out)
    if (out / "config.json").is_file():
        return out
    try:
        vision = CLIPVisionModel.from_pretrained(vision_tower, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise EarthvlError(f"cannot load a CLIP vision tower from {vision_tower}: {error}") from error
    try:
        llm = AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise EarthvlError(f"cannot load a causal language model from {language_model}: {error}") from error
    tokenizer = AutoTokenizer.from_pretrained(language_model)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tokenizer))
    config = llava15_config(vision.config, llm.config, image_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).to(dtype)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(llm.get_decoder().state_dict())
    model.lm_head.load_state_dict(llm.get_output_embeddings().state_dict())
    processor = llava15_processor(AutoImageProcessor.from_pretrained(vision_tower), tokenizer, vision.config.patch_size)
    with staged_dir(out, replace=False) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    logger.info("assembled %s + %s with a fresh projector into %s", vision_tower, language_model, out)
    return out
