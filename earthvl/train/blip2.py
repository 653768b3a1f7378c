"""Captioning fine-tuning of BLIP-2 with LoRA, as in the GAIA paper: `earthvl train blip2`.

`train_blip2(script_args, training_args, model_args)` in TRL's style: data options here, `transformers.TrainingArguments`
for training, `Blip2ModelArguments` (TRL's `ModelConfig` with the paper's LoRA as defaults) for the model. The
output folder holds the adapter, the processor and the generation settings (`generation_config.json`: 5 beams,
at most 120 new tokens); `--merge_adapter` adds a plain `Blip2ForConditionalGeneration` in `<output_dir>/merged`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from peft import get_peft_model, prepare_model_for_kbit_training
from transformers import Trainer, TrainingArguments
from trl import ModelConfig

from earthvl.errors import EarthvlError
from earthvl.model_names import resolve_model
from earthvl.models.blip2 import GAIA_GENERATION, blip2_prompt_ids, generation_config, load_blip2, lora_config, merge_adapter
from earthvl.models.loading import loading_options, lora_options, stop_token_ids
from earthvl.models.pixels import PixelTransform
from earthvl.train.caption_rows import alt_text_column_option, caption_datasets, caption_scheme_option, caption_texts
from earthvl.train.collate import Blip2Collator
from earthvl.train.foundation import (
    DataArguments,
    EarthvlTraining,
    EpochCallback,
    RunRecord,
    check_training,
    mix,
    run,
    save_outputs,
    seed_run,
)
from earthvl.training_output import CAPTIONING_FILE, MERGED_DIR

logger = logging.getLogger(__name__)

CAPTION_FIT_ROWS = 2000
"""Rows per dataset whose captions are measured against `max_caption_tokens` before training."""


@dataclass
class Blip2ScriptArguments(DataArguments):
    """What to train on and how to caption: any config with an image column and captions."""

    positive_options: ClassVar[tuple[str, ...]] = (
        *DataArguments.positive_options, "max_caption_tokens", "num_beams", "max_new_tokens"
    )

    caption_scheme: str = caption_scheme_option("synthetic-sample", ("synthetic-sample", "alt-text"))
    alt_text_column: str = alt_text_column_option()
    prompt: str = field(
        default="", metadata={"help": "Text before every caption, in training and generation (not trained on)."}
    )
    max_caption_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Cut captions (with eos) to this many tokens; default: what the language model's context leaves "
            "after the image queries and prompt. The share cut is logged."
        },
    )
    num_beams: int = field(default=GAIA_GENERATION["num_beams"], metadata={"help": "Beam search width saved for generation."})
    max_new_tokens: int = field(
        default=GAIA_GENERATION["max_new_tokens"], metadata={"help": "Longest caption generated (saved for generation)."}
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Also write the adapter merged into an unquantised base (model dtype) to <output_dir>/merged."},
    )


@dataclass
class Blip2ModelArguments(ModelConfig):
    """TRL's model options with the GAIA paper's LoRA (r 16, alpha 32, dropout 0.1 on the language model's attention
    projections) as defaults; quantisation off (`--load_in_8bit` / `--load_in_4bit` quantise the language model)."""

    model_name_or_path: str | None = field(
        default="Salesforce/blip2-opt-2.7b",
        metadata={"help": "A transformers BLIP-2 checkpoint (Hub id or folder), or tiny-blip2."},
    )
    use_peft: bool = field(default=True, metadata={"help": "Train LoRA adapters instead of the full model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})


class Blip2Trainer(EarthvlTraining, Trainer):
    """`transformers.Trainer` with earthvl's training foundation; the loss is BLIP-2's own language-modelling loss
    on the caption labels of `Blip2Collator`."""


def caption_limit(model: Any, processor: Any, prompt: str, requested: int | None) -> int:
    """Caption tokens (eos included) a row may hold: `requested`, or what the context leaves after the prefix."""
    room = model.config.text_config.max_position_embeddings - len(blip2_prompt_ids(processor, prompt))
    if requested is not None and not 1 < requested <= room:
        raise EarthvlError(f"max_caption_tokens={requested}: between 2 and {room} (the context after image queries and prompt)")
    return requested or room


def train_blip2(
    script_args: Blip2ScriptArguments, training_args: TrainingArguments, model_args: Blip2ModelArguments
) -> Blip2Trainer:
    """Fine-tune, then save the adapter (or model), processor and generation settings into `output_dir`."""
    check_training(training_args)
    seed_run(training_args)  # the LoRA weights are drawn before the Trainer seeds
    record = RunRecord(model_args.model_name_or_path)
    if training_args.remove_unused_columns:
        training_args.remove_unused_columns = False  # rows are made on access from the image and caption columns
    training_args.label_names = training_args.label_names or ["labels"]
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if quantized and not model_args.use_peft:
        raise EarthvlError("a quantised model trains through adapters only: drop --use_peft false or the quantisation")
    base = resolve_model(model_args.model_name_or_path)
    model, processor = load_blip2(base, **loading_options(model_args))
    generation = generation_config(model, num_beams=script_args.num_beams, max_new_tokens=script_args.max_new_tokens)
    model.generation_config = generation
    # Captions end with the token the checkpoint's generation stops at ("\n" for Salesforce's OPT models), read
    # before the Trainer adds the tokenizer's eos to the generation config.
    end_token_id = stop_token_ids(model, processor.tokenizer)[0]
    limit = caption_limit(model, processor, script_args.prompt, script_args.max_caption_tokens)
    pixels = PixelTransform.from_processor(processor.image_processor, max_pixels=script_args.max_pixels)
    sources, transforms, eval_dataset = caption_datasets(script_args, pixels, training_args.seed)
    record.add_datasets(script_args, sources, eval_dataset)
    for spec, rows, transform in zip(script_args.datasets, sources, transforms):
        texts = caption_texts(rows, transform, CAPTION_FIT_ROWS)
        lengths = [len(ids) + 1 for ids in processor.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        cut = sum(length > limit for length in lengths) / max(len(lengths), 1)
        logger.info("%s: %.1f%% of captions are cut to %d tokens", spec, 100 * cut, limit)
    if model_args.use_peft:
        if quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(training_args.activation_checkpointing))
        elif training_args.activation_checkpointing:
            model.enable_input_require_grads()  # the frozen embeddings would otherwise cut the adapters' gradients
        model = get_peft_model(model, lora_config(**lora_options(model_args)))
    trainer = Blip2Trainer(
        model=model,
        args=training_args,
        train_dataset=mix(sources, script_args.dataset_weights, seed=training_args.seed),
        eval_dataset=eval_dataset,
        data_collator=Blip2Collator(processor, script_args.prompt, limit, end_token_id),
        processing_class=processor,
        callbacks=[EpochCallback(transforms)],
    )
    run(trainer, script_args.resume)
    save_outputs(trainer, processor, record, {CAPTIONING_FILE: {"prompt": script_args.prompt}})
    output = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        generation.save_pretrained(output)
        if script_args.merge_adapter and model_args.use_peft:
            merge_adapter(base, output, output / MERGED_DIR, dtype=model_args.dtype or "float32")
    return trainer
