"""Benchmark: QLoRA training throughput of a LLaVA-1.5-7B-shaped model, stock TRL against earthvl's speed levers, at
the same batch per optimizer step.

    python benchmarks/train_vlm.py --out train_vlm.json            # GPU: llava-hf/llava-1.5-7b-hf shapes
    python benchmarks/train_vlm.py --smoke --out smoke.json        # CPU (the default without CUDA): tiny-llava shapes

The model has the shapes of llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14 at 336 px, Llama-2-7B, GELU projector, vision
feature layer -2) and random bf16 weights: it is written once as safetensors (~14 GB, cached in --work_dir) and loaded
back in 4-bit by `earthvl.models.vlm.load_vlm` for each row, as training loads a real checkpoint. The tokenizer and
processor are tiny-llava's (a byte-level BPE trained on the sample world's texts) with the image processor set to 336
px and patch 14, so each image becomes 576 tokens; the config's image token id is that tokenizer's `<image>` id
(shapes and compute do not depend on which id it is). That tokenizer spends ~1.2 tokens a caption word where Llama's
spends ~1.3, so rows come out ~2% shorter than with the real one (576 of their ~750 tokens are the image's).

Data: the gpt35 train split of a sample world (`generate_sample` + `build_chatearthnet`), read by
`earthvl.train.vlm.load_conversations` + `mix`. Its captions follow ChatEarthNet's generation rules (spatial order,
dominant class first, one sentence per region): 95-151 words for 90% of rows (mean ~129; no-data placeholders ~14),
against a real gpt35 median of ~184 CLIP tokens (~150 words). Their spread is narrower than the real captions', so
padding, and what length grouping and padding-free batches save, is if anything underestimated.

Every row trains the same rows with --global_batch rows per optimizer step, bf16, NF4 QLoRA (LoRA r 64, alpha 16,
dropout 0.05 on every LLM linear layer), assistant-only loss, activation checkpointing unless the row says otherwise:
- stock: `SFTTrainer` with a plain `SFTConfig` on a materialised `datasets.Dataset` of messages + images, micro-batch
  --stock_micro_batch with gradient accumulation up to the global batch: TRL's collator, random sampler, no DataLoader
  workers, the default attention;
- earthvl rows: what `earthvl train vlm` runs: `VlmTrainer` and `VlmCollator` on the lazy mixture of `mix`, with
  `train_sampling_strategy="group_by_length"` on the mixture's `length` column, DataLoader workers (persistent, pinned
  memory), `attn_implementation="sdpa"`, plus any SFTConfig field given with --earthvl_args; then, row by row, the
  levers: the whole global batch as one micro-batch (`earthvl`), the frozen vision tower without autograd
  (`vision_no_grad`), padding-free batches with per-row attention (`padding_free`: torch's varlen flash kernel on
  CUDA), and partial activation checkpointing (every 2nd decoder layer) with the micro-batch chosen from
  --memory_budget_gb (`ckpt_every_2_budget`). `no_ckpt_budget` (no checkpointing, micro-batch from a budget of
  --large_budget_gb) and `earthvl_micro4` (today's recipe: micro-batch 4, no new lever) run when named in --rows.

Both paths score the loss through TRL 1.16's fused LM head, which on CUDA with Triton projects only the labelled
positions through `lm_head` (`lm_head_labelled_only` in the output). Before the `padding_free` row trains, the loss of
the same rows padded and padding-free is compared (`padding_free_check`): the varlen kernel must give the padded
batch's loss to bf16 precision.

Measured over --steps optimizer steps after --warmup steps: samples/s, tokens/s (non-padding tokens through the
model, image tokens included), padding fraction, peak GPU memory of the training steps (`max_memory_allocated` from
the first step on, GiB; the budget probe's passes come before) and model FLOP utilisation against the device's dense
bf16 peak. Model FLOPs per row of s tokens (frozen base, so no weight gradients except LoRA's): language model 4*N*s
(2*N*s forward + 2*N*s for the activation gradients, N = its matmul weights incl. lm_head) + 6*N_lora*s +
12*L*d*s^2 (attention scores and values, forward and backward, full matrix as in PaLM's appendix B); vision tower and
projector forward only, 2*N_v per patch + 4*L_v*d_v*577^2 per image. The recompute of activation checkpointing, the
NF4 dequantisation and the vision tower's backward (run only without `vision_no_grad`) are not counted (overheads).

Results are written to --out after every row (a row that fails is recorded with its error and the next one runs), and
printed as a table and one JSON summary line.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bitsandbytes
import datasets
import peft
import torch
import transformers
import trl
from datasets import Dataset
from PIL import Image
from transformers import (
    AutoConfig,
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    ProcessorMixin,
    TrainerCallback,
)
from trl import SFTConfig, SFTTrainer
from trl.kernels.chunked_logprob import _use_triton

import earthvl.models.attention as attention
from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.model_names import resolve_model
from earthvl.models.vlm import load_vlm, lora_config
from earthvl.sample import generate_sample
from earthvl.train.collate import VlmCollator, flatten_rows
from earthvl.train.foundation import mix
from earthvl.train.memory import GIB
from earthvl.train.vlm import VlmTrainer, load_conversations

LENGTH = "length"
IMAGE_SIZE, PATCH_SIZE = 336, 14
LLAVA_7B_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)
LLAVA_7B_TEXT = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
    vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
)
DENSE_BF16_PEAK = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}
"""Dense (no sparsity) bf16 tensor-core peak by device-name substring, most specific first."""
SIMULATED_GIB_PER_ROW, SIMULATED_BASE_GIB = 1.0, 2.0
"""--smoke has no GPU memory to read: the budget probe reads base + per-row GiB of the rows of its pass."""


@dataclass(frozen=True)
class Row:
    """One configuration: the trainer (`stock` or `earthvl`) and its levers."""

    name: str
    path: str = "earthvl"
    micro_batch: int | None = None  # None: the whole global batch (stock: --stock_micro_batch)
    every_n_layers: int | None = 1  # activation checkpointing of every n-th decoder layer; None: off
    vision_no_grad: bool = False
    padding_free: bool = False
    budget: str | None = None  # "budget" (--memory_budget_gb) or "large" (--large_budget_gb): micro-batch probed


ROWS = [
    Row("stock", path="stock"),
    Row("earthvl"),
    Row("vision_no_grad", vision_no_grad=True),
    Row("padding_free", vision_no_grad=True, padding_free=True),
    Row("ckpt_every_2_budget", vision_no_grad=True, padding_free=True, every_n_layers=2, budget="budget"),
    Row("no_ckpt_budget", vision_no_grad=True, padding_free=True, every_n_layers=None, budget="large"),
    Row("earthvl_micro4", micro_batch=4),
]
DEFAULT_ROWS = ["stock", "earthvl", "vision_no_grad", "padding_free", "ckpt_every_2_budget"]


@dataclass
class Settings:
    """The benchmark's options (see --help)."""

    smoke: bool
    steps: int
    warmup: int
    global_batch: int
    stock_micro_batch: int
    memory_budget_gb: float = 16.0
    large_budget_gb: float = 60.0
    num_workers: int = 4
    work_dir: Path = Path("/tmp/earthvl-bench-train-vlm")
    rows: list[str] = field(default_factory=lambda: list(DEFAULT_ROWS))
    earthvl_args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    @property
    def data_rows(self) -> int:
        return (self.warmup + self.steps) * self.global_batch

    @property
    def tiles(self) -> int:
        """Sample-world tiles for `data_rows` gpt35 train rows (4 patches a tile, 60% of them in train, 20% margin)."""
        return max(8, math.ceil(self.data_rows / (4 * 0.6) * 1.2))


