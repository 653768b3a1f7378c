"""Built configs as TRL conversational rows: one caption per image per epoch, the evaluation instruction or its
paraphrases, and rows TRL's vision-language collator turns into labels on the caption alone."""

import pytest
import torch
from datasets import load_dataset
from transformers import AutoProcessor
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.builders.gaia.build import build_gaia
from earthvl.errors import EarthvlError
from earthvl.model_names import resolve_model
from earthvl.prompts import CAPTION_INSTRUCTION, CAPTION_PARAPHRASES
from earthvl.train.conversations import to_conversations


@pytest.fixture(scope="module")
def gaia(sample_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("gaia") / "gaia"
    build_gaia(sample_world.gaia.root, out, splits="train", progress=False)
    return str(out)


@pytest.fixture(scope="module")
def chatearthnet(sample_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("cen") / "cen"
    build_chatearthnet(sample_world.chatearthnet.root, out, configs="gpt35", splits="train", progress=False, num_proc=1)
    return str(out)


def turns(row):
    user, assistant = row["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert user["content"][0] == {"type": "image"} and len(row["images"]) == 1
    return user["content"][1]["text"], assistant["content"][0]["text"]


def test_gaia_samples_one_of_the_five_captions_per_epoch(gaia, tmp_path):
    dataset = load_dataset(gaia, "default", split="train", cache_dir=str(tmp_path))
    rows, transform = to_conversations(dataset, seed=0)
    assert len(rows) == len(dataset)
    chosen = {}
    for epoch in range(12):
        transform.set_epoch(epoch)
        for index, (source, row) in enumerate(zip(dataset, rows)):
            instruction, caption = turns(row)
            assert caption in source["captions"] and instruction in CAPTION_PARAPHRASES
            assert row["images"][0].size == source["image"].size
            chosen.setdefault(index, []).append(caption)
    transform.set_epoch(3)
    assert [turns(row)[1] for row in rows] == [chosen[i][3] for i in range(len(rows))]  # deterministic per epoch
    assert all(len(set(captions)) >= 3 for captions in chosen.values())  # and re-drawn across epochs
    assert len({caption for captions in chosen.values() for caption in captions}) > 3 * len(rows)


def test_chatearthnet_rows_keep_their_caption_and_eval_instruction_without_paraphrases(chatearthnet, tmp_path):
    dataset = load_dataset(chatearthnet, "gpt35", split="train", cache_dir=str(tmp_path))
    rows, _ = to_conversations(dataset, paraphrase=False)
    assert [turns(row) for row in rows] == [(CAPTION_INSTRUCTION, source["caption"]) for source in dataset]


def test_configs_without_pixels_or_captions_are_refused(gaia, tmp_path):
    metadata = load_dataset(gaia, "metadata", split="train", cache_dir=str(tmp_path))
    with pytest.raises(EarthvlError, match="no 'image' column.*'default'"):
        to_conversations(metadata)
    with pytest.raises(EarthvlError, match="no caption column"):
        to_conversations(load_dataset(gaia, "default", split="train", cache_dir=str(tmp_path)).remove_columns("captions"))


def test_rows_without_captions_are_left_out_and_counted(gaia, tmp_path, caplog):
    dataset = load_dataset(gaia, "default", split="train", cache_dir=str(tmp_path))
    emptied = dataset.map(lambda row, i: {"captions": [] if i < 2 else row["captions"]}, with_indices=True)
    rows, _ = to_conversations(emptied)
    assert len(rows) == len(dataset) - 2
    assert f"left out 2 of {len(dataset)} rows" in caplog.text


def test_trl_collator_puts_labels_on_the_caption_only(chatearthnet, tmp_path):
    processor = AutoProcessor.from_pretrained(resolve_model("tiny-llava"))
    dataset = load_dataset(chatearthnet, "gpt35", split="train", cache_dir=str(tmp_path))
    rows, _ = to_conversations(dataset)
    collator = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
    batch = collator([rows[0], rows[1]])
    assert batch["pixel_values"].shape[0] == 2
    for i in range(2):
        labels = batch["labels"][i][batch["labels"][i] != -100]
        assert processor.tokenizer.decode(labels).strip() == turns(rows[i])[1] + "</s>"
    assert torch.all(batch["labels"][batch["input_ids"] == processor.tokenizer.image_token_id] == -100)
