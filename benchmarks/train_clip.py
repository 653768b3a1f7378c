"""Benchmark: CLIP contrastive fine-tuning throughput as `earthvl train clip --config clip/gaia` trains, beside a
plain-loop ceiling at the same shapes, and the rate of its data pipeline alone.

    python benchmarks/train_clip.py --model b32 --out train_clip.json   # GPU: ViT-B/32 shapes, recipe vs old recipe
    python benchmarks/train_clip.py --model b32 l14 l14-336 --variants earthvl checkpointing
    python benchmarks/train_clip.py --smoke --out smoke.json            # CPU (the default without CUDA): tiny-clip

Models: the shapes of openai/clip-vit-base-patch32 (= `transformers.CLIPConfig()`'s defaults), clip-vit-large-patch14
and -patch14-336, random float32 weights saved once as safetensors in --work_dir and loaded by `load_clip`; tiny-clip's
tokenizer (byte-level BPE trained on the sample world's texts, 77 tokens, its `</s>` the config's eos where the text
tower pools) and a `CLIPImageProcessorPil` at the model's size. `--smoke` trains tiny-clip itself (64 px, 2 layers).

Data: the train split of a sample world as ChatEarthNet `gpt35` (a long caption per 256 px PNG, which
`long_text=chunks` splits into several 77-token sequences) or GAIA `default` (five captions per 512 px JPEG); at most
--unique_rows rows, listed in the mixture as often as the batches need (repeats are decoded and tokenised anew).

Training: the `clip/gaia` recipe through `earthvl train clip`'s parser (bf16, fused AdamW, both towers,
`synthetic-mean`, pinned memory, non-blocking copies, persistent workers) with max_steps = warmup + steps, no evaluation
or saving, --batch_size (128) and --workers, and each of --variants' overrides (`VARIANTS`); the trainer built as
`earthvl.train.clip.main` builds it, minus its text-fit log and final save (`no-cudnn-attention` also switches
PyTorch's cuDNN attention backend off, for the trainer and its ceiling: issue 20's profile found each cuDNN attention
call costing ~1.7 ms of host time). Measured: images/s over --steps optimizer
steps after --warmup (GPU synchronised at both ends), per GPU, peak GPU memory from model load on; the pipeline alone:
the trainer's own train DataLoader (sampler, collator, workers, pinned memory, device placement) without the model,
--steps batches timed after the whole rounds of `workers` batches covering --warmup (so no batch made before the
window counts in it), which also records the batches' text shapes. Pipeline/training >= 1: the workers keep the GPU
fed; cores to keep up = training images/s per GPU / pipeline images/s per worker (a worker a core; the main process,
which pins and copies batches, aside).

Ceiling, beside each row: a plain loop (no Trainer, no DataLoader) over random data already on the device with the
row's shapes (its batch of images, and the number of text sequences its batches had most often, 77 tokens each):
the same checkpoint as `CLIPModel`, bf16 autocast, fused AdamW, the same loss; --warmup then --steps steps, timed
the same way. The row's share of it is what the trainer, its data and its padding leave of the hardware's rate.

Without CUDA both the trainer and the ceiling run in float32 (bf16 autocast on a CPU without bf16 instructions is
emulated and several times slower): in --smoke mode the two then differ by the trainer's host time per step.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig
from transformers import AutoTokenizer, TrainerCallback
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.builders.gaia.build import build_gaia
from earthvl.models.clip import TextChunker, load_clip, mean_embeddings, text_limit
from earthvl.models.pixels import PixelTransform
from earthvl.model_names import resolve_model
from earthvl.recipes import recipe_path
from earthvl.sample import generate_sample
from earthvl.scripts.train_clip import make_parser
from earthvl.train.caption_rows import caption_texts, load_caption_rows
from earthvl.train.clip import TEXT_FIT_ROWS, ClipTrainer
from earthvl.train.collate import ClipCollator
from earthvl.train.foundation import EpochCallback, mix
from earthvl.train.losses import contrastive_loss

VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14)
TEXT_L14 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
SHAPES: dict[str, tuple[dict[str, int], dict[str, int], int]] = {  # vision, text, projection_dim
    "b32": (dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32,
                 image_size=224), dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                       num_attention_heads=8), 512),
    "l14": ({**VIT_L14, "image_size": 224}, TEXT_L14, 768),
    "l14-336": ({**VIT_L14, "image_size": 336}, TEXT_L14, 768),
}
ROWS_PER_ITEM = {"chatearthnet": 4 * 0.6, "gaia": 0.7 * 0.96}  # train rows per tile (4 patches) / per GAIA image
SPECS = {"chatearthnet": "chatearthnet:gpt35", "gaia": "gaia:default"}
CUDNN_ATTENTION = "cudnn_attention"
"""A variant key the benchmark applies itself (`torch.backends.cuda.enable_cudnn_sdp`), to the trainer and its ceiling."""
VARIANTS: dict[str, dict[str, Any]] = {  # overrides of the clip/gaia recipe, as `earthvl train clip` options
    "earthvl": {},
    "checkpointing": {"activation_checkpointing": True},
    "per-batch-shapes": {"text_sequence_multiple": 1},
    "no-cudnn-attention": {CUDNN_ATTENTION: False},  # the recipe, with PyTorch's cuDNN attention backend switched off
    # the recipe before issue 20 (the padding mask, which the text tower never needed, is not passed any more)
    "old-recipe": {"text_sequence_multiple": 1, "activation_checkpointing": True, "optim": "adamw_torch",
                   "logging_nan_inf_filter": True, "accelerator_config": json.dumps({"non_blocking": False})},
}


@dataclass
class Settings:
    """The benchmark's options (see --help)."""

    smoke: bool
    model: list[str]
    data: list[str]
    variants: list[str]
    steps: int
    warmup: int
    batch_size: int
    workers: int
    unique_rows: int
    work_dir: Path
    seed: int

    @property
    def untimed_batches(self) -> int:
        """The pipeline's: whole rounds of the workers covering the warmup (so at least the training's warmup)."""
        return math.ceil(self.warmup / max(self.workers, 1)) * max(self.workers, 1)

    @property
    def rows(self) -> int:
        return (self.untimed_batches + self.steps) * self.batch_size  # drawn by the longer pass, the pipeline's


