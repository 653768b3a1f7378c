"""Instruction-tune a LLaVA-style model on captioned remote-sensing data with TRL's `SFTTrainer` (QLoRA by default).

`main(script_args, training_args, model_args)` in TRL's style: data options here, `trl.SFTConfig` for training,
`VlmModelArguments` (TRL's `ModelConfig` plus the projector switch) for the model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from trl import ModelConfig, SFTConfig, SFTTrainer

from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS
from earthvl.models.assemble import assemble_vlm
from earthvl.models.vision import band_statistics
from earthvl.models.vlm import VISION_FILE, apply_vision, load_vlm, lora_config, merge_adapter
from earthvl.train.checkpoints import AtomicCheckpoints, last_checkpoint
from earthvl.train.collate import SKIPPED_IMAGES, VlmCollator
from earthvl.train.conversations import LENGTH_COLUMN, Conversations, to_conversations
from earthvl.train.progress import ThroughputLogging
from earthvl.train.sampling import LengthGrouping

logger = logging.getLogger(__name__)


@dataclass
class VlmScriptArguments:
    """What to train on."""

    datasets: list[str] = field(
        metadata={
            "help": "Built dataset folders or Hub ids, each optionally with ':CONFIG' (e.g. hub/gaia:default "
            "hub/chatearthnet:gpt35); any config with an image column and captions, a label, or question + answer."
        }
    )
    dataset_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Relative weight of each dataset in the training mixture (default: proportional to size). A "
            "dataset's share of the epoch is weight / sum of weights; smaller datasets are repeated to fill it."
        },
    )
    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "Task per dataset: caption, classify (GeoChat's class-list prompt), vqa (GeoChat's short-answer "
            "suffix) or auto (from the columns: captions, then question + answer, then label). Default: auto for all."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default="validation", metadata={"help": "Split for held-out loss (none: skip)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on held-out rows per dataset."})
    paraphrase: bool = field(
        default=True, metadata={"help": "Vary the captioning instruction among its paraphrases (earthvl.prompts)."}
    )
    on_bad_image: str = field(
        default="stop",
        metadata={
            "help": "An image that fails to decode (or is over max_pixels): 'stop' with the row named, or 'skip' it; "
            "skipped rows are counted in the logs and listed in <output_dir>/skipped_images.json.",
            "choices": ["stop", "skip"],
        },
    )
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "Refuse images with more pixels than this."})
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue from the newest complete checkpoint in output_dir (same data order); start afresh if "
            "there is none. A checkpoint whose save was interrupted is never used."
        },
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Also write the adapter merged into an unquantised base (model dtype) to <output_dir>/merged."},
    )

    def __post_init__(self) -> None:
        if self.eval_split is not None and self.eval_split.lower() in ("", "none", "null"):
            self.eval_split = None


@dataclass
class VlmModelArguments(ModelConfig):
    """TRL's model options (QLoRA on by default here) plus the vision-side switches."""

    use_peft: bool = field(default=True, metadata={"help": "Train LoRA adapters instead of the full model."})
    load_in_4bit: bool = field(default=True, metadata={"help": "Quantise the language model to NF4 (QLoRA)."})
    use_bnb_nested_quant: bool = field(default=True, metadata={"help": "Double quantisation of the NF4 constants."})
    train_projector: bool = field(
        default=False, metadata={"help": "Also train the multimodal projector in full (saved with the adapter)."}
    )
    vision_tower: str | None = field(
        default=None,
        metadata={
            "help": "With --language_model, instead of --model_name_or_path: assemble a LLaVA-1.5 model from this CLIP "
            "checkpoint and that causal LM with a fresh projector (which then is trained, as in LLaVA's stage 1)."
        },
    )
    language_model: str | None = field(default=None, metadata={"help": "The causal LM of --vision_tower's assembly."})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Train at this resolution: the vision tower's position embeddings are interpolated (bicubic, as "
            "GeoChat went from 336 to 504 px) and the processor emits the matching number of image tokens."
        },
    )
    multispectral: bool = field(
        default=False,
        metadata={
            "help": "Feed ChatEarthNet's nine Sentinel-2 bands: the patch embedding is widened (RGB weights kept, extra "
            "channels zero, trained in full) and each band normalised with statistics of the training data. Needs "
            "'-multispectral' configs."
        },
    )
    band_statistics_rows: int = field(
        default=2048, metadata={"help": "Rows sampled for the per-band mean and std of --multispectral."}
    )


def _split_name(spec: str) -> tuple[str, str | None]:
    """`hub/gaia:default` -> (`hub/gaia`, `default`); no config part -> the dataset's default config."""
    head, sep, config = spec.rpartition(":")
    if sep and config and "/" not in config:
        return head, config
    return spec, None