def parse_args() -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action=argparse.BooleanOptionalAction, default=None,
                        help="tiny-llava shapes, for CPU (default: on without CUDA).")
    parser.add_argument("--steps", type=int, help="Timed optimizer steps (default 5, smoke 2).")
    parser.add_argument("--warmup", type=int, help="Untimed steps first, at least 1 (default 2, smoke 1).")
    parser.add_argument("--global_batch", type=int, help="Rows per optimizer step, every row (default 16, smoke 4).")
    parser.add_argument("--stock_micro_batch", type=int,
                        help="The stock path's micro-batch; gradient accumulation makes up the rest (default 4, smoke 2).")
    parser.add_argument("--memory_budget_gb", type=float,
                        help="The budget of `ckpt_every_2_budget` (default 16, smoke 4.5 simulated GiB).")
    parser.add_argument("--large_budget_gb", type=float, default=60.0, help="The budget of `no_ckpt_budget`.")
    parser.add_argument("--num_workers", type=int, help="DataLoader workers of the earthvl rows (default 4, smoke 2).")
    parser.add_argument("--work_dir", type=Path, default=Settings.work_dir, help="Sample world and cached checkpoint.")
    parser.add_argument("--rows", nargs="+", choices=[row.name for row in ROWS], default=DEFAULT_ROWS,
                        help=f"Rows to run, in order (default: {' '.join(DEFAULT_ROWS)}).")
    parser.add_argument("--earthvl_args", type=json.loads, default={},
                        help="SFTConfig fields for the earthvl rows, as JSON; they override the benchmark's own, e.g. "
                        "'{\"dataloader_num_workers\": 8}'.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="Write the results here as JSON (after every row).")
    args = parser.parse_args()
    smoke = not torch.cuda.is_available() if args.smoke is None else args.smoke
    if args.warmup is not None and args.warmup < 1:
        parser.error("--warmup must be at least 1: the first step also starts the DataLoader")
    settings = Settings(
        smoke=smoke,
        steps=args.steps if args.steps is not None else (2 if smoke else 5),
        warmup=args.warmup if args.warmup is not None else (1 if smoke else 2),
        global_batch=args.global_batch or (4 if smoke else 16),
        stock_micro_batch=args.stock_micro_batch or (2 if smoke else 4),
        memory_budget_gb=args.memory_budget_gb or (SIMULATED_BASE_GIB + 2.5 * SIMULATED_GIB_PER_ROW if smoke else 16.0),
        large_budget_gb=args.large_budget_gb,
        num_workers=args.num_workers if args.num_workers is not None else (2 if smoke else 4),
        work_dir=args.work_dir,
        rows=args.rows,
        earthvl_args=args.earthvl_args,
        seed=args.seed,
    )
    for row in settings.rows:
        micro = micro_batch(next(r for r in ROWS if r.name == row), settings)
        if settings.global_batch % micro:
            parser.error(f"row {row}: micro-batch {micro} does not divide --global_batch {settings.global_batch}")
    return settings, args.out


def micro_batch(row: Row, settings: Settings) -> int:
    if row.micro_batch is not None:
        return row.micro_batch
    return settings.stock_micro_batch if row.path == "stock" else settings.global_batch


def model_and_processor(smoke: bool) -> tuple[LlavaConfig, ProcessorMixin]:
    """tiny-llava's config and processor (smoke), or the llava-1.5-7b shapes with that processor at 336 px."""
    tiny = resolve_model("tiny-llava")
    processor = AutoProcessor.from_pretrained(tiny)
    if smoke:
        return AutoConfig.from_pretrained(tiny), processor
    tokenizer = processor.tokenizer
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**LLAVA_7B_VISION),
        text_config=LlamaConfig(
            **LLAVA_7B_TEXT, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.image_token_id,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    processor.image_processor.size = {"shortest_edge": IMAGE_SIZE}
    processor.image_processor.crop_size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor.patch_size = PATCH_SIZE
    tokenizer.model_max_length = LLAVA_7B_TEXT["max_position_embeddings"]
    return config, processor


def image_tokens(processor: ProcessorMixin, config: LlavaConfig) -> int:
    """Image tokens the processor emits per image; must match the vision tower's patch grid."""
    image, text = Image.new("RGB", (256, 256)), processor.tokenizer.image_token
    ids = processor(images=image, text=text, return_tensors="pt")["input_ids"]
    count = int((ids == config.image_token_id).sum())
    expected = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    if count != expected:
        raise RuntimeError(f"the processor emits {count} image tokens, the vision tower makes {expected}")
    return count


def write_checkpoint(config: LlavaConfig, processor: ProcessorMixin, folder: Path) -> Path:
    """A LLaVA with `config`'s shapes and random bf16 weights, saved like a Hub checkpoint; reused when present."""
    marker, wanted = folder / "benchmark-config.json", config.to_json_string()  # before building changes the config
    if marker.is_file() and marker.read_text() == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # random init on the GPU: seconds instead of minutes for 7B
        model = LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    marker.write_text(wanted)
    del model
    torch.cuda.empty_cache()
    return folder


def sample_captions(settings: Settings) -> str:
    """The gpt35 ChatEarthNet config of a fresh sample world, as a `--datasets` spec."""
    root = settings.work_dir / "data"
    shutil.rmtree(root, ignore_errors=True)
    datasets.config.HF_DATASETS_CACHE = root / "hf-cache"  # a rebuilt folder must not be read from an old cache
    world = generate_sample(root / "world", tiles=settings.tiles, seed=settings.seed, gaia_images=3, progress=False)
    build_chatearthnet(world.chatearthnet.root, root / "chatearthnet", configs="gpt35", progress=False, num_proc=1)
    return f"{root / 'chatearthnet'}:gpt35"


def earthvl_rows(spec: str, settings: Settings) -> Dataset:
    """The training mixture as `earthvl train vlm` builds it (lazy rows, a `length` column), cut to the needed rows."""
    sources, _ = load_conversations([spec], "train", seed=settings.seed, paraphrase=True)
    train = mix(sources, None, seed=settings.seed)
    if len(train) < settings.data_rows or LENGTH not in train.column_names:
        raise RuntimeError(f"mix gave {len(train)} rows, columns {train.column_names}: {settings.data_rows} rows and "
                           f"a {LENGTH!r} column needed")
    return train.select(range(settings.data_rows))


def stock_rows(train: Dataset) -> Dataset:
    """The same rows as a plain in-memory dataset of messages + images, the form TRL's examples use."""
    return Dataset.from_list([{"messages": row["messages"], "images": row["images"]} for row in train])


class Meter(TrainerCallback):
    """Token counts of every forward (a pre-hook on the model) and the wall time at the ends of the timed window.

    The counts stay on the device and the GPU is synchronised only at the window's two ends, so that the CPU runs
    ahead (loading the next batch) exactly as it would without the meter. A padding-free forward (one packed row,
    no attention mask) counts its rows from `cu_seq_lens_q`."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.shapes: list[tuple[int, int]] = []  # per forward: rows, token positions (padding included)
        self.sums: list[torch.Tensor] = []  # per forward: non-padding tokens, sum of squared row lengths
        self.marks: list[tuple[float, int]] = []  # (time, forwards so far) after the warmup and after the last step
        self.peak_allocated = self.peak_reserved = 0  # bytes, read at every step end (the trainer may reset them)
        self.rows_since_reset = 0  # for SimulatedMemory

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        ids, mask, offsets = kwargs["input_ids"], kwargs.get("attention_mask"), kwargs.get("cu_seq_lens_q")
        lengths = offsets.diff() if offsets is not None else (mask.sum(dim=1) if mask is not None else ids.new_tensor([ids.shape[1]]))
        lengths = lengths.long()
        self.shapes.append((len(lengths), ids.numel()))
        self.sums.append(torch.stack([lengths.sum(), (lengths**2).sum()]))
        self.rows_since_reset += len(lengths)

    def on_train_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():  # the training steps' peak, not the model load's or the budget probe's
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            self.peak_allocated = max(self.peak_allocated, torch.cuda.max_memory_allocated())
            self.peak_reserved = max(self.peak_reserved, torch.cuda.max_memory_reserved())
        if state.global_step in (self.warmup, state.max_steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), len(self.sums)))

    def window(self) -> tuple[float, int, int, int, int]:
        """Seconds, rows, non-padding tokens, token positions and the sum of squared row lengths of the timed steps."""
        (start, first), (end, last) = self.marks
        tokens, squares = torch.stack(self.sums[first:last]).sum(dim=0).tolist()
        rows, padded = (sum(column) for column in zip(*self.shapes[first:last]))
        return end - start, rows, int(tokens), padded, int(squares)


class SimulatedMemory:
    """--smoke's memory reader for the budget probe: SIMULATED_BASE_GIB + SIMULATED_GIB_PER_ROW per row of the
    passes since `reset` (there is no GPU memory to read on CPU; this exercises the probe, not the hardware)."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def reset(self) -> None:
        self.meter.rows_since_reset = 0

    def peak(self) -> int:
        return int((SIMULATED_BASE_GIB + SIMULATED_GIB_PER_ROW * self.meter.rows_since_reset) * GIB)


def llm_matmul_params(text: LlamaConfig) -> int:
    """Weights of the language model's matrix multiplies (attention, MLP, lm_head): N in 2*N FLOPs per token."""
    d, kv = text.hidden_size, text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    per_layer = d * (2 * d + 2 * kv) + 3 * d * text.intermediate_size
    return text.num_hidden_layers * per_layer + d * text.vocab_size


def vision_flops_per_image(config: LlavaConfig) -> float:
    """Forward FLOPs of the vision tower (every layer runs, CLS token included) and the projector, per image."""
    v, d = config.vision_config, config.text_config.hidden_size
    patches = (v.image_size // v.patch_size) ** 2
    tokens = patches + 1
    layer = 4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size
    tower = 2 * v.num_hidden_layers * layer * tokens + 4 * v.num_hidden_layers * v.hidden_size * tokens**2
    patch_embedding = 2 * v.num_channels * v.patch_size**2 * v.hidden_size * patches
    projector = 2 * (v.hidden_size * d + d * d) * patches
    return tower + patch_embedding + projector


def model_flops(config: LlavaConfig, lora_params: int, rows: int, tokens: int, squares: int) -> float:
    """Model FLOPs of training `rows` rows of `tokens` non-padding tokens in all (see the module docstring)."""
    text = config.text_config
    llm = (4 * llm_matmul_params(text) + 6 * lora_params) * tokens
    attention = 12 * text.num_hidden_layers * text.hidden_size * squares
    return llm + attention + vision_flops_per_image(config) * rows


def dense_bf16_peak() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        return f"CPU ({platform.processor() or platform.machine()})", None
    name = torch.cuda.get_device_name()
    return name, next((peak for key, peak in DENSE_BF16_PEAK.items() if key in name), None)


def sft_config(row: Row, settings: Settings, output_dir: Path) -> SFTConfig:
    """Equal training settings for every row; the earthvl rows add the recipe's data settings, their levers and
    --earthvl_args (which override the rest)."""
    micro = micro_batch(row, settings)
    fields: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=settings.global_batch // micro,
        max_steps=settings.warmup + settings.steps,
        learning_rate=2e-4,
        activation_checkpointing=row.every_n_layers is not None,
        bf16=True,
        max_length=None,
        assistant_only_loss=True,
        logging_steps=settings.warmup + settings.steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    if row.every_n_layers not in (None, 1):
        fields["activation_checkpointing_kwargs"] = {"every_n_layers": row.every_n_layers}
    if row.path == "earthvl":
        fields.update(
            remove_unused_columns=False,  # the mixture's rows are made by its transform
            train_sampling_strategy="group_by_length",
            length_column_name=LENGTH,
            dataloader_num_workers=settings.num_workers,
            dataloader_pin_memory=True,
            dataloader_persistent_workers=settings.num_workers > 0,
            padding_free=row.padding_free,
        )
        fields.update(settings.earthvl_args)
    return SFTConfig(**fields)


def padding_free_check(trainer: VlmTrainer, train: Dataset, rows: int = 4) -> dict[str, float]:
    """The loss of the first `rows` rows padded and padding-free (no gradients), as the trainer computes it."""
    padded = trainer.data_collator.collator([train[i] for i in range(rows)])
    losses = {}
    trainer.model.eval()  # no LoRA dropout: both see the same weights
    with torch.no_grad(), trainer.accelerator.autocast():
        for name, batch in (("padded", dict(padded)), ("padding_free", flatten_rows(dict(padded)))):
            losses[name] = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch)).item()
    trainer.model.train()
    losses["relative_difference"] = abs(losses["padding_free"] - losses["padded"]) / abs(losses["padded"])
    return losses


