"""`earthvl train vlm` and `earthvl eval caption|classify` on the replica of llava-hf/llava-1.5-7b-hf (tests/hub):
its real config, processor, tokenizer layout and chat template (which ends answers with a space, not `</s>`)."""

import json

import pytest
import torch
from trl import SFTConfig

from earthvl.data import load_split
from earthvl.train.vlm import VlmModelArguments, VlmScriptArguments, main
from hub_models import LLAVA

EOS, IMAGE, PAD, BOS = 2, 32000, 32001, 1


def train(hub, gaia, out, *, steps=1, chat_template=None, merge=False, **training):
    script = VlmScriptArguments(datasets=[f"{gaia}:default"], eval_split=None, merge_adapter=merge)
    config = dict(output_dir=str(out), per_device_train_batch_size=2, max_steps=steps, learning_rate=1e-3, report_to=[],
                  use_cpu=True, activation_checkpointing=False, seed=0, max_length=None, assistant_only_loss=True,
                  save_strategy="no", logging_steps=50)
    model = VlmModelArguments(model_name_or_path=str(hub(LLAVA)), dtype="float32", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    return main(script, SFTConfig(**{**config, **training}), model)


def labelled_rows(trainer, count=4):
    """(input ids, labels, answer) of the first training rows, through the collator training uses."""
    rows = [trainer.train_dataset[i] for i in range(count)]
    batch = trainer.data_collator(rows)
    answers = [row["messages"][1]["content"][0]["text"] for row in rows]
    return batch["input_ids"], batch["labels"], answers


def test_training_from_llava_hf_labels_every_answer_and_its_end_of_turn(hub, sample_gaia, tmp_path):
    trainer = train(hub, sample_gaia, tmp_path / "run")
    tokenizer = trainer.processing_class.tokenizer
    ids, labels, answers = labelled_rows(trainer)
    for row_ids, row_labels, answer in zip(ids, labels, answers):
        labelled = row_labels[row_labels != -100]
        assert labelled[-1] == EOS, tokenizer.decode(labelled[-8:])
        assert tokenizer.decode(labelled[:-1]).strip() == answer
        assert torch.equal(labelled, row_ids[row_labels != -100])  # labels are the input tokens they sit on
        assert (row_ids == IMAGE).sum() == 576  # image_seq_length of the real config: (336 / 14) ** 2
        assert row_ids[(row_ids != PAD)][0] == BOS  # one <s>, at the start
        assert (row_ids == BOS).sum() == 1
