"""Benchmark: images/s per CPU core of the image pipeline (decode + resize + normalise) from built Parquet.

    python benchmarks/pixel_pipeline.py --out pixel_pipeline.json [--size 336] [--train_images_per_second R]

One core: `torch.set_num_threads(1)`, no DataLoader workers; batches of `--batch` images, each path timed for
`--seconds` after one warm-up batch, `--repeats` times in turn with the other paths, the best run counting (the
VM is shared). Paths: (a) the transformers processor (PIL decode, then `CLIPImageProcessorPil` with OpenAI CLIP's
settings at `--size`), (b) `PixelTransform` with `draft=False` (same output), (c) `PixelTransform` with
`draft=True` (JPEGs decoded at a reduced DCT scale). Inputs: the RGB PNGs of a
ChatEarthNet `gpt35` train split built from the sample world, GAIA-like JPEGs (smooth noise, quality 90) at
1024x768 and 2048x1536 written to Parquet as a `datasets` Image column, and the same JPEGs pre-resized the way
`earthvl build gaia --resize` stores them. Image cells are read from the Parquet before timing (an Arrow read,
small next to decoding). With `--train_images_per_second` (the GPU training rate, from `benchmarks/train_clip.py`)
it also prints the cores needed to keep up and the pipeline/training ratio on 8 and 16 cores, assuming a worker per
core scales linearly. Paste the printed tables into BENCHMARKS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from datasets import Dataset, Features, Image, disable_progress_bars
from PIL import Image as PILImage
from transformers import CLIPImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.builders.gaia.images import image_column
from earthvl.images import DEFAULT_MAX_PIXELS
from earthvl.models.pixels import PixelTransform
from earthvl.sample import generate_sample

GAIA_SIZES = ((1024, 768), (2048, 1536))
PATHS = ("processor", "draft=False", "draft=True")
Cells = list[dict[str, Any]]
Run = Callable[[Cells], torch.Tensor]


def natural_jpeg(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A photo-like JPEG: a bicubic-upsampled coarse colour grid plus grain, quality 90."""
    coarse = PILImage.fromarray(rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8))
    base = np.asarray(coarse.resize((width, height), PILImage.Resampling.BICUBIC), dtype=np.float32)
    pixels = np.clip(base + rng.normal(0, 6, base.shape).astype(np.float32), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def write_parquet(cells: Cells, path: Path) -> Path:
    Dataset.from_dict({"image": cells}, features=Features({"image": Image()})).to_parquet(str(path))
    return path


def read_cells(files: list[Path]) -> Cells:
    return [cell for file in files for cell in pq.read_table(file, columns=["image"]).column("image").to_pylist()]


def chatearthnet_parquet(work: Path, tiles: int) -> list[Path]:
    world = generate_sample(work / "world", tiles=tiles, seed=0, gaia_images=3, progress=False)
    built = work / "chatearthnet"
    build_chatearthnet(world.chatearthnet.root, built, configs="gpt35", splits="train", progress=False, num_proc=1)
    return sorted((built / "data" / "gpt35").glob("train-*.parquet"))


def inputs(work: Path, tiles: int, per_size: int, pre_resize: int) -> dict[str, Cells]:
    """Image cells read back from each input's Parquet, by input name."""
    rng = np.random.default_rng(0)
    originals = {size: [natural_jpeg(*size, rng) for _ in range(per_size)] for size in GAIA_SIZES}
    sets = {"ChatEarthNet RGB PNG 256x256": read_cells(chatearthnet_parquet(work, tiles))}
    for (width, height), jpegs in originals.items():
        cells = [{"bytes": data, "path": f"{i}.jpg"} for i, data in enumerate(jpegs)]
        sets[f"GAIA-like JPEG {width}x{height}"] = read_cells([write_parquet(cells, work / f"gaia-{width}.parquet")])
    resized = [
        image_column(data, i, "jpg", resize=pre_resize, max_pixels=DEFAULT_MAX_PIXELS)[0]
        for i, data in enumerate(jpeg for jpegs in originals.values() for jpeg in jpegs)
    ]
    resized_file = write_parquet(resized, work / "gaia-resized.parquet")
    sets[f"GAIA-like JPEG pre-resized to {pre_resize} px"] = read_cells([resized_file])
    return sets


def processor_path(processor: CLIPImageProcessorPil) -> Run:
    """What a plain collate function does: decode each cell with PIL, then call the processor on the batch."""

    def run(cells: Cells) -> torch.Tensor:
        images = [PILImage.open(io.BytesIO(cell["bytes"])) for cell in cells]
        return processor(images=images, return_tensors="pt").pixel_values

    return run


def rate(run: Run, cells: Cells, batch: int, seconds: float) -> float:
    """Images per second over at least `seconds`, cycling through `cells`, after one warm-up batch."""
    batches = [cells[i : i + batch] for i in range(0, len(cells) - batch + 1, batch)] or [cells]
    run(batches[0])
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for chunk in batches:
            run(chunk)
            images += len(chunk)
    return images / (time.perf_counter() - start)


def best_rates(runs: dict[str, Run], cells: Cells, batch: int, seconds: float, repeats: int) -> dict[str, float]:
    """The best of `repeats` rates of each path, the paths taking turns so that a busy spell hits them alike."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for path, run in runs.items():
            best[path] = max(best[path], rate(run, cells, batch, seconds))
    return best


def difference(processor: CLIPImageProcessorPil, transform: PixelTransform, cells: Cells) -> dict[str, float]:
    """Mean and max |difference| from the processor's pixel_values (normalised units; one uint8 level is ~0.015)."""
    absolute = (transform(cells) - processor_path(processor)(cells)).abs()
    return {"mean_abs": float(absolute.mean()), "max_abs": float(absolute.max())}


def measure(args: argparse.Namespace, pre_resize: int) -> dict[str, Any]:
    """Rates and differences from the processor for every input and path."""
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": args.size},
        crop_size={"height": args.size, "width": args.size},
        resample=PILImage.Resampling.BICUBIC,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    transforms = {f"draft={draft}": PixelTransform.from_processor(processor, draft=draft) for draft in (False, True)}
    runs = {"processor": processor_path(processor), **transforms}
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work_dir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        sets = inputs(work, args.tiles, args.per_size, pre_resize)
    results: dict[str, Any] = {}
    for name, cells in sets.items():
        rates = best_rates(runs, cells, args.batch, args.seconds, args.repeats)
        fastest = max(rates, key=rates.__getitem__)
        results[name] = {
            "images": len(cells),
            "kb_per_image": sum(len(c["bytes"]) for c in cells) / len(cells) / 1024,
            "images_per_second_per_core": rates,
            "fastest_path": fastest,
            "difference_from_processor": {
                path: difference(processor, transform, cells[: args.batch]) for path, transform in transforms.items()
            },
        }
        if args.train_images_per_second:
            per_core, train = rates[fastest], args.train_images_per_second
            results[name]["feeding"] = {
                "cores_needed": train / per_core,
                "ratio_8_cores": 8 * per_core / train,
                "ratio_16_cores": 16 * per_core / train,
            }
    return results


def print_tables(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print(f"# Image pipeline on one core: CLIP preprocessing to {args.size}x{args.size} (shortest edge, centre crop,")
    print(f"# bicubic, OpenAI mean/std), batch {args.batch}, images/s/core, best of {args.repeats} x {args.seconds:g} s")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}\n")
    print("| input | KB/image | processor | PixelTransform draft=False | PixelTransform draft=True | best vs processor "
          "| draft=True mean / max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        rates, diff = r["images_per_second_per_core"], r["difference_from_processor"]["draft=True"]
        print(f"| {name} | {r['kb_per_image']:.0f} | " + " | ".join(f"{rates[p]:.1f}" for p in PATHS)
              + f" | {rates[r['fastest_path']] / rates['processor']:.1f}x | {diff['mean_abs']:.4f} / {diff['max_abs']:.3f} |")
    worst = max(r["difference_from_processor"]["draft=False"]["max_abs"] for r in results.values())
    print(f"\ndraft=False vs processor: max abs diff {worst:.2e} (first batch of each input)")

    train = args.train_images_per_second
    header = "| input (fastest path) | images/s/core | 8 cores feed up to | 16 cores feed up to |"
    print("\n" + header + (f" cores for {train:g} images/s | ratio, 8 cores | ratio, 16 cores |" if train else ""))
    print("|---|---:|---:|---:|" + ("---:|---:|---:|" if train else ""))
    for name, r in results.items():
        per_core = r["images_per_second_per_core"][r["fastest_path"]]
        row = f"| {name} ({r['fastest_path']}) | {per_core:.1f} | {8 * per_core:.0f} | {16 * per_core:.0f} |"
        if train:
            f = r["feeding"]
            row += f" {f['cores_needed']:.1f} | {f['ratio_8_cores']:.2f} | {f['ratio_16_cores']:.2f} |"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="Output side: 224 (ViT-B/32, B/16) or 336 (ViT-L/14-336).")
    parser.add_argument("--pre_resize", type=int, help="Shortest side of the pre-resized JPEGs (default 256, or --size).")
    parser.add_argument("--tiles", type=int, default=32, help="Sample-world tiles for the ChatEarthNet split.")
    parser.add_argument("--per_size", type=int, default=16, help="GAIA-like JPEGs written per original size.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0, help="Timing per run of a path on an input.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per path and input; the fastest counts.")
    parser.add_argument("--train_images_per_second", type=float, help="Training rate to feed (benchmarks/train_clip.py).")
    parser.add_argument("--work_dir", type=Path, help="Where the Parquet files go (default: a temporary folder).")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    pre_resize = args.pre_resize or max(256, args.size)
    torch.set_num_threads(1)
    disable_progress_bars()

    results = measure(args, pre_resize)
    print_tables(args, results)
    if args.out:
        report = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "pre_resize": pre_resize,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "inputs": results,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
