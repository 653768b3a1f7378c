"""Throughput in the training logs and one readable line per logging step, for every earthvl trainer.

Each training log gets `samples_per_second` and `tokens_per_second` (non-padding tokens, all processes, since the
previous log) and, on a GPU, `gpu_peak_memory_gb` (this process's peak since the previous log). They go wherever the
logs go: the console, `trainer.state.log_history` and the `--report_to` integrations.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import TrainerState
from transformers.trainer_callback import PrinterCallback, ProgressCallback

HIDDEN_KEYS = ("total_flos",)
UNITS = {"samples_per_second": "samples/s", "tokens_per_second": "tokens/s", "gpu_peak_memory_gb": "GB GPU peak"}


def _value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 100 and float(value).is_integer()):
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def log_line(logs: dict[str, Any], state: TrainerState) -> str:
    """`step 10/200 | loss 2.314 | learning_rate 0.0001 | 18.2 samples/s | 5,120 tokens/s | ...`."""
    parts = [f"step {state.global_step}/{state.max_steps}"]
    for key, value in logs.items():
        if key in HIDDEN_KEYS:
            continue
        parts.append(f"{_value(value)} {UNITS[key]}" if key in UNITS else f"{key} {_value(value)}")
    return " | ".join(parts)


class ReadableProgressCallback(ProgressCallback):
    """transformers' progress bars, writing `log_line` instead of a printed dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(log_line(logs, state))


class ReadablePrinterCallback(PrinterCallback):
    """The `disable_tqdm` printer, printing `log_line`."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(log_line(logs, state), flush=True)


class ThroughputLogging:
    """Mixin for a `transformers.Trainer` subclass: throughput in every training log, readable log lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for stock, readable in ((ProgressCallback, ReadableProgressCallback), (PrinterCallback, ReadablePrinterCallback)):
            if self.pop_callback(stock) is not None:
                self.add_callback(readable)
        self._counted = {"samples": 0, "tokens": torch.zeros((), dtype=torch.long)}
        self._since: float | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._since is None:
            self._since = time.perf_counter()
        ids, mask, images = inputs.get("input_ids"), inputs.get("attention_mask"), inputs.get("pixel_values")
        if ids is not None:
            # A sample is an image where there are images: a CLIP batch has more text chunks than images.
            self._counted["samples"] += len(images) if images is not None else len(ids)
            tokens = mask.sum() if mask is not None else torch.tensor(ids.numel())
            # Kept on the device: reading it back every step would stall the GPU queue.
            self._counted["tokens"] = self._counted["tokens"].to(tokens.device) + tokens
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._since is not None:
            counts = torch.stack([torch.as_tensor(self._counted["samples"]).to(self._counted["tokens"]), self._counted["tokens"]])
            samples, tokens = self.accelerator.reduce(counts.to(self.accelerator.device), reduction="sum").tolist()
            elapsed = max(time.perf_counter() - self._since, 1e-9)
            logs["samples_per_second"] = round(samples / elapsed, 3)
            logs["tokens_per_second"] = round(tokens / elapsed, 1)
            if torch.cuda.is_available():
                logs["gpu_peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                torch.cuda.reset_peak_memory_stats()
            self._counted = {"samples": 0, "tokens": torch.zeros((), dtype=torch.long)}
            self._since = time.perf_counter()
        super().log(logs, start_time)