def run(row: Row, checkpoint: Path, train: Dataset, settings: Settings, config: LlavaConfig) -> dict[str, Any]:
    """Train `row`'s way for warmup + steps and measure the timed steps."""
    loaded = time.perf_counter()
    model, processor = load_vlm(
        str(checkpoint), load_in_4bit=True, dtype=torch.bfloat16, attn_implementation="sdpa" if row.path == "earthvl" else None
    )
    loaded = time.perf_counter() - loaded
    meter = Meter(settings.warmup)
    trainer_options: dict[str, Any] = {}
    if row.path == "earthvl":
        budget = {"budget": settings.memory_budget_gb, "large": settings.large_budget_gb}.get(row.budget)
        trainer_options = dict(
            vision_no_grad=row.vision_no_grad,
            memory_budget_gb=budget,
            memory_reader=SimulatedMemory(meter) if budget is not None and settings.smoke else None,
        )
    trainer = (SFTTrainer if row.path == "stock" else VlmTrainer)(
        model=model,
        args=sft_config(row, settings, settings.work_dir / f"run-{row.name}"),
        train_dataset=train,
        processing_class=processor,
        peft_config=lora_config(r=64, alpha=16, dropout=0.05),
        **trainer_options,
    )
    check = None
    if row.path == "earthvl":
        trainer.data_collator = VlmCollator(trainer.data_collator, padding_free=row.padding_free)  # as `earthvl train vlm`
        if row.padding_free:
            check = padding_free_check(trainer, train)
    attention_used = {"language_model": model.config.text_config._attn_implementation,
                      "vision_tower": model.config.vision_config._attn_implementation}
    trainer.add_callback(meter)
    hook = trainer.model.register_forward_pre_hook(meter, with_kwargs=True)
    trainer.train()
    hook.remove()
    seconds, rows, tokens, padded, squares = meter.window()
    lora_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    device, peak = dense_bf16_peak()
    flops = model_flops(config, lora_params, rows, tokens, squares)
    on_gpu = torch.cuda.is_available()
    result = {
        "samples_per_second": rows / seconds,
        "tokens_per_second": tokens / seconds,
        "padding_fraction": 1 - tokens / padded,
        "peak_memory_gib": meter.peak_allocated / GIB if on_gpu else None,
        "peak_reserved_gib": meter.peak_reserved / GIB if on_gpu else None,
        "model_tflops_per_second": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "micro_batch": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "memory_budget": getattr(trainer, "memory_choice", None),
        "memory_simulated": bool(settings.smoke and row.budget),
        "activation_checkpointing": None if row.every_n_layers is None else f"every {row.every_n_layers} layer(s)",
        "vision_no_grad": row.vision_no_grad,
        "padding_free": row.padding_free,
        "padding_free_check": check,
        "varlen_kernel": bool(row.padding_free and attention.CAUSAL_FLAG is not None and on_gpu),
        "lm_head_labelled_only": _use_triton(trainer.args.device),
        "seconds": seconds,
        "load_seconds": loaded,
        "rows": rows,
        "tokens": tokens,
        "mean_tokens_per_row": tokens / rows,
        "trainable_lora_params": lora_params,
        "attention": attention_used,
        "final_train_loss": trainer.state.log_history[-1].get("train_loss"),
        "device": device,
    }
    trainer.accelerator.free_memory()  # the next row's peak memory must not include this model
    del trainer, model
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a markdown table, tokens/s relative to the stock path."""
    base = results.get("stock", {}).get("tokens_per_second")
    lines = [
        "| row | micro x accum. | samples/s | tokens/s | padding | peak GiB | MFU | tokens/s vs stock |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'].splitlines()[-1][:120]} | | | | | | |")
            continue
        memory = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a (CPU)"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        ratio = f"{r['tokens_per_second'] / base:.2f}x" if base else "n/a"
        lines.append(f"| {name} | {r['micro_batch']} x {r['gradient_accumulation_steps']} | {r['samples_per_second']:.2f} | "
                     f"{r['tokens_per_second']:,.0f} | {100 * r['padding_fraction']:.1f}% | {memory} | {mfu} | {ratio} |")
    return "\n".join(lines)


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per row: tokens/s, MFU, peak GiB and the ratio to stock (or the error)."""
    base = results.get("stock", {}).get("tokens_per_second")
    return {
        name: {"error": r["error"].splitlines()[-1]} if "error" in r else {
            "tokens_per_second": round(r["tokens_per_second"], 1),
            "mfu": None if r["mfu"] is None else round(r["mfu"], 4),
            "peak_gib": None if r["peak_memory_gib"] is None else round(r["peak_memory_gib"], 2),
            "vs_stock": round(r["tokens_per_second"] / base, 3) if base else None,
            "micro_batch": r["micro_batch"],
        }
        for name, r in results.items()
    }


