"""What the three earthvl trainers (VLM, CLIP, BLIP-2) share: the data options, the trainer mixins, resuming and
the files a run leaves in its output folder.

Each trainer is a `transformers.Trainer` (or TRL `SFTTrainer`) subclass with `EarthvlTraining` first among its
bases: atomic checkpoints, throughput in the logs, resumable length-grouped batches, and rows skipped for bad
images counted and listed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments, enable_full_determinism, set_seed
from transformers.trainer import TRAINING_ARGS_NAME

from earthvl import __version__
from earthvl.atomic import check_writable
from earthvl.data import data_version, load_split
from earthvl.errors import EarthvlError, check_positive
from earthvl.images import max_pixels_option, on_bad_image_option
from earthvl.train.checkpoints import AtomicCheckpoints, last_checkpoint
from earthvl.train.progress import ThroughputLogging
from earthvl.train.conversations import LENGTH_COLUMN
from earthvl.train.sampling import LengthGrouping
from earthvl.training_output import (
    RUN_FILE,
    SKIPPED_IMAGES_FILE,
    TRAINER_STATE_FILE,
    TRAINING_ARGS_FILE,
    write_side_file,
)

logger = logging.getLogger(__name__)

SKIPPED_IMAGES = "skipped_images"
"""Batch key listing the rows a collator dropped for bad images; the trainer pops it (and counts them) before the
forward, and `save_outputs` lists them in `<output_dir>/skipped_images.json`."""


@dataclass
class DataArguments:
    """What to train on: the options every earthvl trainer takes."""

    datasets: list[str] = field(
        metadata={
            "help": "Built dataset folders or Hub ids, each optionally with ':CONFIG' (e.g. hub/gaia:default "
            "hub/chatearthnet:gpt35)."
        }
    )
    dataset_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Relative weight of each dataset in the training mixture (default: proportional to size). A "
            "dataset's share of the epoch is weight / sum of weights; smaller datasets are repeated to fill it."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default="validation", metadata={"help": "Split for held-out loss (none: skip)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on held-out rows per dataset."})
    on_bad_image: str = on_bad_image_option("stop", "counted in the logs and listed in <output_dir>/skipped_images.json")
    max_pixels: int = max_pixels_option()
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue from the newest complete checkpoint in output_dir (same data order); start afresh if "
            "there is none. A checkpoint whose save was interrupted is never used."
        },
    )

    positive_options: ClassVar[tuple[str, ...]] = ("max_pixels", "max_eval_samples")
    """Integer options that must be at least 1 when set; subclasses add theirs."""

    def __post_init__(self) -> None:
        if self.eval_split is not None and self.eval_split.lower() in ("", "none", "null"):
            self.eval_split = None
        check_positive(self, *self.positive_options)
        if self.dataset_weights is not None and not all(weight > 0 for weight in self.dataset_weights):
            raise ValueError(f"dataset_weights must all be positive, got {self.dataset_weights}")


def check_training(args: TrainingArguments) -> None:
    """Refuse training options that transformers accepts but that would fail late or train nothing (a batch of 0,
    no epochs and no steps), and an output folder that cannot be written: before any data or model loads."""
    check_positive(args, "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        raise EarthvlError(f"num_train_epochs must be positive (or set max_steps), got {args.num_train_epochs}")
    if args.dataloader_num_workers < 0:
        raise EarthvlError(f"dataloader_num_workers must be 0 or more, got {args.dataloader_num_workers}")
    check_writable(args.output_dir, "training output folder", folder=True)


def seed_run(args: TrainingArguments) -> None:
    """Seed Python, NumPy and torch from `args.seed` (deterministic kernels too with `full_determinism`) as the Trainer
    does in its constructor, but early enough for what is drawn before it: PEFT draws the LoRA weights when it wraps
    the model, and without this they would come from whatever state earlier code left the global RNG in."""
    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)


def split_name(spec: str) -> tuple[str, str | None]:
    """`hub/gaia:default` -> (`hub/gaia`, `default`); no config part -> the dataset's default config."""
    head, sep, config = spec.rpartition(":")
    if sep and config and "/" not in config:
        return head, config
    return spec, None


def short_name(spec: str) -> str:
    """`hub/gaia:default` -> `gaia-default`: the name of a dataset's metrics (`eval_gaia-default_loss`)."""
    path, config = split_name(spec)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}-{config}" if config else name


def load_sources(specs: list[str], split: str, limit: int | None = None) -> list[Dataset]:
    """`split` of each dataset spec (`path[:config]`), each cut to its first `limit` rows when given."""
    datasets = []
    for spec in specs:
        dataset = load_split(*split_name(spec), split)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        datasets.append(dataset)
    return datasets


class MixedRows:
    """The transform of a mixture: maps (source, row) index rows to the rows of the sources."""

    def __init__(self, sources: list[Dataset]) -> None:
        self.sources = sources

    def __call__(self, batch: dict[str, list[int]]) -> dict[str, list[Any]]:
        if "source" not in batch:  # a single column read, e.g. the sampler's `length`
            return batch
        rows = [self.sources[s][i] for s, i in zip(batch["source"], batch["row"])]
        return {key: [row[key] for row in rows] for key in rows[0]}


