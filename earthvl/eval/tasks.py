"""What the three task runners share: the output they return, and how images are turned into model inputs."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from earthvl.eval.arguments import EvalArguments
from earthvl.eval.batches import Failures, decoded_batches
from earthvl.eval.benchmarks import Benchmark
from earthvl.eval.generation import LlavaGenerator
from earthvl.eval.eval_model import EvalModel
from earthvl.models.families import CLIP, VLM
from earthvl.images import open_image
from earthvl.models.pixels import PixelTransform


@dataclass
class TaskOutput:
    """A task's metrics (protocol -> metric -> value), per-row predictions, the settings that produced them, and
    how many rows were scored."""

    metrics: dict[str, dict[str, float]]
    num_samples: int
    settings: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)


def image_decoder(model: EvalModel, args: EvalArguments) -> Callable[[Any], Any]:
    """Image cell -> model input: exact `pixel_values` (as the processor computes them) for CLIP and BLIP-2, a
    pixel-limited RGB PIL image for LLaVA's processor."""
    if model.family == VLM.name:
        return functools.partial(open_image, max_pixels=args.max_pixels)
    return PixelTransform.from_processor(model.processor.image_processor, draft=False, max_pixels=args.max_pixels).pixels


def batch_size(model: EvalModel, args: EvalArguments, generator: Any = None) -> int:
    """`--batch_size`; else for a LLaVA `generator` on a GPU the images whose generation fits in its free memory;
    else 256 images for CLIP and 16 for generation."""
    if args.batch_size:
        return args.batch_size
    if isinstance(generator, LlavaGenerator) and model.model.device.type == "cuda":
        return generator.batch_from_memory()
    return 256 if model.family == CLIP.name else 16


def image_batches(
    model: EvalModel,
    benchmark: Benchmark,
    args: EvalArguments,
    failures: Failures,
    description: str,
    stack: bool = False,
    size: int | None = None,
) -> Iterator[tuple[list[int], list[Any] | torch.Tensor]]:
    """(row indices, model inputs) per batch of `size` (default `batch_size(model, args)`) of the benchmark's images,
    bad images handled as `args` says; with `stack` (pixel-value arrays) one tensor per batch, stacked by the workers
    and pinned for a GPU."""
    return decoded_batches(
        benchmark.rows,
        benchmark.image_column,
        image_decoder(model, args),
        batch_size=size or batch_size(model, args),
        failures=failures,
        on_bad_image=args.on_bad_image,
        num_workers=args.num_workers,
        description=description,
        stack=stack,
        pin_memory=stack and model.model.device.type == "cuda",
    )
