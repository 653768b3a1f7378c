"""The micro-batch chosen from a memory budget: the largest that fits, with gradient accumulation keeping the batch
per optimizer step.

Before the first step, the trainer runs forward and backward passes (no optimizer step, gradients discarded) on the
longest training rows at a few micro-batch sizes, reads the peak memory of each, and keeps the largest micro-batch
that divides `per_device_train_batch_size x gradient_accumulation_steps` and fits `memory_budget_gb` with the
optimizer's state added. Sizes are tried from the smallest: the peaks of two are extrapolated linearly to the largest
candidate predicted to fit, which is then measured, so a probe that would not fit is rarely run. The choice and the
measured peaks go to `<output_dir>/memory_budget.json`; a resumed run reuses them.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from datasets import Dataset

from earthvl.errors import EarthvlError
from earthvl.train.conversations import LENGTH_COLUMN
from earthvl.train.foundation import SKIPPED_IMAGES
from earthvl.training_output import MEMORY_BUDGET_FILE, write_side_file

logger = logging.getLogger(__name__)

GIB = 2**30
ADAM_STATES = 2
"""Adam's state per trainable parameter (two moments), allocated at the first optimizer step, after the probe."""


class MemoryReader(Protocol):
    """Peak memory in bytes since the last `reset`."""

    def reset(self) -> None: ...

    def peak(self) -> int: ...


