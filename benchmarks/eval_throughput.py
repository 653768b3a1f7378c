"""Benchmark: batched vs one-image-at-a-time caption evaluation, and zero-shot classification throughput.

    python benchmarks/eval_throughput.py --out eval_throughput.json [--images 64] [--caption_model tiny-llava]
        [--clip_model tiny-clip] [--device cpu]

Data: a sample world (`--tiles` tiles) built into a ChatEarthNet `gpt35` folder; captioning runs on the first
`--images` rows of its train split, classification on the sample world's `scenes` folder repeated to
`--classify_images` rows. Captioning: the LLaVA answer generator of `earthvl eval caption` (greedy, KV cache,
`--max_new_tokens`), once with batches of `--batch_size` (left padding) and once one image at a time, each timed
`--repeats` times (best run counts: the VM is shared); the generated texts of the two must be identical. Then the
whole `earthvl eval caption` (decode + generate + score with the `hf` protocol) both ways. Classification:
`earthvl eval classify` end to end, images/s over the rows scored. Paste the printed table into BENCHMARKS.md
with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from datasets import concatenate_datasets, disable_progress_bars

from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.eval.arguments import CaptionArguments, ClassifyArguments, EvalArguments
from earthvl.eval.batches import Failures, decoded_batches
from earthvl.eval.benchmarks import load_benchmark
from earthvl.eval.generation import LlavaGenerator, generate_all
from earthvl.eval.models import load_eval_model
from earthvl.eval.run import evaluate
from earthvl.eval.tasks import image_decoder
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.sample import generate_sample


def _best(run, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def caption_generation(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Generation alone, batched vs one at a time, on the same decoded images."""
    benchmark = load_benchmark(str(folder), "caption", config="gpt35", split="train", max_samples=args.images)
    model = load_eval_model(args.caption_model, task="caption", device=args.device)
    eval_args = EvalArguments(model=args.caption_model, dataset=str(folder), num_workers=0)
    failures = Failures.of(benchmark.rows)
    images = [
        (indices, batch)
        for indices, batch in decoded_batches(
            benchmark.rows, benchmark.image_column, image_decoder(model, eval_args), batch_size=args.images, failures=failures
        )
    ]
    generator = LlavaGenerator(model.model, model.processor, CAPTION_INSTRUCTION, max_new_tokens=args.max_new_tokens)

    def run(batch_size: int) -> dict[int, str]:
        batches = [
            (indices[start : start + batch_size], batch[start : start + batch_size])
            for indices, batch in images
            for start in range(0, len(indices), batch_size)
        ]
        return generate_all(batches, generator, failures)

    batched_seconds, batched = _best(lambda: run(args.batch_size), args.repeats)
    single_seconds, single = _best(lambda: run(1), args.repeats)
    identical = sum(batched[row] == single[row] for row in batched)
    return {
        "images": len(batched),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "batched_seconds": batched_seconds,
        "single_seconds": single_seconds,
        "speedup": single_seconds / batched_seconds,
        "identical_texts": identical,
        "mean_words_generated": sum(len(text.split()) for text in batched.values()) / len(batched),
        "failed_generations": failures.count("failed_generation"),
    }


def caption_end_to_end(args: argparse.Namespace, folder: Path, out: Path) -> dict[str, Any]:
    """`earthvl eval caption` as a user runs it, batched vs `--batch_size 1`."""
    seconds = {}
    for batch_size in (args.batch_size, 1):
        eval_args = EvalArguments(
            model=args.caption_model, dataset=str(folder), dataset_config="gpt35", split="train", max_samples=args.images,
            batch_size=batch_size, device=args.device, out=str(out / f"caption-{batch_size}.json"),
        )  # fmt: skip
        task_args = CaptionArguments(protocols=["hf"], max_new_tokens=args.max_new_tokens)
        seconds[batch_size], _ = _best(lambda: evaluate("caption", eval_args, task_args), args.repeats)
    return {"batched_seconds": seconds[args.batch_size], "single_seconds": seconds[1], "speedup": seconds[1] / seconds[args.batch_size]}


def classification(args: argparse.Namespace, scenes: Path, out: Path) -> dict[str, Any]:
    """`earthvl eval classify` end to end on a repeated scenes folder (as a Parquet folder of N rows)."""
    benchmark = load_benchmark(str(scenes), "classify")
    rows = concatenate_datasets([benchmark.rows] * (args.classify_images // len(benchmark.rows) + 1)).select(range(args.classify_images))
    parquet = out / "scenes-repeated" / "data" / "train.parquet"
    parquet.parent.mkdir(parents=True)
    rows.to_parquet(str(parquet))
    eval_args = EvalArguments(
        model=args.clip_model, dataset=str(parquet.parent.parent), split="train", device=args.device,
        out=str(out / "classify.json"), num_workers=args.num_workers,
    )  # fmt: skip
    task_args = ClassifyArguments(class_names=benchmark.class_names, templates=list(benchmark.templates))
    seconds, results = _best(lambda: evaluate("classify", eval_args, task_args), args.repeats)
    samples = results["dataset"]["num_samples"]
    return {"images": samples, "seconds": seconds, "images_per_second": samples / seconds, "num_workers": args.num_workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="eval_throughput.json")
    parser.add_argument("--tiles", type=int, default=24)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--classify_images", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--caption_model", default="tiny-llava")
    parser.add_argument("--clip_model", default="tiny-clip")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = generate_sample(tmp / "world", tiles=args.tiles, seed=0, progress=False)
        build_chatearthnet(world.chatearthnet.root, tmp / "cen", configs="gpt35", progress=False, num_proc=1)
        report = {
            "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "device": args.device},
            "caption_generation": caption_generation(args, tmp / "cen"),
            "caption_end_to_end": caption_end_to_end(args, tmp / "cen", tmp),
            "classification": classification(args, tmp / "world" / "scenes", tmp),
        }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    gen, e2e, cls = report["caption_generation"], report["caption_end_to_end"], report["classification"]
    print("| measurement | batched | one at a time | speedup |\n|---|---:|---:|---:|")
    print(f"| caption generation, {gen['images']} images x {gen['max_new_tokens']} tokens (s) | {gen['batched_seconds']:.2f} | {gen['single_seconds']:.2f} | {gen['speedup']:.1f}x |")
    print(f"| `earthvl eval caption` end to end, hf protocol (s) | {e2e['batched_seconds']:.2f} | {e2e['single_seconds']:.2f} | {e2e['speedup']:.1f}x |")
    print(f"\nidentical texts batched vs single: {gen['identical_texts']}/{gen['images']}")
    print(f"classification ({args.clip_model}): {cls['images_per_second']:.0f} images/s over {cls['images']} images")


if __name__ == "__main__":
    main()