def _short_name(spec: str) -> str:
    path, config = _split_name(spec)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}-{config}" if config else name


class MixedConversations:
    """The transform of a mixture: maps (source, row) index rows to the conversation rows of the sources."""

    def __init__(self, sources: list[Dataset]) -> None:
        self.sources = sources

    def __call__(self, batch: dict[str, list[int]]) -> dict[str, list[Any]]:
        if "source" not in batch:  # a single column read, e.g. the sampler's `length`
            return batch
        rows = [self.sources[s][i] for s, i in zip(batch["source"], batch["row"])]
        return {key: [row[key] for row in rows] for key in rows[0]}


def mix(sources: list[Dataset], weights: list[float] | None, seed: int = 0) -> Dataset:
    """One training set drawing `weights`-proportional shares of the sources (sizes when None) per epoch.

    Each source keeps its own lazy transform; the mixture only stores (source, row, length) rows. A source whose
    share exceeds its size is repeated (whole passes, then a seeded sample), one below it is sampled without
    replacement."""
    sizes = [len(source) for source in sources]
    weights = list(weights) if weights is not None else [float(n) for n in sizes]
    if len(weights) != len(sources) or any(w <= 0 for w in weights):
        raise EarthvlError(f"dataset_weights must give one positive weight per dataset, got {weights} for {len(sources)}")
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    columns: dict[str, list[int]] = {"source": [], "row": [], LENGTH_COLUMN: []}
    for index, (source, size, weight) in enumerate(zip(sources, sizes, weights)):
        share = round(total * weight / sum(weights))
        rows = np.concatenate([np.tile(np.arange(size), share // size), rng.permutation(size)[: share % size]])
        lengths = source.with_format("arrow")[LENGTH_COLUMN].to_numpy()
        columns["source"] += [index] * len(rows)
        columns["row"] += rows.astype(int).tolist()
        columns[LENGTH_COLUMN] += lengths[rows.astype(int)].tolist()
    return Dataset.from_dict(columns).with_transform(MixedConversations(sources))


class CaptionEpochCallback(TrainerCallback):
    """Re-draws the caption (and instruction) of every image at the start of each epoch."""

    def __init__(self, samplers: list[Conversations]) -> None:
        self.samplers = samplers

    def on_epoch_begin(self, args, state, control, **kwargs):
        for sampler in self.samplers:
            sampler.set_epoch(int(state.epoch or 0))


class VlmTrainer(AtomicCheckpoints, ThroughputLogging, LengthGrouping, SFTTrainer):
    """TRL's `SFTTrainer` with atomic checkpoints, throughput in the logs, resumable length-grouped batches, and the
    rows skipped for bad images counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped_images: list[str] = []

    def _prepare_inputs(self, inputs):
        for problem in inputs.pop(SKIPPED_IMAGES, None) or []:
            logger.warning("skipped %s", problem)
            self.skipped_images.append(problem)
        return super()._prepare_inputs(inputs)


def load_conversations(
    specs: list[str],
    split: str,
    *,
    seed: int,
    paraphrase: bool = True,
    tasks: list[str] | None = None,
    bands: bool = False,
    on_bad_image: str = "stop",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    limit: int | None = None,
) -> tuple[list[Dataset], list[Conversations]]:
    """Each dataset's `split` as conversation rows, and their transforms."""
    tasks = tasks or ["auto"] * len(specs)
    if len(tasks) != len(specs):
        raise EarthvlError(f"tasks gives {len(tasks)} tasks for {len(specs)} datasets: give one per dataset")
    datasets, transforms = [], []
    for spec, task in zip(specs, tasks):
        dataset = load_split(*_split_name(spec), split)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        rows, transform = to_conversations(
            dataset,
            name=spec,
            task=task,
            seed=seed,
            paraphrase=paraphrase,
            bands=bands,
            on_bad_image=on_bad_image,
            max_pixels=max_pixels,
        )
        datasets.append(rows)
        transforms.append(transform)
    return datasets, transforms


def vision_settings(model_args: VlmModelArguments, first_source: Dataset, seed: int) -> dict[str, Any]:
    """The vision-tower changes the model options ask for, with band statistics from the first training dataset
    (its rows as loaded, without the conversation transform)."""
    vision: dict[str, Any] = {}
    if model_args.image_size:
        vision["image_size"] = model_args.image_size
    if model_args.multispectral:
        mean, std = band_statistics(
            first_source.with_format(None), max_rows=model_args.band_statistics_rows, seed=seed
        )
        vision.update(num_channels=len(mean), band_mean=mean, band_std=std)
    return vision


def base_model(model_args: VlmModelArguments) -> str:
    """The checkpoint to train: `model_name_or_path`, or the assembly of `vision_tower` and `language_model` (whose
    fresh projector switches `train_projector` on)."""
    if not (model_args.vision_tower or model_args.language_model):
        if not model_args.model_name_or_path:
            raise EarthvlError("give --model_name_or_path, or --vision_tower and --language_model to assemble one")
        return model_args.model_name_or_path
    if not (model_args.vision_tower and model_args.language_model) or model_args.model_name_or_path:
        raise EarthvlError(
            "assembling a model takes both --vision_tower and --language_model, and no --model_name_or_path"
        )
    if not model_args.train_projector:
        logger.info("train_projector set to True: an assembled model's projector starts from random weights")
        model_args.train_projector = True
    return str(assemble_vlm(model_args.vision_tower, model_args.language_model))


def main(script_args: VlmScriptArguments, training_args: SFTConfig, model_args: VlmModelArguments) -> VlmTrainer:
    """Train, save the adapter (or model) and processor into `training_args.output_dir`; returns the trainer."""
    base = base_model(model_args)
    if training_args.remove_unused_columns:
        logger.info("remove_unused_columns set to False: conversation rows are made on access from the image columns")
        training_args.remove_unused_columns = False
    if training_args.max_length is not None:
        logger.info("max_length set to None: truncating a VLM row can cut its image tokens")
        training_args.max_length = None
    data = dict(
        tasks=script_args.tasks,
        bands=model_args.multispectral,
        on_bad_image=script_args.on_bad_image,
        max_pixels=script_args.max_pixels,
        seed=training_args.seed,
    )
    sources, transforms = load_conversations(
        script_args.datasets, script_args.train_split, paraphrase=script_args.paraphrase, **data
    )
    train = mix(sources, script_args.dataset_weights, seed=training_args.seed)
    eval_dataset = None
    if script_args.eval_split:
        held_out, _ = load_conversations(
            script_args.datasets, script_args.eval_split, paraphrase=False, limit=script_args.max_eval_samples, **data
        )
        eval_dataset = {_short_name(spec): rows for spec, rows in zip(script_args.datasets, held_out)}
    model, processor = load_vlm(
        base,
        load_in_4bit=model_args.load_in_4bit,
        load_in_8bit=model_args.load_in_8bit,
        quantization=dict(
            quant_type=model_args.bnb_4bit_quant_type,
            double_quant=model_args.use_bnb_nested_quant,
            quant_storage=model_args.bnb_4bit_quant_storage,
        ),
        dtype=model_args.dtype,
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
    )
    vision = vision_settings(model_args, sources[0], training_args.seed)
    apply_vision(model, processor, vision)
    peft_config = None
    if model_args.use_peft:
        peft_config = lora_config(
            r=model_args.lora_r,
            alpha=model_args.lora_alpha,
            dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules,
            train_projector=model_args.train_projector,
            train_patch_embedding=model_args.multispectral,
            modules_to_save=model_args.lora_modules_to_save,
            target_parameters=model_args.lora_target_parameters,
            use_rslora=model_args.use_rslora,
            use_dora=model_args.use_dora,
            task_type=model_args.lora_task_type,
        )
    trainer = VlmTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[CaptionEpochCallback(transforms)],
    )
    trainer.data_collator = VlmCollator(trainer.data_collator, vision)
    checkpoint = training_args.resume_from_checkpoint
    if script_args.resume and checkpoint is None:
        checkpoint = last_checkpoint(training_args.output_dir)
        logger.info("resuming from %s" % checkpoint if checkpoint else "no checkpoint to resume from: starting afresh")
    trainer.train(resume_from_checkpoint=checkpoint)
    save_outputs(trainer, processor, vision)
    if script_args.merge_adapter and model_args.use_peft and trainer.is_world_process_zero():
        output = Path(training_args.output_dir)
        merge_adapter(base, output, output / "merged", dtype=model_args.dtype or torch.bfloat16)
    return trainer


def save_outputs(trainer: VlmTrainer, processor: Any, vision: dict[str, Any]) -> None:
    """The adapter (or model), processor, vision changes, settings as JSON and the skipped rows, into output_dir."""
    output = Path(trainer.args.output_dir)
    trainer.save_model(str(output))
    skipped = sorted(gather_object(trainer.skipped_images))
    if not trainer.is_world_process_zero():
        return
    processor.save_pretrained(output)
    (output / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # a pickle: the settings go out as JSON instead
    (output / "training_args.json").write_text(trainer.args.to_json_string())
    if vision:
        (output / VISION_FILE).write_text(json.dumps(vision, indent=2))
    if skipped:
        (output / "skipped_images.json").write_text(json.dumps(skipped, indent=2))
        logger.warning("%d rows were skipped for images that failed to decode: see %s", len(skipped), output / "skipped_images.json")
