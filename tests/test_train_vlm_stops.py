"""A model fine-tuned with `earthvl train vlm` from a checkpoint that ships llava-hf's chat template (answers marked
without `</s>`) learns to end its answers: its captions stop before `max_new_tokens` on most held-out images of the
sample world, where the untrained model's never do."""

import shutil

import pytest
import torch
from datasets import Dataset, Features, Image, Value
from transformers import AutoProcessor, LlavaForConditionalGeneration

from earthvl.cli import main as cli
from earthvl.data import load_split
from earthvl.eval.generation import LlavaGenerator
from earthvl.images import open_image
from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE
from earthvl.model_names import resolve_model
from earthvl.models.vlm import load_adapter
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.recipes import recipe_path
from hub_models import HUB, LLAVA, folder_name

MAX_NEW_TOKENS = 24
"""Room for three times the longest training caption."""


def with_llava_hf_template(folder):
    """tiny-llava's files with llava-hf's own chat template in place of earthvl's."""
    shutil.copytree(resolve_model("tiny-llava"), folder)
    (folder / "chat_template.jinja").unlink()
    shutil.copy(HUB / folder_name(LLAVA) / "chat_template.json", folder / "chat_template.json")
    template = AutoProcessor.from_pretrained(folder).chat_template
    assert "{% generation %}" in template and "eos_token" not in template
    return folder


def alt_text_captions(gaia, folder):
    """The sample world's GAIA training images, captioned with their short alt text ("Urban growth around Madrid")."""
    rows = load_split(str(gaia), "default", "train").cast_column("image", Image(decode=False))
    images = [{"bytes": cell["bytes"] or open(cell["path"], "rb").read(), "path": None} for cell in rows["image"]]
    features = Features({"image": Image(), "caption": Value("string")})
    folder.mkdir()
    Dataset.from_dict({"image": images, "caption": rows["image_alt"]}, features=features).to_parquet(str(folder / "train.parquet"))
    assert max(len(text.split()) for text in rows["image_alt"]) <= 8
    return folder


def stopped(model, processor, images):
    """How many of the greedy captions of `images` end with the end-of-turn token within MAX_NEW_TOKENS."""
    generator = LlavaGenerator(model.eval(), processor, CAPTION_INSTRUCTION, max_new_tokens=MAX_NEW_TOKENS)
    inputs = processor(images=images, text=[generator.prompt] * len(images), padding=True,
                       add_special_tokens=generator.add_special_tokens, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        new = model.generate(**inputs, **generator.generation)[:, inputs["input_ids"].shape[1] :]
    return int((new == processor.tokenizer.eos_token_id).any(dim=1).sum())


@pytest.mark.slow
def test_fine_tuning_teaches_the_model_to_stop(sample_gaia, tmp_path):
    base = with_llava_hf_template(tmp_path / "base")
    data = alt_text_captions(sample_gaia, tmp_path / "alt-text")
    out = tmp_path / "run"
    assert cli(["train", "vlm", "--config", recipe_path("vlm/tiny"), "--model_name_or_path", str(base), "--datasets", str(data),
                "--output_dir", str(out), "--eval_split", "none", "--learning_rate", "4e-3"]) == 0  # fmt: skip
    model, processor = load_adapter(out, dtype=torch.float32)
    assert processor.chat_template == LLAVA_CHAT_TEMPLATE  # llava-hf's could not end turns: earthvl's was trained
    held_out = [open_image(cell) for split in ("test", "validation") for cell in load_split(str(sample_gaia), "default", split)["image"]]
    assert len(held_out) >= 8
    untrained = stopped(LlavaForConditionalGeneration.from_pretrained(base), AutoProcessor.from_pretrained(base), held_out)
    trained = stopped(model, processor, held_out)
    assert trained > len(held_out) / 2 and trained - untrained >= len(held_out) / 2, (trained, untrained, len(held_out))
