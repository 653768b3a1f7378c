"""`earthvl train clip` and `earthvl eval classify|retrieve` on the replicas of openai/clip-vit-base-patch32 and
clip-vit-large-patch14-336 (tests/hub): integer image sizes in a CLIPFeatureExtractor-era preprocessor config, the BPE
with `<|startoftext|>` 49406 and `<|endoftext|>` 49407 last, pad = eos, and the legacy `eos_token_id: 2` that makes
the text tower pool at the highest token id."""

import json

import pytest
import test_publish
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from earthvl.cli import main as cli
from earthvl.eval import classification_metrics, retrieval_metrics
from earthvl.eval.benchmarks import load_benchmark
from earthvl.eval_results import read_results
from earthvl.hub import publish_model
from earthvl.images import open_image
from earthvl.models.clip import TextChunker, load_clip, text_embeddings, text_limit
from earthvl.models.pixels import PixelTransform
from earthvl.recipes import recipe_path
from earthvl.scripts.train_clip import make_parser
from earthvl.train.clip import train_clip
from hub_models import CLIP_B32, CLIP_L336, hub_id
from test_publish_model import checkout, index, model_hub, sent  # noqa: F401  (model_hub: the recording HfApi)

hub = test_publish.hub  # the patched HfApi that model_hub extends

SOT, EOT = 49406, 49407


@pytest.mark.parametrize("name, side", [(CLIP_B32, 224), (CLIP_L336, 336)])
def test_text_tower_pools_at_the_end_of_text_token_and_pixels_match_the_processor(hub_replica, name, side):
    model, processor = load_clip(hub_id(hub_replica, name), dtype=torch.float32)
    tokenizer = processor.tokenizer
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (SOT, EOT, EOT)
    assert model.config.text_config.eos_token_id == 2  # the legacy value: pool at argmax(input_ids)
    chunker = TextChunker(tokenizer, text_limit(model, tokenizer))
    assert chunker.limit == 77 - 2
    captions = ["A forested landscape.", "Water covers the western half of the image, with crop land to the east."]
    ids, mask = chunker.pad([sequence for caption in captions for sequence in chunker(caption)])
    assert ids[:, 0].eq(SOT).all() and ids[0, mask[0].sum() - 1] == EOT and ids[0, mask[0].sum() :].eq(EOT).all()
    with torch.no_grad():
        hidden = model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
        eos_position = mask.sum(1) - 1  # the first <|endoftext|>: the padding after it is <|endoftext|> too
        expected = torch.nn.functional.normalize(model.text_projection(hidden[torch.arange(len(ids)), eos_position]), dim=-1)
        at_last = torch.nn.functional.normalize(model.text_projection(hidden[:, -1]), dim=-1)
    embedded = text_embeddings(model, chunker, captions)
    assert torch.allclose(embedded, expected, atol=1e-5)
    assert not torch.allclose(embedded[0], at_last[0], atol=1e-3)  # the short caption is padded: its last slot is pad
    image = Image.effect_noise((300, 260), 60).convert("RGB")
    pixels = PixelTransform.from_processor(processor.image_processor, draft=False)([image])
    assert pixels.shape == (1, 3, side, side)
    assert torch.allclose(pixels, processor(images=[image], return_tensors="pt")["pixel_values"], atol=1e-5)


@pytest.fixture(scope="module")
def trained(hub_replica, sample_gaia, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub-clip") / "run"
    args = ["--config", recipe_path("clip/tiny"), "--model_name_or_path", hub_id(hub_replica, CLIP_B32), "--datasets",
            f"{sample_gaia}:default", "--output_dir", str(out), "--eval_split", "none", "--max_steps", "2",
            "--per_device_train_batch_size", "8"]  # fmt: skip
    train_clip(*make_parser().parse_args_and_config(args))
    return out


def stock(folder, images, texts_per_class):
    """Normalised image embeddings, the class matrix and a text embedder, with the stock processor and tokenizer."""
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output, dim=-1)

        def embed(texts):
            tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            return torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)

        classes = [torch.nn.functional.normalize(embed(texts).mean(0), dim=-1) for texts in texts_per_class]
    return image, torch.stack(classes) if classes else None, embed


@pytest.mark.slow
def test_trained_clip_keeps_the_hub_layout_evaluates_like_the_stock_processor_and_publishes(trained, hub_replica, sample_world, sample_gaia, model_hub, tmp_path):
    saved = json.loads((trained / "processor_config.json").read_text())["image_processor"]  # transformers 5 nests it
    assert (saved["size"], saved["crop_size"], saved["resample"]) == ({"shortest_edge": 224}, {"height": 224, "width": 224}, 3)
    model, processor = load_clip(str(trained), dtype=torch.float32)
    base = CLIPModel.from_pretrained(CLIP_B32)
    assert not torch.equal(model.text_projection.weight, base.text_projection.weight)  # it trained
    # The Trainer aligned the text config's special ids with the tokenizer (eos 2 -> 49407): the tower still pools at
    # the first <|endoftext|>, the end of the text.
    chunker = TextChunker(processor.tokenizer, text_limit(model, processor.tokenizer))
    ids, mask = chunker.pad([chunker("A forested landscape.")[0], chunker("Water covers the western half of the image.")[0]])
    with torch.no_grad():
        hidden = model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = model.text_model(input_ids=ids, attention_mask=mask).pooler_output
    assert torch.allclose(pooled, hidden[torch.arange(2), mask.sum(1) - 1], atol=1e-6)

    out = tmp_path / "classify.json"
    assert cli(["eval", "classify", "--model", str(trained), "--dataset", str(sample_world.scenes), "--num_workers", "0", "--out", str(out)]) == 0
    results = read_results(out)
    benchmark = load_benchmark(str(sample_world.scenes), "classify")
    images = [open_image(cell) for cell in benchmark.rows[benchmark.image_column]]
    prompts = [[template.format(c=name) for template in benchmark.templates] for name in benchmark.class_names]
    image, classes, embed = stock(trained, images, prompts)
    for key, value in classification_metrics(100 * image @ classes.T, benchmark.labels()).items():
        assert results["metrics"]["clip_benchmark"][key] == pytest.approx(value, abs=1e-6, nan_ok=True)

    out = tmp_path / "retrieve.json"
    assert cli(["eval", "retrieve", "--model", str(trained), "--dataset", str(sample_gaia), "--split", "test", "--num_workers", "0", "--out", str(out)]) == 0
    results = read_results(out)
    test = load_benchmark(str(sample_gaia), "retrieve", split="test")
    rows = range(len(test.rows))
    texts = [text for row in rows for text in test.references(row)]
    image, _, embed = stock(trained, [open_image(cell) for cell in test.rows[test.image_column]], [])
    with torch.no_grad():
        expected = retrieval_metrics(image, embed(texts), [row for row in rows for _ in test.references(row)])
    assert results["metrics"]["clip_benchmark"] == pytest.approx(expected, abs=1e-6)

    classify = tmp_path / "classify.json"
    assert cli(["card", "--results", str(classify), str(out), "--model_dir", str(trained), "--model_id", "earthvl/clip-rs"]) == 0
    publish_model(trained, "earthvl/clip-rs")
    files = sent(model_hub)
    assert files["model.safetensors"] == (trained / "model.safetensors").read_bytes()
    values = index(files["README.md"])[1].values()
    assert read_results(out)["metrics"]["clip_benchmark"]["mean_recall"] in values
    pushed = checkout(files, tmp_path / "download")
    assert CLIPProcessor.from_pretrained(pushed).tokenizer("a river")["input_ids"][-1] == EOT