def main() -> None:
    settings, out = parse_args()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    config, processor = model_and_processor(settings.smoke)
    tokens_per_image = image_tokens(processor, config)
    checkpoint = write_checkpoint(config, processor, settings.work_dir / f"model-{'smoke' if settings.smoke else '7b'}")
    spec = sample_captions(settings)
    mixture = earthvl_rows(spec, settings)
    data = {"earthvl": mixture, "stock": stock_rows(mixture)}
    modules = (torch, transformers, trl, peft, bitsandbytes, datasets)
    versions = {module.__name__: module.__version__ for module in modules}
    prepared = time.perf_counter() - started
    results: dict[str, dict[str, Any]] = {}
    for name in settings.rows:
        row = next(r for r in ROWS if r.name == name)
        try:
            results[name] = run(row, checkpoint, data[row.path], settings, config)
        except Exception:  # one failed row must not cost the others (one GPU run for all)
            results[name] = {"error": traceback.format_exc()}
            print(f"row {name} failed:\n{results[name]['error']}", flush=True)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if out:
            report = {
                "settings": {**asdict(settings), "work_dir": str(settings.work_dir), "data_rows": settings.data_rows,
                             "tiles": settings.tiles},
                "rows": {r.name: asdict(r) for r in ROWS if r.name in settings.rows},
                "image_tokens_per_image": tokens_per_image,
                "versions": versions,
                "preparation_seconds": prepared,
                "wall_seconds": time.perf_counter() - started,
                "results": results,
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2))
    shapes = "SMOKE: tiny-llava shapes, not meaningful for the targets" if settings.smoke else "llava-1.5-7b shapes"
    device = next((r["device"] for r in results.values() if "device" in r), dense_bf16_peak()[0])
    print(f"# train_vlm ({shapes}) on {device}")
    print(", ".join(f"{name} {version}" for name, version in versions.items()))
    print(f"{settings.steps} timed steps after {settings.warmup}, {settings.global_batch} rows per optimizer step, "
          f"{tokens_per_image} tokens per image, {settings.num_workers} DataLoader workers (earthvl rows)")
    print(table(results))
    print(f"preparation {prepared:.1f} s, total wall time {time.perf_counter() - started:.1f} s")
    print("SUMMARY " + json.dumps(summary(results)))


if __name__ == "__main__":
    main()