def parse_args() -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action=argparse.BooleanOptionalAction, default=None,
                        help="tiny-clip, --model ignored (default: on without CUDA).")
    parser.add_argument("--model", nargs="+", choices=list(SHAPES), default=["b32"], help="GPU shapes to run.")
    parser.add_argument("--data", nargs="+", choices=list(SPECS), default=["chatearthnet"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["earthvl", "old-recipe"],
                        help="Recipe variants to train (VARIANTS): earthvl is the clip/gaia recipe as shipped.")
    parser.add_argument("--steps", type=int, help="Timed optimizer steps (default 40, smoke 4).")
    parser.add_argument("--warmup", type=int, help="Untimed steps first, at least 1 (default 10, smoke 2).")
    parser.add_argument("--batch_size", type=int, help="Per-device batch (default 128 as the recipe, smoke 32).")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default min(8, cores), smoke min(2, cores)).")
    parser.add_argument("--unique_rows", type=int, default=256, help="Rows of sample data to generate at most.")
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/earthvl-bench-train-clip"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="Write the results here as JSON.")
    args = vars(parser.parse_args())
    args["smoke"] = not torch.cuda.is_available() if args["smoke"] is None else args["smoke"]
    cores = len(os.sched_getaffinity(0))
    defaults = {"steps": (40, 4), "warmup": (10, 2), "batch_size": (128, 32), "workers": (min(8, cores), min(2, cores))}
    for key, choices in defaults.items():
        args[key] = choices[args["smoke"]] if args[key] is None else args[key]
    if args["warmup"] < 1:
        parser.error("--warmup must be at least 1: the first step also starts the DataLoader")
    out = args.pop("out")
    return Settings(**args), out


