"""Benchmark: building and reading the multispectral ChatEarthNet config from the sample world's Zenodo zips.

    python benchmarks/build_chatearthnet.py --tiles 128 --out /tmp/bench

Build speed is rows per second (and per core used) for earthvl's builder with one process and with a worker
process per core (chunks of 256 records, so that a small world keeps them busy), best of `--repeats` runs each (card and figures included), against a naive baseline that decodes each PNG with PIL and lets `datasets` re-encode it. Reading is decoded
training rows per second (nine bands stacked into a (9, H, W) array) from the built folder with two DataLoader
workers. Paste the printed table into BENCHMARKS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import time
import zipfile
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from PIL import Image

from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet import build
from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.builders.chatearthnet.features import stack_bands
from earthvl.builders.chatearthnet.features import BAND_COLUMNS, features_for
from earthvl.builders.folder import default_num_proc
from earthvl.sample import generate_sample

CONFIG = "gpt35-multispectral"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def naive_build(zips: Path, out: Path) -> int:
    """Decode every PNG with PIL and let `datasets` re-encode it (what a loading script typically did)."""
    archives = {group: zipfile.ZipFile(zips / layout.ZIP_NAMES[group]) for group in BAND_COLUMNS}
    members = {group: {n.rsplit("/", 1)[-1]: n for n in a.namelist()} for group, a in archives.items()}
    records = json.loads(zipfile.ZipFile(zips / layout.ZIP_NAMES["json"]).read(f"{layout.json_path('gpt35', 'train')}"))

    def rows():
        for record in records:
            name = record.get("image", record.get("image_id"))
            caption = record["caption"][0] if isinstance(record["caption"], list) else record["caption"]
            tile_x, tile_y, patch = layout.parse_patch_file_name(name)
            lat, lon = layout.patch_center(tile_x, tile_y, patch)
            images = {
                column: Image.open(io.BytesIO(archives[group].read(members[group][name]))).convert("RGB")
                for group, column in BAND_COLUMNS.items()
            }
            blank = images["image"].getextrema() in (((0, 0),) * 3, ((255, 255),) * 3)
            yield {**images, "caption": caption, "file_name": name, "tile_x": tile_x, "tile_y": tile_y,
                   "patch": patch, "lat": lat, "lon": lon, "is_nodata": blank}

    dataset = Dataset.from_generator(rows, features=features_for(True), cache_dir=str(out / "cache"))
    out.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(out / "train.parquet"))
    return len(dataset)


def collate(rows: list[dict]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(stack_bands(row)) for row in rows])


def read_rate(folder: Path, cache: Path, workers: int, seconds: float) -> float:
    dataset = load_dataset(str(folder), CONFIG, split="train", cache_dir=str(cache))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=workers, collate_fn=collate, shuffle=True)
    rows, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in loader:
            assert batch.shape[1:] == (9, layout.PATCH_SIZE, layout.PATCH_SIZE)
            rows += batch.shape[0]
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=128, help="Sample-world tiles (4 patches each).")
    parser.add_argument("--out", type=Path, default=Path("bench-chatearthnet"))
    parser.add_argument("--read_seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="Builds per earthvl variant; the fastest counts.")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    world = generate_sample(args.out / "world", tiles=args.tiles, seed=0, gaia_images=3, zip_archives=True, progress=False)
    zips = world.root / "chatearthnet_zenodo"
    cores = default_num_proc()
    results: dict[str, dict[str, float]] = {}

    build.CHUNK_RECORDS = 256  # enough chunks to keep every worker busy on a small world
    for name, num_proc in (("earthvl, 1 process", 1), (f"earthvl, {cores} worker processes", cores)):
        out = args.out / f"built-{num_proc}"
        seconds = math.inf
        for _ in range(args.repeats):  # best of N: the first run also pays for imports and a cold page cache
            start = time.perf_counter()
            report = build_chatearthnet(zips, out, configs=CONFIG, splits="train", progress=False, num_proc=num_proc)
            seconds = min(seconds, time.perf_counter() - start)
        rows = report["rows"][CONFIG]["train"]
        results[name] = {"rows": rows, "seconds": seconds, "processes": num_proc, "bytes_per_row": folder_bytes(out) / rows}

    start = time.perf_counter()
    rows = naive_build(zips, args.out / "naive")
    seconds = time.perf_counter() - start
    results["naive (PIL decode, datasets re-encode)"] = {
        "rows": rows, "seconds": seconds, "processes": 1, "bytes_per_row": folder_bytes(args.out / "naive") / rows
    }
    naive_rate = rows / seconds

    print(f"# ChatEarthNet {CONFIG} build, train split of a {args.tiles}-tile sample world")
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, {os.cpu_count()} CPUs; torch {torch.__version__}")
    print("| builder | rows | s | rows/s | rows/s/core | vs naive | MB/row on disk |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        rate = r["rows"] / r["seconds"]
        print(f"| {name} | {r['rows']:.0f} | {r['seconds']:.2f} | {rate:.1f} | {rate / r['processes']:.1f} | "
              f"{rate / naive_rate:.1f}x | {r['bytes_per_row'] / 2**20:.3f} |")

    built = args.out / f"built-{cores}"
    print("\n| reading (9 bands stacked, batch 16) | rows/s |\n|---|---:|")
    for workers in (0, 2):
        print(f"| {workers} DataLoader workers | {read_rate(built, args.out / 'hf-cache', workers, args.read_seconds):.1f} |")


if __name__ == "__main__":
    main()
