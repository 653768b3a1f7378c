"""Batched text generation for evaluation: LLaVA answers (left-padded batches, KV cache) and BLIP-2 captions, with
failed generations retried one image at a time and recorded, never dropped."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from PIL import Image
from transformers import ProcessorMixin

from earthvl.eval.batches import Failures
from earthvl.models.blip2 import generate_captions
from earthvl.models.loading import weights_dtype


MEMORY_SHARE = 0.8
"""Share of the GPU memory free before generating that a batch chosen from memory may fill."""


def rows_in_memory(config: Any, dtype: torch.dtype, prompt_tokens: int, new_tokens: int, free_bytes: int) -> int:
    """Rows one greedy `generate` call can hold in `MEMORY_SHARE` of `free_bytes`, at least 1: per row, the KV cache of
    the prompt and the new tokens (keys and values of every layer and KV head), plus the prefill's widest working
    memory (the MLP's gate and up projections and four hidden-size activations per prompt token), at `dtype`.
    `config` is the language model's (`num_hidden_layers`, `num_attention_heads`, `hidden_size`, `intermediate_size`;
    `num_key_value_heads` and `head_dim` where it has them)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    itemsize = dtype.itemsize
    cache = 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize * (prompt_tokens + new_tokens)
    prefill = prompt_tokens * (2 * config.intermediate_size + 4 * config.hidden_size) * itemsize
    return max(1, int(MEMORY_SHARE * free_bytes // (cache + prefill)))


class LlavaGenerator:
    """Answers of a LLaVA model to one instruction about each of a batch of images (greedy by default)."""

    def __init__(self, model: torch.nn.Module, processor: ProcessorMixin, instruction: str, **generation: Any) -> None:
        self.model, self.processor = model, processor
        # Left padding keeps every prompt's last token at the end of its row, where generation continues.
        processor.tokenizer.padding_side = "left"
        message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        self.prompt = processor.apply_chat_template(message, add_generation_prompt=True)
        tokenizer = processor.tokenizer
        # A template that writes the bos token itself (earthvl's: TRL tokenises training rows without special tokens)
        # must not get a second one from the tokenizer; one without (llava-hf's) gets it from the tokenizer.
        self.add_special_tokens = not (tokenizer.bos_token and self.prompt.startswith(tokenizer.bos_token))
        self.generation = {
            "do_sample": False,
            "num_beams": 1,
            "use_cache": True,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            **generation,
        }

    def prompt_tokens(self) -> int:
        """Tokens of the prompt with its image, as the processor expands the image placeholder."""
        return self.processor(images=[Image.new("RGB", (32, 32))], text=[self.prompt], return_tensors="pt")["input_ids"].shape[1]

    def batch_from_memory(self) -> int:
        """Images per batch whose generation fits in the GPU memory free now (`rows_in_memory`)."""
        free, _ = torch.cuda.mem_get_info(self.model.device)
        new_tokens = self.generation.get("max_new_tokens") or self.model.generation_config.max_new_tokens or 20
        config = self.model.config.get_text_config()
        return rows_in_memory(config, weights_dtype(self.model), self.prompt_tokens(), new_tokens, free)

    @torch.no_grad()
    def __call__(self, images: list[Any]) -> list[str]:
        inputs = self.processor(
            images=images,
            text=[self.prompt] * len(images),
            padding=True,
            add_special_tokens=self.add_special_tokens,
            return_tensors="pt",
        )
        dtype = weights_dtype(self.model)
        inputs = {k: v.to(self.model.device, dtype) if v.is_floating_point() else v.to(self.model.device) for k, v in inputs.items()}
        out = self.model.generate(**inputs, **self.generation)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


class Blip2Generator:
    """Captions of a BLIP-2 model after a fixed prompt, from `pixel_values` arrays (one per image)."""

    def __init__(self, model: torch.nn.Module, processor: ProcessorMixin, prompt: str, **generation: Any) -> None:
        self.model, self.processor, self.prompt, self.generation = model, processor, prompt, generation

    def __call__(self, images: list[Any]) -> list[str]:
        pixels = torch.stack([torch.as_tensor(image) for image in images])
        return generate_captions(self.model, self.processor, pixels, prompt=self.prompt, batch_size=len(pixels), **self.generation)


def generate_all(
    batches: Iterable[tuple[list[int], list[Any]]], generate: Callable[[list[Any]], list[str]], failures: Failures
) -> dict[int, str]:
    """Row -> generated text for every decoded image. A batch whose generation raises is retried image by image;
    an image that still fails gets an empty text and a `failed_generation` entry in `failures`."""
    texts: dict[int, str] = {}
    for indices, images in batches:
        try:
            texts.update(zip(indices, generate(images)))
            continue
        except (RuntimeError, ValueError, IndexError):
            _release_memory()
        for index, image in zip(indices, images):
            try:
                texts[index] = generate([image])[0]
            except (RuntimeError, ValueError, IndexError) as error:
                _release_memory()
                failures.add("failed_generation", index, f"{type(error).__name__}: {error}")
                texts[index] = ""
    return texts


def _release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
