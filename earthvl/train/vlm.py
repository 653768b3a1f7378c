"""Instruction-tune a LLaVA-style model on captioned remote-sensing data with TRL's `SFTTrainer` (QLoRA by default).

`main(script_args, training_args, model_args)` in TRL's style: data options here, `trl.SFTConfig` for training,
`VlmModelArguments` (TRL's `ModelConfig` plus the projector switch) for the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, load_dataset
from transformers import TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from trl import ModelConfig, SFTConfig, SFTTrainer

from earthvl.errors import EarthvlError
from earthvl.models.vlm import load_vlm, lora_config, merge_adapter
from earthvl.train.conversations import CaptionConversations, to_conversations

logger = logging.getLogger(__name__)


@dataclass
class VlmScriptArguments:
    """What to train on."""

    datasets: list[str] = field(
        metadata={
            "help": "Built dataset folders or Hub ids, each optionally with ':CONFIG' (e.g. hub/gaia:default "
            "hub/chatearthnet:gpt35); every config with an image and a caption column works."
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
    paraphrase: bool = field(
        default=True, metadata={"help": "Vary the captioning instruction among its paraphrases (earthvl.prompts)."}
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Also write the adapter merged into an unquantised base (model dtype) to <output_dir>/merged."},
    )


@dataclass
class VlmModelArguments(ModelConfig):
    """TRL's model options (QLoRA on by default here) plus the projector switch."""

    use_peft: bool = field(default=True, metadata={"help": "Train LoRA adapters instead of the full model."})
    load_in_4bit: bool = field(default=True, metadata={"help": "Quantise the language model to NF4 (QLoRA)."})
    use_bnb_nested_quant: bool = field(default=True, metadata={"help": "Double quantisation of the NF4 constants."})
    train_projector: bool = field(
        default=False, metadata={"help": "Also train the multimodal projector in full (saved with the adapter)."}
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
        rows = [self.sources[s][i] for s, i in zip(batch["source"], batch["row"])]
        return {"messages": [row["messages"] for row in rows], "images": [row["images"] for row in rows]}


def mix(sources: list[Dataset], weights: list[float] | None, seed: int = 0) -> Dataset:
    """One training set drawing `weights`-proportional shares of the sources (sizes when None) per epoch.

    Each source keeps its own lazy transform; the mixture only stores (source, row) pairs. A source whose share
    exceeds its size is repeated (whole passes, then a seeded sample), one below it is sampled without replacement."""
    sizes = [len(source) for source in sources]
    weights = list(weights) if weights is not None else [float(n) for n in sizes]
    if len(weights) != len(sources) or any(w <= 0 for w in weights):
        raise EarthvlError(f"dataset_weights must give one positive weight per dataset, got {weights} for {len(sources)}")
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    columns: dict[str, list[int]] = {"source": [], "row": []}
    for index, (size, weight) in enumerate(zip(sizes, weights)):
        share = round(total * weight / sum(weights))
        rows = np.concatenate([np.tile(np.arange(size), share // size), rng.permutation(size)[: share % size]])
        columns["source"] += [index] * len(rows)
        columns["row"] += rows.astype(int).tolist()
    return Dataset.from_dict(columns).with_transform(MixedConversations(sources))


class CaptionEpochCallback(TrainerCallback):
    """Re-draws the caption (and instruction) of every image at the start of each epoch."""

    def __init__(self, samplers: list[CaptionConversations]) -> None:
        self.samplers = samplers

    def on_epoch_begin(self, args, state, control, **kwargs):
        for sampler in self.samplers:
            sampler.set_epoch(int(state.epoch or 0))


def load_conversations(specs: list[str], split: str, *, paraphrase: bool, seed: int, limit: int | None = None):
    """Each dataset's `split` as conversation rows, and their caption samplers."""
    datasets, samplers = [], []
    for spec in specs:
        path, config = _split_name(spec)
        try:
            dataset = load_dataset(path, config, split=split)
        except (FileNotFoundError, ValueError) as error:
            raise EarthvlError(f"cannot load split {split!r} of {spec}: {error}") from error
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        rows, sampler = to_conversations(dataset, seed=seed, paraphrase=paraphrase)
        datasets.append(rows)
        samplers.append(sampler)
    return datasets, samplers


def main(script_args: VlmScriptArguments, training_args: SFTConfig, model_args: VlmModelArguments) -> SFTTrainer:
    """Train, save the adapter (or model) and processor into `training_args.output_dir`; returns the trainer."""
    if training_args.remove_unused_columns:
        logger.info("remove_unused_columns set to False: conversation rows are made on access from the image columns")
        training_args.remove_unused_columns = False
    if training_args.max_length is not None:
        logger.info("max_length set to None: truncating a VLM row can cut its image tokens")
        training_args.max_length = None
    model, processor = load_vlm(
        model_args.model_name_or_path,
        load_in_4bit=model_args.load_in_4bit,
        dtype=model_args.dtype,
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
    )
    peft_config = None
    if model_args.use_peft:
        peft_config = lora_config(
            r=model_args.lora_r,
            alpha=model_args.lora_alpha,
            dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules,
            train_projector=model_args.train_projector,
        )
    sources, samplers = load_conversations(
        script_args.datasets, script_args.train_split, paraphrase=script_args.paraphrase, seed=training_args.seed
    )
    train = mix(sources, script_args.dataset_weights, seed=training_args.seed)
    eval_dataset = None
    if script_args.eval_split:
        held_out, _ = load_conversations(
            script_args.datasets,
            script_args.eval_split,
            paraphrase=False,
            seed=training_args.seed,
            limit=script_args.max_eval_samples,
        )
        eval_dataset = {_short_name(spec): rows for spec, rows in zip(script_args.datasets, held_out)}
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[CaptionEpochCallback(samplers)],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    processor.save_pretrained(training_args.output_dir)
    output = Path(training_args.output_dir)
    (output / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # a pickle: the settings go out as JSON instead
    (output / "training_args.json").write_text(training_args.to_json_string())
    if script_args.merge_adapter and model_args.use_peft:
        merge_adapter(model_args.model_name_or_path, output, output / "merged", dtype=model_args.dtype or torch.bfloat16)
    return trainer
