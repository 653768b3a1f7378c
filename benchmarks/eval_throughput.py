"""Benchmark: CLIP embedding against a plain batched forward, batched vs one-image-at-a-time caption generation
(tiny-llava end to end, and LLaVA-1.5-7B shapes with the batch chosen from memory), zero-shot classification.

    python benchmarks/eval_throughput.py --out eval_throughput.json                      # CPU: tiny models
    python benchmarks/eval_throughput.py --measure embed classify --out eval_embed.json   # GPU: ViT-B/32 shapes
    python benchmarks/eval_throughput.py --measure llava7b --out eval_llava7b.json        # GPU: LLaVA-1.5-7B shapes

--measure picks what runs (default: embed classify caption caption-e2e; llava7b only when named):
- embed: `earthvl.models.clip.image_embeddings` and `text_embeddings` (what `earthvl eval classify|retrieve` call) on
  --clip_model, against plain batched forwards at the same batch size and dtype (bfloat16 on a GPU, as `earthvl eval`
  loads CLIP there; float32 on the CPU). Images: --embed_images random pixel tensors in host memory, pinned on a GPU
  (as the evaluation's DataLoader pins them) and also pageable; plain = `get_image_features` on the same batches
  already on the device. Texts: --embed_texts sample ChatEarthNet captions cut to 77 tokens (`long_text=truncate`,
  the retrieval default): ours tokenises inside the timing; plain = the tokenizer's padded batches (with their
  attention mask) already on the device, and a plain loop that tokenises each batch itself. Best of --repeats, the
  GPU synchronised at the end of each pass (the embeddings read back).
- classify: `earthvl eval classify` end to end (decoding in --num_workers workers, exact CLIP preprocessing) on the
  sample world's `scenes` folder repeated to --classify_images rows, images/s.
- caption, caption-e2e: tiny-llava (--caption_model) on the first --images ChatEarthNet train images, batches of
  --batch_size against one at a time (the texts must be identical), generation alone and `earthvl eval caption` with
  the `hf` protocol end to end.
- llava7b: random bfloat16 weights with the shapes of llava-hf/llava-1.5-7b-hf built on the device (tiny-llava's
  processor at 336 px: 576 image tokens, as `benchmarks/train_vlm.py` does), `LlavaGenerator` with exactly
  --llava_new_tokens new tokens a row: a batch of `batch_from_memory()` images (the rows whose KV cache fits in 80%
  of the free memory: what `earthvl eval caption` picks on a GPU without --batch_size) against --llava_single images
  one at a time; tokens/s generated, peak memory. Without CUDA it runs tiny-llava's own shapes (a smoke test).

--clip_model: b32 / l14 / l14-336 (the shapes of `benchmarks/train_clip.py`, random weights written to --work_dir), a
Hub id or folder, or tiny-clip (default without CUDA). Paste the printed tables into BENCHMARKS.md with the machine
and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from datasets import concatenate_datasets, disable_progress_bars
from PIL import Image

from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.data import load_split
from earthvl.eval.arguments import CaptionArguments, ClassifyArguments, EvalArguments
from earthvl.eval.batches import Failures, decoded_batches
from earthvl.eval.benchmarks import load_benchmark
from earthvl.eval.generation import LlavaGenerator, generate_all
from earthvl.eval.eval_model import load_eval_model
from earthvl.eval.run import evaluate
from earthvl.eval.tasks import image_decoder
from earthvl.models.clip import TextChunker, image_embeddings, text_embeddings, text_limit
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.sample import generate_sample
from train_clip import SHAPES, write_checkpoint  # the sibling benchmark's CLIP shapes

MEASURES = ("embed", "classify", "caption", "caption-e2e", "llava7b")


def _best(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def _synchronised(run: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """`run`, its result read back to the host (so the timing covers the device's work)."""
    return lambda: run().cpu()


def clip_model(args: argparse.Namespace) -> str:
    """The --clip_model as a loadable name: the benchmark shapes are written to --work_dir once."""
    if args.clip_model in SHAPES:
        return write_checkpoint(args.clip_model, args.work_dir / f"model-{args.clip_model}")
    return args.clip_model


def embedding(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """earthvl's image and text embedding against plain batched forwards (see the module docstring)."""
    model = load_eval_model(clip_model(args), task="classify", device=args.device)
    clip, device, batch = model.model, torch.device(args.device), args.embed_batch_size
    side = clip.config.vision_config.image_size
    generator = torch.Generator(device).manual_seed(0)  # drawn on the device: seconds faster for gigabytes
    on_device = torch.randn(args.embed_images, 3, side, side, device=device, generator=generator)
    pixels = on_device.cpu()
    pinned = pixels.pin_memory() if device.type == "cuda" else pixels
    on_device = on_device.to(clip.dtype)

    @torch.no_grad()
    def plain_images() -> torch.Tensor:
        return torch.cat([clip.get_image_features(pixel_values=b).pooler_output for b in on_device.split(batch)])

    captions = load_split(str(folder), "gpt35", "train")["caption"]
    texts = [captions[i % len(captions)] for i in range(args.embed_texts)]
    tokenizer = model.processor.tokenizer
    limit = text_limit(clip, tokenizer)
    chunker = TextChunker(tokenizer, limit, mode="truncate")

    def tokenise(part: list[str]) -> dict[str, torch.Tensor]:
        return tokenizer(part, padding=True, truncation=True, max_length=limit, return_tensors="pt")

    tokenised = [{k: v.to(device) for k, v in tokenise(texts[i : i + batch]).items()} for i in range(0, len(texts), batch)]

    @torch.no_grad()
    def plain_texts() -> torch.Tensor:
        return torch.cat([clip.get_text_features(**tokens).pooler_output for tokens in tokenised])

    @torch.no_grad()
    def plain_texts_tokenising() -> torch.Tensor:
        parts = []
        for i in range(0, len(texts), batch):
            tokens = {k: v.to(device) for k, v in tokenise(texts[i : i + batch]).items()}
            parts.append(clip.get_text_features(**tokens).pooler_output)
        return torch.cat(parts)

    runs = {
        "images_earthvl": lambda: image_embeddings(clip, pinned, batch),
        "images_earthvl_pageable": lambda: image_embeddings(clip, pixels, batch),
        "images_plain_on_device": plain_images,
        "texts_earthvl": lambda: text_embeddings(clip, chunker, texts, batch),
        "texts_plain_on_device": plain_texts,
        "texts_plain_tokenising": plain_texts_tokenising,
    }
    seconds = {}
    for name, run in runs.items():
        run()  # warm-up: kernels chosen, attention planned, memory cached
        seconds[name], _ = _best(_synchronised(run), args.repeats)
    rates = {name: (args.embed_images if name.startswith("images") else args.embed_texts) / value for name, value in seconds.items()}
    with torch.no_grad():
        same_images = torch.nn.functional.cosine_similarity(runs["images_earthvl"]().float(), plain_images().float()).min()
        same_texts = torch.nn.functional.cosine_similarity(runs["texts_earthvl"]().float(), plain_texts().float()).min()
    return {
        "model": args.clip_model, "dtype": str(clip.dtype), "batch_size": batch, "images": args.embed_images,
        "texts": args.embed_texts, "per_second": rates,
        "images_of_plain": rates["images_earthvl"] / rates["images_plain_on_device"],
        "texts_of_plain": rates["texts_earthvl"] / rates["texts_plain_on_device"],
        "texts_of_plain_tokenising": rates["texts_earthvl"] / rates["texts_plain_tokenising"],
        "min_cosine_to_plain": {"images": float(same_images), "texts": float(same_texts)},
    }


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


def llava7b_generation(args: argparse.Namespace) -> dict[str, Any]:
    """LLaVA-1.5-7B shapes: tokens/s generated in a batch chosen from memory vs one image at a time."""
    from transformers import LlavaForConditionalGeneration
    from train_vlm import model_and_processor  # the sibling benchmark's LLaVA-1.5-7B config and 336 px processor

    cuda = torch.device(args.device).type == "cuda"
    config, processor = model_and_processor(smoke=not cuda)
    with torch.device(args.device):  # random weights made on the device: seconds for 7B, nothing written to disk
        model = LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    model.eval()
    new_tokens = args.llava_new_tokens
    generator = LlavaGenerator(model, processor, CAPTION_INSTRUCTION, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(8)]
    generator(images[:1])  # warm-up
    free = torch.cuda.mem_get_info(model.device)[0] if cuda else None
    rows = generator.batch_from_memory() if cuda else args.batch_size
    batch = [images[i % len(images)] for i in range(rows)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    batched_seconds, _ = _best(lambda: generator(batch), 1)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    single_seconds, _ = _best(lambda: [generator([image]) for image in images[: args.llava_single]], 1)
    batched_rate = rows * new_tokens / batched_seconds
    single_rate = args.llava_single * new_tokens / single_seconds
    return {
        "shapes": "llava-1.5-7b" if cuda else "tiny-llava", "prompt_tokens": generator.prompt_tokens(),
        "new_tokens_per_row": new_tokens, "free_gib_before": free / 2**30 if cuda else None,
        "batch_from_memory": rows if cuda else None, "batch_size": rows, "peak_gib": peak,
        "batched_seconds": batched_seconds, "batched_tokens_per_second": batched_rate,
        "single_images": args.llava_single, "single_seconds": single_seconds, "single_tokens_per_second": single_rate,
        "speedup": batched_rate / single_rate,
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
        model=clip_model(args), dataset=str(parquet.parent.parent), split="train", device=args.device,
        out=str(out / "classify.json"), num_workers=args.num_workers,
    )  # fmt: skip
    task_args = ClassifyArguments(class_names=benchmark.class_names, templates=list(benchmark.templates))
    seconds, results = _best(lambda: evaluate("classify", eval_args, task_args), args.repeats)
    samples = results["dataset"]["num_samples"]
    return {
        "model": args.clip_model, "images": samples, "seconds": seconds, "images_per_second": samples / seconds,
        "num_workers": args.num_workers, "batch_size": results["settings"]["batch_size"],
    }


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="eval_throughput.json")
    parser.add_argument("--measure", nargs="+", choices=MEASURES, default=["embed", "classify", "caption", "caption-e2e"])
    parser.add_argument("--tiles", type=int, default=24)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--classify_images", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16, help="Caption batches (and llava7b's without CUDA).")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--caption_model", default="tiny-llava")
    parser.add_argument("--clip_model", default="b32" if cuda else "tiny-clip")
    parser.add_argument("--embed_images", type=int, default=4096 if cuda else 256)
    parser.add_argument("--embed_texts", type=int, default=8192 if cuda else 512)
    parser.add_argument("--embed_batch_size", type=int, default=256, help="As `earthvl eval` embeds CLIP batches.")
    parser.add_argument("--llava_new_tokens", type=int, default=64 if cuda else 8)
    parser.add_argument("--llava_single", type=int, default=4 if cuda else 2, help="Images generated one at a time.")
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/earthvl-bench-eval"), help="CLIP checkpoints.")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    args = parser.parse_args()
    disable_progress_bars()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "device": args.device,
                    "gpu": torch.cuda.get_device_name() if cuda else None},
        "versions": {"torch": torch.__version__},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if set(args.measure) - {"llava7b"}:
            world = generate_sample(tmp / "world", tiles=args.tiles, seed=0, progress=False)
            build_chatearthnet(world.chatearthnet.root, tmp / "cen", configs="gpt35", progress=False, num_proc=1)
        measures = {
            "embed": lambda: embedding(args, tmp / "cen"),
            "classify": lambda: classification(args, tmp / "world" / "scenes", tmp),
            "caption": lambda: caption_generation(args, tmp / "cen"),
            "caption-e2e": lambda: caption_end_to_end(args, tmp / "cen", tmp),
            "llava7b": lambda: llava7b_generation(args),
        }
        for name in args.measure:
            started_measure = time.perf_counter()
            report[name] = measures[name]()
            report[name]["wall_seconds"] = time.perf_counter() - started_measure
    report["wall_seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"# eval_throughput on {report['machine']['gpu'] or 'CPU'}: {', '.join(args.measure)}; "
          f"total wall time {report['wall_seconds']:.1f} s")
    print(tables(report))


def tables(report: dict[str, Any]) -> str:
    """The printed summary of whichever measures ran."""
    lines = []
    if "embed" in report:
        embed, rates = report["embed"], report["embed"]["per_second"]
        lines += [f"\nCLIP embedding, {embed['model']} ({embed['dtype']}), batch {embed['batch_size']}:",
                  "| what | earthvl /s | plain forward, data on the device /s | of plain | other |", "|---|---:|---:|---:|---|",
                  f"| {embed['images']} images | {rates['images_earthvl']:,.0f} | {rates['images_plain_on_device']:,.0f} "
                  f"| {100 * embed['images_of_plain']:.0f}% | pageable input: {rates['images_earthvl_pageable']:,.0f}/s |",
                  f"| {embed['texts']} captions (truncate) | {rates['texts_earthvl']:,.0f} | {rates['texts_plain_on_device']:,.0f} "
                  f"| {100 * embed['texts_of_plain']:.0f}% | plain loop tokenising each batch: "
                  f"{rates['texts_plain_tokenising']:,.0f}/s ({100 * embed['texts_of_plain_tokenising']:.0f}%) |",
                  f"min cosine earthvl vs plain: images {embed['min_cosine_to_plain']['images']:.4f}, "
                  f"texts {embed['min_cosine_to_plain']['texts']:.4f}"]
    if "classify" in report:
        cls = report["classify"]
        lines.append(f"\n`earthvl eval classify` ({cls['model']}, batch {cls['batch_size']}, {cls['num_workers']} workers): "
                     f"{cls['images_per_second']:,.0f} images/s over {cls['images']} images")
    if "caption" in report or "caption-e2e" in report:
        lines += ["\n| measurement | batched | one at a time | speedup |", "|---|---:|---:|---:|"]
    if "caption" in report:
        gen = report["caption"]
        lines.append(f"| caption generation, {gen['images']} images x {gen['max_new_tokens']} tokens (s) | "
                     f"{gen['batched_seconds']:.2f} | {gen['single_seconds']:.2f} | {gen['speedup']:.1f}x |")
    if "caption-e2e" in report:
        e2e = report["caption-e2e"]
        lines.append(f"| `earthvl eval caption` end to end, hf protocol (s) | {e2e['batched_seconds']:.2f} | "
                     f"{e2e['single_seconds']:.2f} | {e2e['speedup']:.1f}x |")
    if "caption" in report:
        lines.append(f"identical texts batched vs single: {report['caption']['identical_texts']}/{report['caption']['images']}")
    if "llava7b" in report:
        gen = report["llava7b"]
        memory = f", {gen['free_gib_before']:.0f} GiB free before, peak {gen['peak_gib']:.1f} GiB" if gen["peak_gib"] else ""
        lines += [f"\nLLaVA generation ({gen['shapes']} shapes, {gen['prompt_tokens']} prompt tokens, "
                  f"{gen['new_tokens_per_row']} new tokens a row{memory}):",
                  "| | images | s | tokens/s |", "|---|---:|---:|---:|",
                  f"| batch {'from memory' if gen['batch_from_memory'] else '(fixed)'} | {gen['batch_size']} "
                  f"| {gen['batched_seconds']:.2f} | {gen['batched_tokens_per_second']:,.0f} |",
                  f"| one at a time | {gen['single_images']} | {gen['single_seconds']:.2f} "
                  f"| {gen['single_tokens_per_second']:,.0f} |",
                  f"speedup {gen['speedup']:.1f}x"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
