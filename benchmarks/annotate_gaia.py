"""Benchmark `earthvl annotate gaia`: records/s end to end against a local OpenAI-compatible server, and the dedup
step's images/s.

    python benchmarks/annotate_gaia.py --records 300 --dedup_images 2000 --out annotate_gaia.json

- records/s: --records scraped records with distinct local PNGs (--side px) and 60-word articles, annotated through
  `annotate_gaia` (clean, dedup, summarise, annotate, geocode from a gazetteer, split, write) against the scripted
  OpenAI-compatible server of the tests (`tests/gaia_scrape_world.py`, answers at once: what is measured is the
  pipeline, not a model) with --concurrency requests in flight; a cold run, then a warm re-run (every answer cached).
- dedup images/s: --dedup_images local JPEGs (--side px, 1 in 10 a re-encoded near-duplicate) through
  `dedup.deduplicate` (copy + sha256, perceptual hashes, near-duplicate search), and the hashing alone.
Paste the printed table into BENCHMARKS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from gaia_scrape_world import PLACES, ScriptedChatServer, article, encoded  # noqa: E402

from earthvl.builders.download.policy import FetchPolicy  # noqa: E402
from earthvl.builders.gaia.annotate import dedup  # noqa: E402
from earthvl.builders.gaia.annotate.options import AnnotateGaiaArguments  # noqa: E402
from earthvl.builders.gaia.annotate.pipeline import annotate_gaia  # noqa: E402
from earthvl.builders.gaia.annotate.records import Record  # noqa: E402
from earthvl.builders.gaia.annotate.report import AnnotationReport  # noqa: E402
from earthvl.llm.options import BackendArguments  # noqa: E402


def picture(seed: int, side: int) -> Image.Image:
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)


def records_world(root: Path, count: int, side: int) -> tuple[Path, Path]:
    places = list(PLACES)
    rows = []
    for i in range(count):
        (root / f"{i}.png").write_bytes(encoded(picture(i, side)))
        place = places[i % len(places)]
        rows.append({"id": i, "image_src": f"{i}.png", "article": article(place, 60), "date": f"2024-{i % 12 + 1:02d}-10"})
    records = root / "records.jsonl"
    records.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows), encoding="utf-8")
    gazetteer = root / "places.json"
    gazetteer.write_text(json.dumps({name: list(point) for name, point in PLACES.items()}), encoding="utf-8")
    return records, gazetteer


def bench_records(count: int, side: int, concurrency: int, work: Path) -> dict:
    records, gazetteer = records_world(work, count, side)
    server = ScriptedChatServer()
    try:
        runs = {}
        for run in ("cold", "warm"):
            args = AnnotateGaiaArguments(records=str(records), out=str(work / "out"), gazetteer=str(gazetteer), quiet=True)
            options = BackendArguments(backend="openai", model="scripted", base_url=server.base_url,
                                       concurrency=concurrency, max_retries=0)
            start = time.perf_counter()
            report = annotate_gaia(args, options)
            seconds = time.perf_counter() - start
            kept = sum(report["steps"]["split"][split] for split in ("train", "validation", "test"))
            runs[run] = {"records": count, "kept": kept, "seconds": round(seconds, 2),
                         "records_per_s": round(count / seconds, 1), "requests": report["usage"]["total"]["requests"],
                         "annotate_requests_per_s": report["usage"]["annotate"].get("requests")
                         and round(report["usage"]["annotate"]["requests"] / report["usage"]["annotate"]["seconds"], 1)}
        return runs
    finally:
        server.close()


def bench_dedup(count: int, side: int, work: Path) -> dict:
    source = work / "dedup-src"
    source.mkdir()
    records = []
    for i in range(count):
        image = picture((i - 1 if i % 10 == 9 else i) + count, side)  # every tenth re-encodes the scene before it
        path = source / f"{i}.jpg"
        image.save(path, quality=80 if i % 10 == 9 else 92)
        records.append(Record(id=i, image_src=str(path), text="word " * (i % 7)))
    start = time.perf_counter()
    kept = dedup.deduplicate(records, work / "dedup-images", FetchPolicy(), AnnotationReport("bench"),
                             max_pixels=2**27, progress=False)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    dedup.hash_images(kept, AnnotationReport("bench"), 2**27)
    hashing = time.perf_counter() - start
    return {"images": count, "kept": len(kept), "seconds": round(whole, 2), "images_per_s": round(count / whole, 1),
            "hash_only_images_per_s": round(len(kept) / hashing, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--dedup_images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=512, help="Image side in pixels.")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", default=None, help="Also write the numbers as JSON here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "records").mkdir()
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "annotate": bench_records(args.records, args.side, args.concurrency, work / "records"),
            "dedup": bench_dedup(args.dedup_images, args.side, work),
        }
    print("| run | records | kept | requests | s | records/s | annotate requests/s |\n|---|---:|---:|---:|---:|---:|---:|")
    for run, row in results["annotate"].items():
        print(f"| {run} | {row['records']} | {row['kept']} | {row['requests']} | {row['seconds']} | "
              f"{row['records_per_s']} | {row['annotate_requests_per_s']} |")
    d = results["dedup"]
    print(f"\n| dedup | images | kept | s | images/s | hashing alone images/s |\n|---|---:|---:|---:|---:|---:|\n"
          f"| {args.side}px JPEG | {d['images']} | {d['kept']} | {d['seconds']} | {d['images_per_s']} | "
          f"{d['hash_only_images_per_s']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
