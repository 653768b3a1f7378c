"""LoRA captioning fine-tuning of the tiny BLIP-2 on the sample world: the label mask, the quantisation and LoRA
layout, held-out caption metrics that rise, and outputs that reload (base + adapter, merged) with the same captions."""

import json

import bitsandbytes as bnb
import pytest
import torch
from datasets import Image as ImageFeature
from peft import PeftModel, get_peft_model
from PIL import Image as PILImage
from safetensors.torch import load_file
from transformers import AutoProcessor, Blip2ForConditionalGeneration

from earthvl.data import load_split
from earthvl.eval.metrics import corpus_bleu
from earthvl.models.blip2 import blip2_prompt_ids, generate_captions, load_blip2, lora_config
from earthvl.models.pixels import PixelTransform
from earthvl.model_names import resolve_model
from earthvl.models.tiny import NUM_QUERY_TOKENS
from earthvl.recipes import recipe_path
from earthvl.scripts.train_blip2 import make_parser
from earthvl.train.blip2 import train_blip2
from earthvl.train.collate import IGNORE_INDEX, Blip2Collator


def recipe(datasets, out, *extra, name="blip2/tiny"):
    args = ["--config", recipe_path(name), "--datasets", *datasets, "--output_dir", str(out), *extra]
    return make_parser().parse_args_and_config(args)


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(resolve_model("tiny-blip2"))


def test_labels_are_the_caption_and_eos_only(processor):
    pixels = torch.zeros(3, 64, 64)
    rows = [{"pixel_values": pixels, "texts": ["smoke drifting east over the hills"]}, {"pixel_values": pixels, "texts": ["a flood"]}]
    batch = Blip2Collator(processor, prompt="a satellite photo of")(rows)
    tokenizer = processor.tokenizer
    prefix = blip2_prompt_ids(processor, "a satellite photo of")
    # the prefix is laid out as the processor lays out its own text input
    stock = processor(images=[PILImage.new("RGB", (64, 64))], text=["a satellite photo of"], return_tensors="pt")
    assert prefix == stock["input_ids"][0].tolist()
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    for row, caption in enumerate(["smoke drifting east over the hills", "a flood"]):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        body = tokenizer(" " + caption, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        end = len(prefix) + len(body)
        assert ids[:end].tolist() == prefix + body
        assert labels[: len(prefix)].eq(IGNORE_INDEX).all()  # image queries, bos and prompt
        assert labels[len(prefix) : end].tolist() == body
        assert labels[end:].eq(IGNORE_INDEX).all() and ids[end:].eq(tokenizer.pad_token_id).all() and not mask[end:].any()
        assert not labels.eq(image_token).any() and mask[:end].all()
    assert ids[:NUM_QUERY_TOKENS].eq(image_token).all()
    cut = Blip2Collator(processor, max_caption_tokens=3)(rows[:1])
    assert cut["labels"][0][cut["labels"][0] != IGNORE_INDEX].tolist()[-1] == tokenizer.eos_token_id
    assert (cut["labels"][0] != IGNORE_INDEX).sum() == 3


def test_quantisation_keeps_the_vision_side_and_lora_hits_only_the_language_models_attention():
    model, _ = load_blip2(resolve_model("tiny-blip2"), load_in_4bit=True, dtype=torch.float32)
    four_bit = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert four_bit and all(name.startswith("language_model.model.decoder.") for name in four_bit)
    assert any(name.endswith("fc1") for name in four_bit)
    peft = get_peft_model(model, lora_config())
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in peft.named_parameters() if ".lora_A" in name}
    assert adapted and all(".language_model." in name and name.rsplit(".", 1)[1] in {"q_proj", "k_proj", "v_proj", "out_proj"} for name in adapted)
    assert len(adapted) == 4 * 2  # four projections in each of the two OPT layers
    trainable = [name for name, p in peft.named_parameters() if p.requires_grad]
    assert all("lora_" in name for name in trainable)


def held_out(caption_world, model, processor):
    test = load_split(str(caption_world["gaia"]), "default", "test").cast_column("image", ImageFeature(decode=False))
    pixels = PixelTransform.from_processor(processor.image_processor)(test["image"])
    captions = generate_captions(model.eval(), processor, pixels, num_beams=1, max_new_tokens=60)
    return corpus_bleu(captions, test["captions"]), captions


