"""`earthvl train blip2` and `earthvl eval caption` on the replica of Salesforce/blip2-opt-2.7b (tests/hub): 32 query
tokens, OPT's `</s>` (2) as bos, and a generation config that stops at "\\n" (50118), not at the tokenizer's eos."""

import json

import pytest
from datasets import Image as ImageFeature
from transformers import GenerationConfig

from earthvl.cli import main as cli
from earthvl.eval_results import read_results
from earthvl.eval.run import predictions_path
from earthvl.data import load_split
from earthvl.models.blip2 import generate_captions, load_adapter
from earthvl.models.pixels import PixelTransform
from earthvl.recipes import recipe_path
from earthvl.scripts.train_blip2 import make_parser
from earthvl.train.blip2 import train_blip2
from earthvl.train.collate import IGNORE_INDEX
from hub_models import BLIP2, hub_id

QUERIES, IMAGE, BOS, PAD, NEWLINE = 32, 50265, 2, 1, 50118

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(hub_replica, sample_gaia, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub-blip2") / "run"
    args = ["--config", recipe_path("blip2/tiny"), "--model_name_or_path", hub_id(hub_replica, BLIP2), "--datasets", f"{sample_gaia}:default",
            "--output_dir", str(out), "--eval_split", "none", "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--prompt", "a satellite photo of", "--max_new_tokens", "12"]  # fmt: skip
    return train_blip2(*make_parser().parse_args_and_config(args)), out


def test_labels_skip_the_32_queries_and_the_prompt_and_end_where_generation_stops(trained):
    trainer, out = trained
    tokenizer = trainer.processing_class.tokenizer
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    prefix = QUERIES + len(tokenizer("a satellite photo of")["input_ids"])
    for ids, labels, row in zip(batch["input_ids"], batch["labels"], rows):
        assert ids[:QUERIES].eq(IMAGE).all() and ids[QUERIES] == BOS  # OPT's </s> is its bos, after the queries
        assert labels[:prefix].eq(IGNORE_INDEX).all()
        caption = labels[labels != IGNORE_INDEX]
        assert caption[-1] == NEWLINE  # what Salesforce's generation config stops at (LAVIS ends captions with "\n")
        assert tokenizer.decode(caption[:-1]).strip() == row["texts"][0]
        assert ids[prefix + len(caption) :].eq(PAD).all()
    saved = GenerationConfig.from_pretrained(out)
    stops = [saved.eos_token_id] if isinstance(saved.eos_token_id, int) else saved.eos_token_id
    assert NEWLINE in stops and saved.max_new_tokens == 12  # the Trainer adds the tokenizer's eos (2) beside it
    assert json.loads((out / "captioning.json").read_text()) == {"prompt": "a satellite photo of"}


def test_eval_caption_of_the_adapter_uses_the_saved_prompt_and_generation(trained, hub_replica, sample_gaia, tmp_path):
    _, adapter = trained
    out = tmp_path / "caption.json"
    assert cli(["eval", "caption", "--model", str(adapter), "--dataset", str(sample_gaia), "--split", "test",
                "--max_samples", "3", "--num_beams", "1", "--num_workers", "0", "--protocols", "coco", "--out", str(out)]) == 0  # fmt: skip
    results = read_results(out)
    assert results["model"]["family"] == "blip2" and results["model"]["base_model"] == BLIP2
    assert results["settings"]["prompt"] == "a satellite photo of"
    assert results["settings"]["generation"]["max_new_tokens"] == 12
    rows = [json.loads(line) for line in predictions_path(out).read_text().splitlines()]
    assert len(rows) == 3 and all(len(row["references"]) == 5 for row in rows)
    model, processor = load_adapter(adapter)
    assert NEWLINE in model.generation_config.eos_token_id
    test = load_split(str(sample_gaia), "default", "test").cast_column("image", ImageFeature(decode=False))
    pixels = PixelTransform.from_processor(processor.image_processor)([test[row["row"]]["image"] for row in rows])
    direct = generate_captions(model.eval(), processor, pixels, prompt="a satellite photo of", num_beams=1)
    assert [row["prediction"] for row in rows] == direct  # the saved prompt and 12-token limit, "\n" stripped
    assert all("\n" not in caption for caption in direct)