class CudaMemory:
    """Peak bytes allocated by torch on the current CUDA device (`max_memory_allocated`)."""

    def reset(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()


def default_memory_reader() -> MemoryReader:
    """CUDA's allocator statistics; there is nothing to read without a CUDA device."""
    if not torch.cuda.is_available():
        raise EarthvlError("memory_budget_gb needs a CUDA device to measure memory on")
    return CudaMemory()


@dataclass
class Probe:
    """One measured micro-batch: its peak bytes (None: out of memory) and whether that plus `extra_bytes` fits."""

    micro_batch: int
    peak_bytes: int | None
    fits: bool


def choose_micro_batch(
    global_batch: int, budget_bytes: int, measure: Callable[[int], int | None], extra_bytes: int = 0
) -> tuple[int, list[Probe]]:
    """The largest divisor of `global_batch` whose measured peak (`measure(micro_batch)`, None when it ran out of
    memory) plus `extra_bytes` is within `budget_bytes`, and the probes made to find it."""
    candidates = [size for size in range(1, global_batch + 1) if global_batch % size == 0]
    probes: list[Probe] = []

    def fits(size: int) -> bool:
        peak = measure(size)
        probes.append(Probe(size, peak, peak is not None and peak + extra_bytes <= budget_bytes))
        return probes[-1].fits

    if not fits(candidates[0]):
        peak = probes[0].peak_bytes
        need = "runs out of memory" if peak is None else f"needs {(peak + extra_bytes) / GIB:.2f} GiB"
        raise EarthvlError(
            f"memory_budget_gb {budget_bytes / GIB:g}: a micro-batch of {candidates[0]} row(s) {need} (optimizer state "
            "included); raise the budget or use less memory per row (activation_checkpointing, a smaller image_size)"
        )
    fitting = [(candidates[0], probes[0].peak_bytes)]
    remaining = candidates[1:]
    while remaining:
        if len(fitting) == 1:
            size = remaining[0]
        else:
            (small, low), (large, high) = fitting[-2:]
            per_row = max((high - low) / (large - small), 0.0)
            predicted = [c for c in remaining if high + per_row * (c - large) + extra_bytes <= budget_bytes]
            if not predicted:
                break
            size = predicted[-1]
        if fits(size):
            fitting.append((size, probes[-1].peak_bytes))
            remaining = [c for c in remaining if c > size]
        else:
            remaining = [c for c in remaining if c < size]
    return fitting[-1][0], probes


def longest_rows(dataset: Dataset, count: int) -> list[int]:
    """Indices of the `count` longest rows by the `length` column (the first rows where there is none)."""
    count = min(count, len(dataset))
    if LENGTH_COLUMN not in dataset.column_names:
        return list(range(count))
    lengths = torch.tensor(dataset.with_format("arrow")[LENGTH_COLUMN].to_pylist())
    return lengths.argsort(descending=True, stable=True)[:count].tolist()


class MemoryBudget:
    """Mixin for a `transformers.Trainer` subclass: `memory_budget_gb` chooses the per-device micro-batch (and the
    gradient accumulation that keeps the batch per optimizer step) just before training starts, when activation
    checkpointing and the adapters are in place. `memory_reader` defaults to CUDA's allocator statistics."""

    def __init__(
        self, *args: Any, memory_budget_gb: float | None = None, memory_reader: MemoryReader | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if memory_budget_gb is not None and memory_budget_gb <= 0:
            raise EarthvlError(f"memory_budget_gb must be positive, got {memory_budget_gb}")
        if memory_budget_gb is not None and getattr(self, "is_deepspeed_enabled", False):
            raise EarthvlError("memory_budget_gb: DeepSpeed fixes the micro-batch in its own config; set it there")
        if memory_budget_gb is not None and memory_reader is None:
            memory_reader = default_memory_reader()
        self.memory_budget_gb, self.memory_reader = memory_budget_gb, memory_reader
        self.memory_choice: dict[str, Any] | None = None
        self._resuming = False

    def train(self, resume_from_checkpoint=None, *args: Any, **kwargs: Any):
        self._resuming = bool(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def get_train_dataloader(self):
        if self.memory_budget_gb is not None and self.memory_choice is None and self.is_in_train:
            self.memory_choice = self._recorded_choice() or self._probe()
            self.args.per_device_train_batch_size = self.memory_choice["micro_batch"]
            self.args.gradient_accumulation_steps = self.memory_choice["gradient_accumulation_steps"]
            self._train_batch_size = self.args.train_batch_size
            logger.info(
                "memory budget %g GiB: micro-batch %d x %d accumulation steps",
                self.memory_budget_gb, self.memory_choice["micro_batch"], self.memory_choice["gradient_accumulation_steps"],
            )
        return super().get_train_dataloader()

    def _global_batch(self) -> int:
        return self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps

    def _recorded_choice(self) -> dict[str, Any] | None:
        """A resumed run keeps the micro-batch its first run chose (same batches, same steps)."""
        path = Path(self.args.output_dir) / MEMORY_BUDGET_FILE
        if not (self._resuming and path.is_file()):
            return None
        choice = json.loads(path.read_text())
        if choice.get("global_batch") != self._global_batch() or choice.get("budget_gb") != self.memory_budget_gb:
            return None
        return choice

    def _probe(self) -> dict[str, Any]:
        global_batch = self._global_batch()
        indices = longest_rows(self.train_dataset, global_batch)
        rows = [self.train_dataset[i] for i in indices]
        trainable = sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
        extra = ADAM_STATES * trainable
        metrics = copy.deepcopy(getattr(self, "_metrics", None)), getattr(self, "_total_train_tokens", None)
        self.model.train()
        micro_batch, probes = choose_micro_batch(
            global_batch, int(self.memory_budget_gb * GIB), lambda size: self._peak_bytes(rows[:size]), extra
        )
        if metrics[0] is not None:  # TRL's running metrics must not count the probe's passes
            self._metrics, self._total_train_tokens = metrics
        # Every process must step with the same micro-batch: the smallest any of them chose.
        micro_batch = int(self.accelerator.gather(torch.tensor([micro_batch], device=self.args.device)).min())
        choice = {
            "budget_gb": self.memory_budget_gb,
            "global_batch": global_batch,
            "micro_batch": micro_batch,
            "gradient_accumulation_steps": global_batch // micro_batch,
            "optimizer_state_gb": extra / GIB,
            "probed_rows": indices,
            "probes": [
                {**asdict(p), "peak_gb": None if p.peak_bytes is None else p.peak_bytes / GIB} for p in probes
            ],
        }
        if self.is_world_process_zero():
            write_side_file(self.args.output_dir, MEMORY_BUDGET_FILE, choice)
        return choice

    def _peak_bytes(self, rows: list[dict[str, Any]]) -> int | None:
        """Peak memory of one forward and backward pass over `rows` (gradients discarded), None if out of memory."""
        batch = self.data_collator(rows)
        batch.pop(SKIPPED_IMAGES, None)
        inputs = self._prepare_inputs(batch)
        self.memory_reader.reset()
        try:
            with self.compute_loss_context_manager(), self.accelerator.autocast():
                loss = self.compute_loss(self.model, inputs)
            self.accelerator.backward(loss)
            return self.memory_reader.peak()
        except torch.OutOfMemoryError:
            return None
        finally:
            self.model.zero_grad(set_to_none=True)
            loss = inputs = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
