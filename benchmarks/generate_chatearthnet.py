"""Benchmark: `earthvl generate chatearthnet` throughput, offline.

    python benchmarks/generate_chatearthnet.py --tiles 64 --out /tmp/bench-gen
    python benchmarks/generate_chatearthnet.py --tiles 8 --server --concurrency 1 4 --out /tmp/bench-gen

Template backend: patches per second end to end (map reading, statistics, rendering, image copies, JSON), best of
`--repeats` runs. With `--server`: requests per second of the openai backend against a real `transformers serve`
with the tiny LLaVA on loopback (CPU), gpt35 style, for each `--concurrency`, with a fresh cache each time; the
server's own generation speed dominates, so this measures earthvl's overhead and scaling, not a model. Paste the
printed table into BENCHMARKS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from PIL import Image

from earthvl.builders.chatearthnet.generation import colour_map
from earthvl.generate.chatearthnet import GenerateOptions, generate_chatearthnet
from earthvl.llm.options import BackendArguments
from earthvl.models.tiny import long_context_copy
from earthvl.sample.chatearthnet import write_chatearthnet


def inputs(root: Path, tiles: int) -> tuple[Path, Path, int]:
    world = write_chatearthnet(root / "world", tiles, 0, keep_label_maps=True, progress=False)
    labels = root / "labels"
    labels.mkdir(exist_ok=True)
    for patch in world.patches:
        Image.fromarray(colour_map(patch.label_map)).save(labels / patch.file_name)
    return world.root, labels, len(world.patches)


def timed(images: Path, labels: Path, out: Path, styles: list[str], backend: BackendArguments) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)  # a fresh cache: every request is made
    start = time.perf_counter()
    report = generate_chatearthnet(images, labels, out, GenerateOptions(styles=styles, progress=False), backend)
    return time.perf_counter() - start, report


def start_server(port: int, model: str) -> subprocess.Popen:
    process = subprocess.Popen(
        ["transformers", "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"},
    )
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    raise SystemExit("transformers serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--server", action="store_true", help="Also measure the openai backend against transformers serve.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max_tokens", type=int, default=16)
    parser.add_argument("--port", type=int, default=18777)
    args = parser.parse_args()
    images, labels, patches = inputs(args.out, args.tiles)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {patches} patches")
    print("| backend | styles | setting | patches | seconds | patches/s | requests/s |")
    print("|---|---|---|---|---|---|---|")
    for styles in (["gpt35"], ["gpt35", "gpt4v"]):
        best = min(timed(images, labels, args.out / "template", styles, BackendArguments())[0] for _ in range(args.repeats))
        print(f"| template | {'+'.join(styles)} | - | {patches} | {best:.2f} | {patches / best:.1f} | - |")
    if args.server:
        model = long_context_copy("tiny-llava", args.out / "tiny-llava-4k")
        server = start_server(args.port, model)
        try:
            for concurrency in args.concurrency:
                backend = BackendArguments(backend="openai", base_url=f"http://127.0.0.1:{args.port}/v1",
                                           model=model, concurrency=concurrency,
                                           max_tokens=args.max_tokens, seed=0)
                seconds, report = timed(images, labels, args.out / f"server-{concurrency}", ["gpt35"], backend)
                requests, failed = (report["accounting"]["gpt35"][k] for k in ("requests", "failed"))
                print(f"| openai (transformers serve, tiny LLaVA, CPU) | gpt35 | concurrency {concurrency}, "
                      f"max_tokens {args.max_tokens}, {failed} failed | {patches} | {seconds:.2f} | "
                      f"{patches / seconds:.1f} | {requests / seconds:.2f} |")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
