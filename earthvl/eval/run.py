"""One evaluation run end to end: load the benchmark and the model, run the task, write the results file (and the
per-row predictions beside it)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import torch

from earthvl.atomic import check_writable, write_bytes
from earthvl.eval.arguments import EvalArguments
from earthvl.eval.batches import Failures
from earthvl.eval.benchmarks import load_benchmark
from earthvl.eval.eval_model import load_eval_model
from earthvl.eval_results import FORMAT, package_versions, predictions_path, write_results
from earthvl.models.loading import weights_dtype



def _runner(task: str):
    if task == "caption":
        from earthvl.eval.captioning import evaluate_captions

        return evaluate_captions
    if task == "classify":
        from earthvl.eval.classification import evaluate_classification

        return evaluate_classification
    from earthvl.eval.retrieval import evaluate_retrieval

    return evaluate_retrieval


def evaluate(task: str, args: EvalArguments, task_args: Any) -> dict[str, Any]:
    """Run `task` as `args` and `task_args` say, write the results file (and predictions), and return the results."""
    check_writable(args.out, "results file")
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    benchmark = load_benchmark(
        args.dataset,
        task,
        config=args.dataset_config,
        split=args.split,
        revision=args.dataset_revision,
        image_column=args.image_column,
        label_column=getattr(task_args, "label_column", None),
        caption_column=getattr(task_args, "caption_column", None),
        class_names=getattr(task_args, "class_names", None),
        templates=getattr(task_args, "templates", None),
        max_samples=args.max_samples,
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_eval_model(
        args.model,
        task=task,
        revision=args.revision,
        base_model=args.base_model,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        device=device,
        load_in_4bit=args.load_in_4bit,
        load_in_8bit=args.load_in_8bit,
    )
    failures = Failures.of(benchmark.rows)
    output = _runner(task)(model, benchmark, args, task_args, failures)
    columns = {"image": benchmark.image_column, "label": benchmark.label_column, "caption": benchmark.caption_column}
    results = {
        "format": FORMAT,
        "task": task,
        "model": model.describe(),
        "dataset": {
            "name": benchmark.name,
            "id": benchmark.source,
            "config": benchmark.config,
            "split": benchmark.split,
            "revision": benchmark.revision,
            "columns": {role: column for role, column in columns.items() if column},
            "num_rows": len(benchmark.rows),
            "num_samples": output.num_samples,
            "left_out": benchmark.skipped,
        },
        "metrics": output.metrics,
        "failures": failures.summary(),
        "settings": {
            **output.settings,
            "device": device,
            "dtype": str(weights_dtype(model.model)).removeprefix("torch."),
            "load_in_4bit": args.load_in_4bit,
            "load_in_8bit": args.load_in_8bit,
            "max_samples": args.max_samples,
        },
        "versions": package_versions(),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - clock, 3),
    }
    write_results(args.out, results)
    if args.save_predictions and output.predictions:
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in output.predictions)
        write_bytes(predictions_path(args.out), lines.encode())
    return results


def summary(results: dict[str, Any]) -> str:
    """The results as a few aligned lines for the terminal."""
    dataset = results["dataset"]
    lines = [
        f"{results['task']}: {results['model']['id']} on {dataset['id']}"
        f"{':' + dataset['config'] if dataset.get('config') else ''} [{dataset['split']}], {dataset['num_samples']} samples"
    ]
    for protocol, values in results["metrics"].items():
        shown = ", ".join(f"{name} {'n/a' if value is None else f'{value:.4f}'}" for name, value in values.items())
        lines.append(f"  {protocol}: {shown}")
    failures = results["failures"]
    if failures["bad_images"] or failures["failed_generations"]:
        lines.append(f"  {failures['bad_images']} bad images skipped, {failures['failed_generations']} failed generations (listed in the results file)")
    return "\n".join(lines)
