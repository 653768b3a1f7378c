"""Instruction-tune a LLaVA-style model on captioned remote-sensing data with TRL's `SFTTrainer` (QLoRA by default).

`train_vlm(script_args, training_args, model_args)` in TRL's style: data options here, `trl.SFTConfig` for training,
`VlmModelArguments` (TRL's `ModelConfig` plus the projector switch) for the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from trl import ModelConfig, SFTConfig, SFTTrainer

from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS
from earthvl.model_names import resolve_model
from earthvl.models.assemble import assemble_vlm
from earthvl.models.attention import use_varlen_attention
from earthvl.models.loading import loading_options, lora_options
from earthvl.models.vision import band_statistics
from earthvl.models.vlm import (
    apply_vision,
    load_vlm,
    lora_config,
    merge_adapter,
    read_chat_template,
    training_chat_template,
    use_chat_template,
)
from earthvl.train.collate import VlmCollator
from earthvl.train.conversations import Conversations, to_conversations
from earthvl.train.foundation import (
    DataArguments,
    EarthvlTraining,
    EpochCallback,
    RunRecord,
    check_training,
    load_sources,
    mix,
    run,
    save_outputs,
    short_name,
)
from earthvl.train.memory import MemoryBudget
from earthvl.training_output import MERGED_DIR, VISION_FILE

logger = logging.getLogger(__name__)


@dataclass
class VlmScriptArguments(DataArguments):
    """What to train on: any config with an image column and captions, a label, or question + answer."""

    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "Task per dataset: caption, classify (GeoChat's class-list prompt), vqa (GeoChat's short-answer "
            "suffix) or auto (from the columns: captions, then question + answer, then label). Default: auto for all."
        },
    )
    paraphrase: bool = field(
        default=True, metadata={"help": "Vary the captioning instruction among its paraphrases (earthvl.prompts)."}
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Also write the adapter merged into an unquantised base (model dtype) to <output_dir>/merged."},
    )
    memory_budget_gb: float | None = field(
        default=None,
        metadata={
            "help": "GPU memory (GiB, allocated by torch) a training step may use: before the first step, forward and "
            "backward passes on the longest rows pick the largest micro-batch that fits, dividing "
            "per_device_train_batch_size x gradient_accumulation_steps, which stays the batch per optimizer step. "
            "Recorded in <output_dir>/memory_budget.json and training_args.json."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Train with this chat template (a Jinja file, or a chat_template.json). It must mark each answer "
            "and the end-of-turn token after it (</s> for LLaVA-1.5) with {% generation %} ... {% endgeneration %}, or "
            "it is refused. Default: the checkpoint's template if it does so, else earthvl's LLaVA-1.5 template. The "
            "processor saved with the adapter carries the template used."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chat_template is not None:
            read_chat_template(self.chat_template)  # a missing or malformed file fails before data and model load


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
    vision_no_grad: bool = field(
        default=True,
        metadata={
            "help": "Run the vision tower without autograd when none of its weights is trained (it is frozen unless "
            "--multispectral trains its patch embedding): its activations are not kept for a backward pass that "
            "would only compute unused gradients. The projector is trained as before."
        },
    )


def vision_tower_without_autograd(model: nn.Module) -> bool:
    """Run the vision tower of a LLaVA `model` (PEFT-wrapped or not) under `torch.no_grad` if none of its parameters
    requires a gradient; returns whether it does. Without this, the input-gradient hooks that activation
    checkpointing and k-bit preparation put on every input embedding (the patch embedding included) make autograd
    record the whole frozen tower and run its backward for nothing."""
    owner = next((module for module in model.modules() if isinstance(getattr(module, "vision_tower", None), nn.Module)), None)
    tower = owner.vision_tower if owner is not None else None
    if tower is None or any(parameter.requires_grad for parameter in tower.parameters()):
        return False
    tower.forward = torch.no_grad()(tower.forward)
    return True


class VlmTrainer(EarthvlTraining, MemoryBudget, SFTTrainer):
    """TRL's `SFTTrainer` with earthvl's training foundation (atomic checkpoints, throughput logs, resumable
    length-grouped batches, skipped bad-image rows counted), a micro-batch chosen from `memory_budget_gb`, the frozen
    vision tower run without autograd (`vision_no_grad`), and padding-free batches for VLMs.

    TRL refuses `padding_free=True` for image datasets; here it switches the language model to per-row attention
    (`earthvl.models.attention`), for batches that `VlmCollator(padding_free=True)` packs into one sequence."""

    def __init__(self, *args: Any, vision_no_grad: bool = True, **kwargs: Any) -> None:
        training_args = kwargs.get("args")
        padding_free = bool(training_args is not None and training_args.padding_free)
        if padding_free:
            training_args.padding_free = False  # past TRL's check for image datasets
        super().__init__(*args, **kwargs)
        if padding_free:
            training_args.padding_free = True
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            logger.info("padding-free batches: language model attention %s", use_varlen_attention(base))
        if vision_no_grad and vision_tower_without_autograd(self.model):
            logger.info("the frozen vision tower runs without autograd")
        if not self.args.bf16:
            trained_weights_outside_bf16(self.model, self.args.fp16)


def trained_weights_outside_bf16(model: nn.Module, fp16: bool) -> None:
    """Undo TRL's cast of a quantised model's trained weights to bf16 when training does not run under bf16
    autocast: without autocast a projector or patch embedding trained in full would meet the frozen modules' float32
    activations in bf16 and fail, and every update would be rounded to bf16. They take the frozen weights' dtype, or
    float32 under fp16 mixed precision (its gradient scaler wants float32 weights)."""
    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return
    parameters = list(model.named_parameters())
    frozen = next((p.dtype for _, p in parameters if p.is_floating_point() and not p.requires_grad), torch.float32)
    dtype = torch.float32 if fp16 else frozen
    for name, parameter in parameters:
        if parameter.requires_grad and parameter.dtype == torch.bfloat16 and "lora_magnitude_vector" not in name:
            parameter.data = parameter.data.to(dtype)


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
    for spec, task, dataset in zip(specs, tasks, load_sources(specs, split, limit)):
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
        return resolve_model(model_args.model_name_or_path)
    if not (model_args.vision_tower and model_args.language_model) or model_args.model_name_or_path:
        raise EarthvlError(
            "assembling a model takes both --vision_tower and --language_model, and no --model_name_or_path"
        )
    if not model_args.train_projector:
        logger.info("train_projector set to True: an assembled model's projector starts from random weights")
        model_args.train_projector = True
    return str(assemble_vlm(resolve_model(model_args.vision_tower), resolve_model(model_args.language_model)))


def train_vlm(script_args: VlmScriptArguments, training_args: SFTConfig, model_args: VlmModelArguments) -> VlmTrainer:
    """Train, save the adapter (or model) and processor into `training_args.output_dir`; returns the trainer."""
    check_training(training_args)
    base = base_model(model_args)
    record = RunRecord(model_args.model_name_or_path or f"{model_args.vision_tower} + {model_args.language_model}")
    if training_args.chat_template_path:
        raise EarthvlError("give the chat template with --chat_template (checked to end every turn), not --chat_template_path")
    if training_args.remove_unused_columns:
        logger.info("remove_unused_columns set to False: conversation rows are made on access from the image columns")
        training_args.remove_unused_columns = False
    if training_args.max_length is not None:
        logger.info("max_length set to None: truncating a VLM row can cut its image tokens")
        training_args.max_length = None
    if training_args.packing:
        raise EarthvlError(
            "packing: VLM rows are not packed ahead of training (it would split image tokens); use padding_free, "
            "which packs each micro-batch into one sequence with per-row attention"
        )
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
        eval_dataset = {short_name(spec): rows for spec, rows in zip(script_args.datasets, held_out)}
    record.add_datasets(script_args, sources, eval_dataset)
    model, processor = load_vlm(base, **loading_options(model_args))
    use_chat_template(processor, training_chat_template(model, processor, script_args.chat_template))
    vision = vision_settings(model_args, sources[0], training_args.seed)
    apply_vision(model, processor, vision)
    peft_config = None
    if model_args.use_peft:
        peft_config = lora_config(
            train_projector=model_args.train_projector,
            train_patch_embedding=model_args.multispectral,
            task_type=model_args.lora_task_type,
            **lora_options(model_args),
        )
    trainer = VlmTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[EpochCallback(transforms)],
        memory_budget_gb=script_args.memory_budget_gb,
        vision_no_grad=model_args.vision_no_grad,
    )
    trainer.data_collator = VlmCollator(trainer.data_collator, vision, padding_free=training_args.padding_free)
    run(trainer, script_args.resume)
    save_outputs(trainer, processor, record, {VISION_FILE: vision} if vision else None)
    if script_args.merge_adapter and model_args.use_peft and trainer.is_world_process_zero():
        output = Path(training_args.output_dir)
        merge_adapter(base, output, output / MERGED_DIR, dtype=model_args.dtype or torch.bfloat16)
    return trainer