def mix(sources: list[Dataset], weights: list[float] | None, seed: int = 0) -> Dataset:
    """One training set drawing `weights`-proportional shares of the sources (sizes when None) per epoch.

    Each source keeps its own lazy transform; the mixture only stores (source, row) rows, plus the sources' `length`
    when they all have one (for length-grouped batches). A source whose share exceeds its size is repeated (whole
    passes, then a seeded sample), one below it is sampled without replacement."""
    sizes = [len(source) for source in sources]
    weights = list(weights) if weights is not None else [float(n) for n in sizes]
    if len(weights) != len(sources) or any(w <= 0 for w in weights):
        raise EarthvlError(f"dataset_weights must give one positive weight per dataset, got {weights} for {len(sources)}")
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    lengths = all(LENGTH_COLUMN in source.column_names for source in sources)
    columns: dict[str, list[int]] = {"source": [], "row": [], **({LENGTH_COLUMN: []} if lengths else {})}
    for index, (source, size, weight) in enumerate(zip(sources, sizes, weights)):
        share = round(total * weight / sum(weights))
        rows = np.concatenate([np.tile(np.arange(size), share // size), rng.permutation(size)[: share % size]])
        columns["source"] += [index] * len(rows)
        columns["row"] += rows.astype(int).tolist()
        if lengths:
            columns[LENGTH_COLUMN] += source.with_format("arrow")[LENGTH_COLUMN].to_numpy()[rows.astype(int)].tolist()
    return Dataset.from_dict(columns).with_transform(MixedRows(sources))


class EpochSetter(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


class EpochCallback(TrainerCallback):
    """Calls `set_epoch` on the row transforms at the start of each epoch: new captions (and instructions) drawn."""

    def __init__(self, transforms: list[EpochSetter]) -> None:
        self.transforms = transforms

    def on_epoch_begin(self, args, state, control, **kwargs):
        for transform in self.transforms:
            transform.set_epoch(int(state.epoch or 0))


class EarthvlTraining(AtomicCheckpoints, ThroughputLogging, LengthGrouping):
    """Mixin for a `transformers.Trainer` subclass: atomic checkpoints, throughput logs, resumable length-grouped
    batches, and the rows a collator skipped for bad images (under `skipped_images`) logged and counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped_images: list[str] = []

    def _prepare_inputs(self, inputs):
        for problem in inputs.pop(SKIPPED_IMAGES, None) or []:
            logger.warning("skipped %s", problem)
            self.skipped_images.append(problem)
        return super()._prepare_inputs(inputs)


def run(trainer: Trainer, resume: bool) -> None:
    """Train, from `resume_from_checkpoint` if set, else with `resume` from the newest complete checkpoint."""
    checkpoint = trainer.args.resume_from_checkpoint
    if resume and checkpoint is None:
        checkpoint = last_checkpoint(trainer.args.output_dir)
        logger.info("resuming from %s" % checkpoint if checkpoint else "no checkpoint to resume from: starting afresh")
    trainer.train(resume_from_checkpoint=checkpoint)


@dataclass
class RunRecord:
    """What `run.json` records of a run: the base model, the datasets (their revision or fingerprint and row
    counts), the device and the wall time from this record's creation (the start of the run) to the save."""

    base_model: str
    datasets: list[dict[str, Any]] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    clock: float = field(default_factory=time.perf_counter)

    def add_datasets(self, args: DataArguments, sources: list[Dataset], held_out: dict[str, Dataset] | None) -> None:
        """One entry per dataset of `args`: where it is, which version, and the rows of each split the run read."""
        for spec, rows in zip(args.datasets, sources):
            source, config = split_name(spec)
            entry: dict[str, Any] = {"spec": spec, "source": source, "config": config, **data_version(source, config)}
            entry["splits"] = {args.train_split: len(rows)}
            if held_out is not None and args.eval_split:
                entry["splits"][args.eval_split] = len(held_out[short_name(spec)])
            self.datasets.append(entry)

    def as_dict(self, args: TrainingArguments) -> dict[str, Any]:
        device = args.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        return {
            "base_model": self.base_model,
            "datasets": self.datasets,
            "device": name,
            "processes": args.world_size,
            "started": self.started.isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self.clock, 1),
            "earthvl": __version__,
        }


def save_outputs(trainer: Trainer, processor: Any, record: RunRecord, files: dict[str, Any] | None = None) -> None:
    """The model (or adapter), processor, settings as JSON, the trainer state (its log holds the run's time and
    throughput, which model cards show), `run.json` (from `record`), `files` (name -> JSON value) and the skipped
    rows, into output_dir; safetensors only (the pickled `training_args.bin` is replaced by `training_args.json`).
    The names are `earthvl.training_output`'s."""
    output = Path(trainer.args.output_dir)
    trainer.save_model(str(output))
    skipped = sorted(gather_object(trainer.skipped_images))
    if not trainer.is_world_process_zero():
        return
    processor.save_pretrained(output)
    (output / TRAINING_ARGS_NAME).unlink(missing_ok=True)
    (output / TRAINING_ARGS_FILE).write_text(trainer.args.to_json_string())
    trainer.state.save_to_json(str(output / TRAINER_STATE_FILE))
    for name, value in {**(files or {}), RUN_FILE: record.as_dict(trainer.args)}.items():
        write_side_file(output, name, value)
    if skipped:
        write_side_file(output, SKIPPED_IMAGES_FILE, skipped)
        logger.warning("%d rows were skipped for images that failed to decode: see %s", len(skipped), output / SKIPPED_IMAGES_FILE)


def report(trainer: Trainer, what: str) -> None:
    """Print where the outputs went and the last log entry (process 0 only): the end of every `earthvl train`."""
    if not trainer.is_world_process_zero():
        return
    print(f"saved the {what} to {trainer.args.output_dir}")
    for name, value in trainer.state.log_history[-1].items():
        print(f"  {name}: {value}")