def write_checkpoint(name: str, folder: Path) -> str:
    """A CLIP with `name`'s shapes, random float32 weights and the processor described above; reused when present."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-clip"))
    vision, text, projection = SHAPES[name]
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")}
    config = CLIPConfig(text_config=CLIPTextConfig(**text, vocab_size=49408, max_position_embeddings=77, **ids),
                        vision_config=CLIPVisionConfig(**vision), projection_dim=projection)
    marker, wanted = folder / "benchmark-config.json", config.to_json_string()
    if not (marker.is_file() and marker.read_text() == wanted):
        shutil.rmtree(folder, ignore_errors=True)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # random init on the GPU: seconds
            CLIPModel._from_config(config, dtype=torch.float32).save_pretrained(folder)
        side = vision["image_size"]
        pixels = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                       image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
        CLIPProcessor(image_processor=pixels, tokenizer=tokenizer).save_pretrained(folder)
        marker.write_text(wanted)
    return str(folder)


def sample_data(settings: Settings) -> dict[str, str]:
    """The built sample datasets as `--datasets` specs, by --data name; generated once per size and seed."""
    rows, gaia = min(settings.rows, settings.unique_rows), "gaia" in settings.data
    tiles = max(8, math.ceil(rows / ROWS_PER_ITEM["chatearthnet"] * 1.2))
    scenes = max(3, math.ceil(rows / ROWS_PER_ITEM["gaia"] * 1.2) if gaia else 0)
    root = settings.work_dir / f"data-{tiles}-{scenes}-{settings.seed}"
    if not (root / "done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        world = generate_sample(root / "world", tiles=tiles, seed=settings.seed, gaia_images=scenes, progress=False)
        build_chatearthnet(world.chatearthnet.root, root / "chatearthnet", configs="gpt35", splits="train",
                           progress=False, num_proc=1)
        if gaia:
            build_gaia(world.gaia.root, root / "gaia", configs="default", splits="train", progress=False)
        (root / "done").touch()
    datasets.config.HF_DATASETS_CACHE = root / "hf-cache"
    return {name: str(root / spec) for name, spec in SPECS.items()}


class Meter(TrainerCallback):
    """Wall time after the warmup and after the last step (GPU synchronised), and the peak GPU memory of any step
    (read at every step end: the trainer's throughput logging resets the peak at each log)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.marks, self.peak = warmup, [], 0

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
        if state.global_step in (self.warmup, state.max_steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())


def build_trainer(
    model: str, spec: str, variant: str, settings: Settings, meter: Meter
) -> tuple[ClipTrainer, dict[str, float]]:
    """The trainer `earthvl train clip --config clip/gaia` builds, with the overrides above; and the text fit."""
    steps = settings.warmup + settings.steps
    options = {
        "config": recipe_path("clip/gaia"), "datasets": spec, "model_name_or_path": model, "seed": settings.seed,
        "output_dir": settings.work_dir / "run", "max_steps": steps, "logging_steps": steps,
        "per_device_train_batch_size": settings.batch_size, "dataloader_num_workers": settings.workers,
        "dataloader_persistent_workers": settings.workers > 0, "eval_strategy": "no", "save_strategy": "no",
        "disable_tqdm": True, "use_cpu": not torch.cuda.is_available(), "bf16": torch.cuda.is_available(),
        **{key: value for key, value in VARIANTS[variant].items() if key != CUDNN_ATTENTION},
    }
    argv = [item for key, value in options.items() for item in (f"--{key}", str(value))]
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    training_args.remove_unused_columns = False  # as main: rows are made on access
    clip, processor = load_clip(resolve_model(model_args.model_name_or_path), dtype=model_args.dtype,
                                revision=model_args.model_revision, attn_implementation=model_args.attn_implementation)
    chunker = TextChunker(processor.tokenizer, text_limit(clip, processor.tokenizer), script_args.long_text,
                          script_args.max_text_chunks)
    pixels = PixelTransform.from_processor(processor.image_processor, draft=script_args.jpeg_draft,
                                           max_pixels=script_args.max_pixels)
    sources, transforms = load_caption_rows(
        script_args.datasets, script_args.train_split, pixels=pixels, scheme=script_args.caption_scheme,
        alt_text_column=script_args.alt_text_column, seed=training_args.seed, on_bad_image=script_args.on_bad_image,
        max_pixels=script_args.max_pixels,
    )
    fit = chunker.report(caption_texts(sources[0], transforms[0], TEXT_FIT_ROWS))
    fit["sequences_per_image"] = fit["sequences_per_text"] * fit["texts"] / min(len(sources[0]), TEXT_FIT_ROWS)
    copies = math.ceil(settings.rows * training_args.world_size / len(sources[0]))
    trainer = ClipTrainer(
        model=clip, args=training_args, train_dataset=mix(sources * copies, None, seed=training_args.seed),
        data_collator=ClipCollator(chunker, script_args.text_sequence_multiple), processing_class=processor,
        callbacks=[EpochCallback(transforms), meter],
    )
    return trainer, fit


def pipeline_rate(trainer: ClipTrainer, settings: Settings) -> tuple[float, dict[str, Any]]:
    """Images/s of the trainer's train DataLoader alone (this process's share), timed as described above; and the
    text shapes of the timed batches."""
    loader = trainer.get_train_dataloader()
    batches = iter(loader)
    for _ in range(settings.untimed_batches):
        next(batches)
    start, images, rows, real = time.perf_counter(), 0, Counter(), 0
    for _ in range(settings.steps):
        batch = next(batches)
        images += len(batch["pixel_values"])
        rows[len(batch["input_ids"])] += 1
        real += len(batch["sequence_caption"])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    rate = images / (time.perf_counter() - start)
    batches.close()
    loader.end()  # as at the loader's last batch: accelerate's gradient state forgets it
    del batches, loader
    trainer.accelerator.free_memory()  # its last reference (nothing else is prepared yet): the workers shut down
    gc.collect()
    padded = sum(count * times for count, times in rows.items())
    shapes = {"sequences_per_batch": real / settings.steps, "padded_sequences_per_batch": padded / settings.steps,
              "filler_share": 1 - real / padded, "distinct_sequence_counts": len(rows),
              "most_common_sequence_count": rows.most_common(1)[0][0]}
    return rate, shapes


def ceiling_rate(model: str, images: int, sequences: int, settings: Settings) -> float:
    """Images/s of the plain loop described above, with `images` images and `sequences` text sequences a step."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    clip, processor = load_clip(resolve_model(model), dtype="float32")
    clip.to(device).train()
    generator = torch.Generator(device).manual_seed(settings.seed)
    side, width = clip.config.vision_config.image_size, text_limit(clip, processor.tokenizer)
    pixel_values = torch.randn(images, 3, side, side, device=device, generator=generator)
    input_ids = torch.randint(4, clip.config.text_config.vocab_size, (sequences, width), device=device, generator=generator)
    input_ids[:, -1] = clip.config.text_config.eos_token_id  # where the text tower pools (a full-length text)
    owners = torch.arange(sequences, device=device) * images // sequences  # the sequences shared among the images
    optimizer = torch.optim.AdamW(clip.parameters(), lr=5e-6, weight_decay=0.1, fused=True)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs = clip(pixel_values=pixel_values, input_ids=input_ids)
            texts = mean_embeddings(outputs.text_embeds, owners, images)
            loss = contrastive_loss(outputs.image_embeds, texts, clip.logit_scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(settings.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(settings.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = images * settings.steps / (time.perf_counter() - start)
    del clip, optimizer, pixel_values, input_ids
    gc.collect()
    torch.cuda.empty_cache()  # a no-op without CUDA
    return rate


def run(
    name: str, model: str, data: str, variant: str, spec: str, settings: Settings, ceilings: dict[tuple, float]
) -> dict[str, Any]:
    """Measure the pipeline, the ceiling at its shapes (once per shape and attention setting), then train; the
    results row."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    meter = Meter(settings.warmup)
    trainer, fit = build_trainer(model, spec, variant, settings, meter)
    pipeline, shapes = pipeline_rate(trainer, settings)
    cudnn, default_cudnn = VARIANTS[variant].get(CUDNN_ATTENTION, True), torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(cudnn and default_cudnn)
    try:
        key = (name, settings.batch_size, shapes["most_common_sequence_count"], cudnn)
        if key not in ceilings:
            ceilings[key] = ceiling_rate(model, *key[1:3], settings)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        trainer.train()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(default_cudnn)
    args = trainer.args
    gpus = max(args.n_gpu, 1) * args.world_size  # DataParallel (n_gpu > 1) feeds all its GPUs from one process
    training = args.train_batch_size * args.world_size * settings.steps / (meter.marks[1] - meter.marks[0])
    per_process, per_worker = training / args.world_size, pipeline / max(settings.workers, 1)
    result = {
        "model": name, "data": data, "variant": variant, "overrides": VARIANTS[variant], "gpus": gpus,
        "images_per_second": training, "images_per_second_per_gpu": training / gpus,
        "ceiling_images_per_second": ceilings[key], "of_ceiling": training / gpus / ceilings[key],
        "peak_memory_gib": meter.peak / 2**30 if torch.cuda.is_available() else None,
        "pipeline_images_per_second": pipeline, "pipeline_images_per_second_per_worker": per_worker,
        "pipeline_over_training": pipeline / per_process, "cores_to_keep_up": per_process / per_worker,
        "final_train_loss": trainer.state.log_history[-1].get("train_loss"), "text_fit": fit, "text_shapes": shapes,
    }
    trainer.accelerator.free_memory()
    del trainer
    gc.collect()
    torch.cuda.empty_cache()  # a no-op without CUDA
    return result


def table(results: list[dict[str, Any]], workers: int) -> str:
    lines = [f"| model | data | variant | images/s/GPU | ceiling | of ceiling | peak GiB | pipeline images/s ({workers} "
             "workers) | pipeline/training | cores to keep up | sequences/batch: real / padded (shapes) |",
             "|---|---|---" + "|---:" * 8 + "|"]
    for r in results:
        if r.get("oom"):
            lines.append(f"| {r['model']} | {r['data']} | {r['variant']} | out of GPU memory |")
            continue
        memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "n/a (CPU)"
        shapes = r["text_shapes"]
        lines.append(f"| {r['model']} | {r['data']} | {r['variant']} | {r['images_per_second_per_gpu']:,.1f} "
                     f"| {r['ceiling_images_per_second']:,.1f} | {100 * r['of_ceiling']:.0f}% | {memory} "
                     f"| {r['pipeline_images_per_second']:,.1f} | {r['pipeline_over_training']:.2f} "
                     f"| {r['cores_to_keep_up']:.1f} | {shapes['sequences_per_batch']:.1f} / "
                     f"{shapes['padded_sequences_per_batch']:.1f} ({shapes['distinct_sequence_counts']}) |")
    return "\n".join(lines)


def main() -> None:
    settings, out = parse_args()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    specs, results, ceilings = sample_data(settings), [], {}
    names = ["tiny-clip"] if settings.smoke else settings.model
    for name, data, variant in product(names, settings.data, settings.variants):
        model = name if settings.smoke else write_checkpoint(name, settings.work_dir / f"model-{name}")
        try:
            results.append(run(name, model, data, variant, specs[data], settings, ceilings))
        except torch.OutOfMemoryError:  # recorded, and the other runs go on
            results.append({"model": name, "data": data, "variant": variant, "oom": True})
            gc.collect()
            torch.cuda.empty_cache()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    versions = {module.__name__: module.__version__ for module in (torch, transformers, datasets)}
    print(f"# train_clip ({'SMOKE: tiny-clip, not a performance claim' if settings.smoke else 'CLIP shapes'}) on "
          f"{device}, {len(os.sched_getaffinity(0))} cores; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{settings.steps} timed steps after {settings.warmup}, per-device batch {settings.batch_size}, "
          f"{settings.workers} DataLoader workers, {'bf16' if torch.cuda.is_available() else 'float32 on the CPU'}; variants: "
          + "; ".join(f"{v} {VARIANTS[v] or '(as shipped)'}" for v in settings.variants))
    print(table(results, settings.workers))
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    if out:
        report = {"settings": {**asdict(settings), "work_dir": str(settings.work_dir), "rows": settings.rows},
                  "device": device, "versions": versions, "results": results,
                  "wall_seconds": time.perf_counter() - started}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
