"""Contrastive fine-tuning of CLIP on captioned remote-sensing images, as in the GAIA paper: `earthvl train clip`.

`train_clip(script_args, training_args, model_args)` in TRL's style: data options here, `transformers.TrainingArguments`
for training, `ClipModelArguments` for the model. Both towers train, no parameter is added, and the saved folder is
a plain `CLIPModel` checkpoint with its processor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from transformers import Trainer, TrainingArguments

from earthvl.model_names import resolve_model
from earthvl.models.clip import TextChunker, load_clip, long_text_option, max_text_chunks_option, mean_embeddings, text_limit
from earthvl.models.pixels import PixelTransform
from earthvl.train.caption_rows import SCHEMES, alt_text_column_option, caption_datasets, caption_scheme_option, caption_texts
from earthvl.train.collate import ClipCollator
from earthvl.train.foundation import (
    DataArguments,
    EarthvlTraining,
    EpochCallback,
    RunRecord,
    check_training,
    mix,
    run,
    save_outputs,
    short_name,
)
from earthvl.train.losses import contrastive_loss
from earthvl.training_output import TEXT_FIT_FILE

logger = logging.getLogger(__name__)

TEXT_FIT_ROWS = 2000
"""Rows per dataset whose captions are measured against the text tower's limit before training."""


@dataclass
class ClipScriptArguments(DataArguments):
    """What to train on: any config with an image column and captions (GAIA `captions`, ChatEarthNet `caption`)."""

    positive_options: ClassVar[tuple[str, ...]] = (*DataArguments.positive_options, "max_text_chunks")

    caption_scheme: str = caption_scheme_option("synthetic-mean", SCHEMES)
    alt_text_column: str = alt_text_column_option()
    long_text: str = long_text_option("chunks", "The share cut is logged and saved in text_fit.json.")
    max_text_chunks: int = max_text_chunks_option()
    text_sequence_multiple: int = field(
        default=64,
        metadata={
            "help": "Pad each batch's number of text sequences (chunks of every caption) up to a multiple of this, with "
            "empty filler texts the loss leaves out, and every sequence to the text tower's length: batches then come "
            "in a few fixed shapes and the GPU's attention plans are reused (1: as many sequences as the captions need)."
        },
    )
    jpeg_draft: bool = field(
        default=True,
        metadata={
            "help": "Let the JPEG decoder downscale large images in the DCT domain before the resize (several times "
            "faster on multi-megapixel photos; pixels differ slightly from a full decode)."
        },
    )


@dataclass
class ClipModelArguments:
    """Which CLIP checkpoint to fine-tune."""

    model_name_or_path: str = field(
        default="openai/clip-vit-base-patch32",
        metadata={"help": "A transformers CLIP checkpoint (Hub id or folder), or tiny-clip."},
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    dtype: str | None = field(
        default="float32",
        metadata={
            "help": "Weights' dtype: float32 (default; use --bf16 for mixed precision), bfloat16, float16 or auto.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, eager, flash_attention_2."})


class ClipTrainer(EarthvlTraining, Trainer):
    """`transformers.Trainer` with the contrastive loss over the global batch; each image's target is the mean of its
    captions' embeddings, each caption's the mean of its chunks' (`ClipCollator`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sequence_caption, caption_image = inputs.pop("sequence_caption"), inputs.pop("caption_image")
        # The text tower is causal and pools at the end-of-text token, so right padding never reaches its output:
        # without the padding mask transformers builds no mask (and reads none back from the GPU) and attention runs
        # plain causal, with the same embeddings.
        inputs.pop("attention_mask", None)
        outputs = model(**inputs)
        sequences = outputs.text_embeds[: len(sequence_caption)]  # the rows after are ClipCollator's fillers
        captions = mean_embeddings(sequences, sequence_caption, len(caption_image))
        texts = mean_embeddings(captions, caption_image, len(outputs.image_embeds))
        logit_scale = self.accelerator.unwrap_model(model).logit_scale
        loss = contrastive_loss(outputs.image_embeds, texts, logit_scale)
        return (loss, outputs) if return_outputs else loss

    def floating_point_ops(self, inputs):
        """transformers' estimate (6 x input tokens x parameters outside embeddings), the parameters counted once:
        transformers counts them at every step, milliseconds of host time a step for CLIP's ~400 weight tensors."""
        if getattr(self, "_parameters_counted", None) is None:
            self._parameters_counted = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs["input_ids"].numel() * self._parameters_counted

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


def train_clip(
    script_args: ClipScriptArguments, training_args: TrainingArguments, model_args: ClipModelArguments
) -> ClipTrainer:
    """Fine-tune, then save the model and processor into `training_args.output_dir`; returns the trainer."""
    check_training(training_args)
    record = RunRecord(model_args.model_name_or_path)
    if training_args.remove_unused_columns:
        training_args.remove_unused_columns = False  # rows are made on access from the image and caption columns
    model, processor = load_clip(
        resolve_model(model_args.model_name_or_path),
        dtype=model_args.dtype,
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
    )
    chunker = TextChunker(
        processor.tokenizer, text_limit(model, processor.tokenizer), script_args.long_text, script_args.max_text_chunks
    )
    pixels = PixelTransform.from_processor(
        processor.image_processor, draft=script_args.jpeg_draft, max_pixels=script_args.max_pixels
    )
    sources, transforms, eval_dataset = caption_datasets(script_args, pixels, training_args.seed)
    record.add_datasets(script_args, sources, eval_dataset)
    fits = {}
    for spec, rows, transform in zip(script_args.datasets, sources, transforms):
        fits[short_name(spec)] = fit = chunker.report(caption_texts(rows, transform, TEXT_FIT_ROWS))
        logger.info(
            "%s: %.1f%% of captions are longer than %d tokens; long_text=%s cuts %.1f%% of captions and %.1f%% of "
            "tokens (%.2f sequences per caption)",
            spec, 100 * fit["longer_than_limit"], fit["max_tokens"], script_args.long_text,
            100 * fit["texts_cut"], 100 * fit["tokens_dropped"], fit["sequences_per_text"],
        )
    trainer = ClipTrainer(
        model=model,
        args=training_args,
        train_dataset=mix(sources, script_args.dataset_weights, seed=training_args.seed),
        eval_dataset=eval_dataset,
        data_collator=ClipCollator(chunker, script_args.text_sequence_multiple),
        processing_class=processor,
        callbacks=[EpochCallback(transforms)],
    )
    run(trainer, script_args.resume)
    save_outputs(trainer, processor, record, {TEXT_FIT_FILE: fits})
    return trainer