@pytest.fixture(scope="module")
def trained(caption_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("blip2") / "run"
    trainer = train_blip2(*recipe([f"{caption_world['gaia']}:default"], out, "--eval_split", "none", "--merge_adapter"))
    return trainer, out


@pytest.mark.slow
def test_lora_fine_tuning_raises_held_out_caption_metrics(caption_world, trained, processor):
    base = Blip2ForConditionalGeneration.from_pretrained(resolve_model("tiny-blip2"))
    before, _ = held_out(caption_world, base, processor)
    trainer, _ = trained
    after, captions = held_out(caption_world, trainer.model, processor)
    # measured: BLEU-4 0.0 -> 0.27, unigram precision 0.0 -> 0.66 (with 1 or 2 torch threads, whatever ran before)
    assert before["bleu"] < 0.02 and before["precision_1"] < 0.1
    assert after["bleu"] >= 0.15 and after["precision_1"] >= 0.4
    assert all(caption.startswith("The image showcases:") for caption in captions)


def test_a_run_trains_the_same_adapter_whatever_state_earlier_code_left_the_global_rng_in(sample_gaia, tmp_path):
    """PEFT draws the LoRA weights when it wraps the model, before the Trainer seeds: the run seeds first, so its
    result is a function of its seed, not of what ran earlier in the process."""
    adapters = []
    for state in (1, 2):
        torch.manual_seed(state)
        out = tmp_path / str(state)
        train_blip2(*recipe([f"{sample_gaia}:default"], out, "--eval_split", "none", "--max_steps", "1"))
        adapters.append(load_file(out / "adapter_model.safetensors"))
    assert adapters[0].keys() == adapters[1].keys() and any("lora_A" in name for name in adapters[0])
    assert all(torch.equal(adapters[0][name], adapters[1][name]) for name in adapters[0])


@pytest.mark.slow
def test_base_plus_adapter_and_the_merged_model_caption_as_the_trained_model(caption_world, trained, processor):
    trainer, out = trained
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "captioning.json", "generation_config.json",
        "processor_config.json", "run.json", "tokenizer.json", "tokenizer_config.json", "trainer_state.json",
        "training_args.json",
    ]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["num_beams"] == 1 and generation["max_new_tokens"] == 60  # the tiny recipe's
    assert json.loads((out / "captioning.json").read_text()) == {"prompt": ""}
    _, expected = held_out(caption_world, trainer.model, processor)
    adapter = PeftModel.from_pretrained(Blip2ForConditionalGeneration.from_pretrained(resolve_model("tiny-blip2")), str(out))
    assert held_out(caption_world, adapter, AutoProcessor.from_pretrained(out))[1] == expected
    merged = Blip2ForConditionalGeneration.from_pretrained(out / "merged")
    assert merged.generation_config.num_beams == 1
    assert held_out(caption_world, merged, AutoProcessor.from_pretrained(out / "merged"))[1] == expected


def test_the_gaia_preset_is_the_papers_recipe():
    script, training, model = recipe(["x"], "o", "--bf16", "false", name="blip2/gaia")
    assert model.model_name_or_path == "Salesforce/blip2-opt-2.7b" and model.use_peft and not model.load_in_4bit
    assert (model.lora_r, model.lora_alpha, model.lora_dropout) == (16, 32, 0.1)
    assert (training.per_device_train_batch_size, training.num_train_epochs) == (16, 5)
    assert (script.caption_scheme, script.num_beams, script.max_new_tokens) == ("synthetic-sample", 5, 120)
    defaults = recipe(["x"], "o", "--model_name_or_path", "tiny-blip2", name="blip2/tiny")[0]
    assert defaults.prompt == ""


def test_generation_follows_the_models_saved_settings_unless_overridden(processor):
    """BLIP-2 hands generation to its language model, whose own config (max_length 20) must not win over the
    settings saved with the model."""
    model, _ = load_blip2(resolve_model("tiny-blip2"))
    generate = model.generate
    lengths = []

    def recording(**inputs):
        out = generate(**inputs)
        lengths.append(out.shape[1] - inputs["input_ids"].shape[1])
        return out

    model.generate = recording
    pixels = torch.rand(2, 3, 64, 64)
    model.generation_config.update(max_new_tokens=3, min_new_tokens=3, num_beams=1)
    generate_captions(model, processor, pixels)
    model.generation_config.update(max_new_tokens=40, min_new_tokens=40)
    generate_captions(model, processor, pixels)
    generate_captions(model, processor, pixels, max_new_tokens=2, min_new_tokens=2)
    assert lengths == [3, 40, 2]
