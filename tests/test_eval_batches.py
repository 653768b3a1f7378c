"""Evaluation batches for speed: pixel batches stacked in the decoding workers, and the generation batch chosen from
the GPU memory free (with a fake memory reader)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from earthvl.eval.arguments import EvalArguments
from earthvl.eval.batches import Failures, decoded_batches
from earthvl.eval.generation import MEMORY_SHARE, LlavaGenerator, rows_in_memory
from earthvl.eval.eval_model import load_eval_model
from earthvl.eval.tasks import batch_size
from earthvl.images import BadImage
from earthvl.prompts import CAPTION_INSTRUCTION


def _decode(cell):
    if cell < 0:
        raise BadImage(f"image {cell} is broken")
    return np.full((3, 4, 4), cell, dtype=np.float32)


@pytest.mark.parametrize("workers", [0, 2])
def test_stacked_batches_hold_the_decoded_images_in_order_without_the_bad_ones(workers):
    rows = Dataset.from_dict({"image": [0, 1, -2, 3, 4, -5, 6]})
    failures = Failures()
    batches = list(decoded_batches(rows, "image", _decode, batch_size=3, failures=failures, num_workers=workers, stack=True))
    assert [indices for indices, _ in batches] == [[0, 1], [3, 4], [6]]
    assert all(isinstance(pixels, torch.Tensor) and pixels.shape == (len(i), 3, 4, 4) for i, pixels in batches)
    assert torch.cat([pixels for _, pixels in batches])[:, 0, 0, 0].tolist() == [0, 1, 3, 4, 6]
    assert [(entry["row"], entry["reason"]) for entry in failures.rows] == [(2, "image -2 is broken"), (5, "image -5 is broken")]


LLAVA_7B = SimpleNamespace(num_hidden_layers=32, num_attention_heads=32, hidden_size=4096, intermediate_size=11008)


def test_rows_in_memory_divide_the_free_memory_by_a_rows_cache_and_prefill():
    per_row = 2 * 32 * 32 * 128 * 2 * (600 + 256) + 600 * (2 * 11008 + 4 * 4096) * 2  # KV cache + prefill, bf16
    free = 80 * 2**30
    assert rows_in_memory(LLAVA_7B, torch.bfloat16, 600, 256, free) == int(MEMORY_SHARE * free // per_row) == 138
    assert rows_in_memory(LLAVA_7B, torch.float32, 600, 256, free) == int(MEMORY_SHARE * free // (2 * per_row))
    grouped = SimpleNamespace(**vars(LLAVA_7B), num_key_value_heads=8)  # grouped-query attention: a quarter of the cache
    assert rows_in_memory(grouped, torch.bfloat16, 600, 256, free) > 3 * 138
    assert rows_in_memory(LLAVA_7B, torch.bfloat16, 600, 256, 2**20) == 1  # never below one row


def test_llava_batches_on_a_gpu_come_from_its_free_memory(monkeypatch):
    model = load_eval_model("tiny-llava", task="caption")
    generator = LlavaGenerator(model.model, model.processor, CAPTION_INSTRUCTION, max_new_tokens=40)
    prompt = model.processor(images=[Image.new("RGB", (200, 100))], text=[generator.prompt])["input_ids"]
    assert generator.prompt_tokens() == len(prompt[0]) > 10
    text = model.model.config.get_text_config()
    free = 3 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 4 * 2**30))
    expected = rows_in_memory(text, torch.float32, generator.prompt_tokens(), 40, free)
    assert generator.batch_from_memory() == expected > 16
    args = EvalArguments(model="tiny-llava", dataset="x")
    assert batch_size(model, args, generator) == 16  # on the CPU: the fixed default
    monkeypatch.setattr(model, "model", SimpleNamespace(device=torch.device("cuda")))
    assert batch_size(model, args, generator) == expected
    assert batch_size(model, EvalArguments(model="tiny-llava", dataset="x", batch_size=5), generator) == 5
