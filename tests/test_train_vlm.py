"""QLoRA instruction tuning of the tiny LLaVA on the sample world: quantisation layout, LoRA placement, the label
mask, a held-out improvement a broken mask or frozen adapter would miss, the data mixture, and reloadable output."""

import json

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoProcessor, LlavaForConditionalGeneration
from trl import SFTConfig
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from earthvl import cli
from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.builders.gaia.build import build_gaia
from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.model_names import resolve_model
from earthvl.models.vlm import load_vlm, lora_config
from earthvl.recipes import recipe_path, shipped_recipes
from earthvl.sample import generate_sample
from earthvl.train.conversations import to_conversations
from earthvl.train.foundation import mix
from earthvl.train.vlm import VlmModelArguments, VlmScriptArguments, train_vlm


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    world = generate_sample(root / "world", tiles=24, seed=3, gaia_images=24, progress=False)
    build_chatearthnet(world.chatearthnet.root, root / "cen", configs="gpt35", progress=False, num_proc=1)
    build_gaia(world.gaia.root, root / "gaia", configs="default", progress=False)
    return root


def heldout_loss(model, processor, rows) -> float:
    """Mean per-token loss on the held-out captions (assistant tokens only)."""
    collator = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
    model.eval()
    total = tokens = 0
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            batch = collator([rows[i] for i in range(start, min(start + 8, len(rows)))])
            count = int((batch["labels"] != -100).sum())
            total += model(**batch).loss.item() * count
            tokens += count
    return total / tokens


def arguments(data, out, **training):
    script = VlmScriptArguments(datasets=[f"{data / 'cen'}:gpt35"], eval_split=None)
    config = {**dict(output_dir=str(out), per_device_train_batch_size=8, num_train_epochs=8, learning_rate=2e-3,
                     lr_scheduler_type="cosine", logging_steps=50, save_strategy="no", report_to=[], use_cpu=True,
                     activation_checkpointing=False, seed=0, max_length=None, assistant_only_loss=True, bf16=False), **training}
    return script, SFTConfig(**config), VlmModelArguments(model_name_or_path="tiny-llava", dtype="float32", lora_dropout=0.0)


def test_quantisation_layout_and_lora_placement():
    model, _ = load_vlm(resolve_model("tiny-llava"), load_in_4bit=True, dtype=torch.float32)
    quantised = [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]
    assert quantised and all(name.startswith("model.language_model.") for name in quantised)
    assert model.config.quantization_config.bnb_4bit_quant_type == "nf4"
    assert model.config.quantization_config.bnb_4bit_use_double_quant is True
    for prefix in ("model.vision_tower.", "model.multi_modal_projector.", "lm_head."):
        params = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        assert params and all(p.dtype == torch.float32 for p in params), prefix
    peft = get_peft_model(model, lora_config())
    adapted = [name for name, _ in peft.named_modules() if name.endswith(".lora_A")]
    assert len(adapted) == len(quantised)  # every LLM linear layer, nothing else
    assert not any("vision_tower" in name or "multi_modal_projector" in name for name in adapted)
    with_projector = get_peft_model(load_vlm(resolve_model("tiny-llava"), load_in_4bit=True)[0], lora_config(train_projector=True))
    trainable = {n.split(".modules_to_save")[0] for n, p in with_projector.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trainable and all("multi_modal_projector" in name for name in trainable)


def test_no_label_on_image_prompt_or_padding_tokens(data):
    model, processor = load_vlm(resolve_model("tiny-llava"))
    rows, _ = to_conversations(load_split(str(data / "cen"), "gpt35", "train"))
    batch = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)([rows[i] for i in range(6)])
    labels, ids = batch["labels"], batch["input_ids"]
    tokenizer = processor.tokenizer
    assert not torch.any((labels != -100) & (ids == tokenizer.image_token_id))
    assert not torch.any((labels != -100) & (batch["attention_mask"] == 0))
    for i in range(6):
        labelled = ids[i][labels[i] != -100]
        assert tokenizer.decode(labelled).strip() == rows[i]["messages"][1]["content"][0]["text"] + "</s>"


def _inverted_labels(collate):
    """A collator with the label mask the wrong way round: loss on the prompt, none on the caption."""

    def wrong(self, examples):
        batch = collate(self, examples)
        prompt = (batch["labels"] == -100) & (batch["attention_mask"] == 1)
        batch["labels"] = batch["input_ids"].masked_fill(~prompt, -100)
        return batch

    return wrong


@pytest.mark.slow
@pytest.mark.parametrize("broken", [None, "frozen adapter", "inverted label mask"])
def test_qlora_improves_held_out_captions(data, tmp_path, monkeypatch, broken):
    held_out, _ = to_conversations(load_split(str(data / "cen"), "gpt35", "validation"), paraphrase=False)
    base, processor = load_vlm(resolve_model("tiny-llava"), load_in_4bit=True, dtype=torch.float32)
    before = heldout_loss(base, processor, held_out)
    if broken == "inverted label mask":
        collator = DataCollatorForVisionLanguageModeling
        monkeypatch.setattr(collator, "torch_call", _inverted_labels(collator.torch_call))
    # a frozen adapter learns nothing in one step or in eight epochs: `after` is the same, so one step shows it
    frozen = {"learning_rate": 0.0, "max_steps": 1} if broken == "frozen adapter" else {}
    trainer = train_vlm(*arguments(data, tmp_path / "run", **frozen))
    monkeypatch.undo()
    after = heldout_loss(trainer.model, processor, held_out)
    if broken is None:
        assert after < before - 0.6, (before, after)
    else:
        assert after > before - 0.2, (broken, before, after)


@pytest.mark.slow
def test_saved_adapter_reloads_to_the_same_outputs(data, tmp_path):
    trainer = train_vlm(*arguments(data, tmp_path / "run", num_train_epochs=1))
    rows, _ = to_conversations(load_split(str(data / "cen"), "gpt35", "validation"), paraphrase=False)
    base, processor = load_vlm(resolve_model("tiny-llava"), load_in_4bit=True, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "run")
    batch = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)([rows[0], rows[1]])
    trained = trainer.model.eval()
    reloaded.eval()
    trained_params, reloaded_params = dict(trained.named_parameters()), dict(reloaded.named_parameters())
    assert trained_params.keys() == reloaded_params.keys()
    assert all(torch.equal(trained_params[n], reloaded_params[n]) for n in trained_params)
    with torch.no_grad():
        # bitsandbytes' CPU 4-bit path rounds differently once a layer has run backward: logits agree to ~1e-3
        assert torch.allclose(trained(**batch).logits, reloaded(**batch).logits, atol=1e-2)
    prompt = processor.apply_chat_template([rows[0]["messages"][:1]], add_generation_prompt=True)
    inputs = processor(images=rows[0]["images"], text=prompt, return_tensors="pt")
    generate = dict(max_new_tokens=12, do_sample=False)
    assert torch.equal(trained.generate(**inputs, **generate), reloaded.generate(**inputs, **generate))
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "run").glob("*.bin"))  # safetensors and JSON only, no pickles
    assert json.loads((tmp_path / "run" / "training_args.json").read_text())["learning_rate"] == 2e-3


def test_mixture_follows_the_weights(data):
    cen, _ = to_conversations(load_split(str(data / "cen"), "gpt35", "train"))
    gaia, _ = to_conversations(load_split(str(data / "gaia"), "default", "train"))
    mixed = mix([cen, gaia], [1.0, 3.0], seed=0)
    total = len(cen) + len(gaia)
    counts = [mixed.data.column("source").to_pylist().count(i) for i in (0, 1)]
    assert counts == [round(total / 4), round(total * 3 / 4)]
    row = mixed[counts[0]]  # the first GAIA row of the mixture
    assert row["messages"][1]["content"][0]["text"].startswith("The image showcases:")
    with pytest.raises(EarthvlError, match="one positive weight per dataset"):
        mix([cen, gaia], [1.0], seed=0)


@pytest.mark.slow
def test_cli_trains_from_a_shipped_recipe(data, tmp_path, capsys):
    assert "vlm/geochat" in shipped_recipes() and recipe_path("vlm/tiny").endswith("recipes/vlm/tiny.yaml")
    out = tmp_path / "cli"
    argv = ["train", "vlm", "--config", "vlm/tiny", "--datasets", f"{data / 'cen'}:gpt35", "--output_dir", str(out),
            "--num_train_epochs", "1", "--eval_split", "validation"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"saved the adapter and processor to {out}" in printed
    assert (out / "adapter_config.json").is_file() and (out / "processor_config.json").is_file()


@pytest.mark.slow
def test_merged_model_loads_plainly_and_generates_like_the_adapter(data, tmp_path):
    script, training, model_args = arguments(data, tmp_path / "run", num_train_epochs=2)
    script.merge_adapter = True
    train_vlm(script, training, model_args)
    merged = LlavaForConditionalGeneration.from_pretrained(tmp_path / "run" / "merged")
    assert not list((tmp_path / "run" / "merged").glob("*.bin")) and not hasattr(merged, "peft_config")
    base, processor = load_vlm(resolve_model("tiny-llava"), dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, tmp_path / "run").eval()
    merged_processor = AutoProcessor.from_pretrained(tmp_path / "run" / "merged")
    assert merged_processor.chat_template == processor.chat_template
    rows, _ = to_conversations(load_split(str(data / "cen"), "gpt35", "validation"), paraphrase=False)
    untrained = LlavaForConditionalGeneration.from_pretrained(resolve_model("tiny-llava"))
    changed = False
    for row in (rows[0], rows[1]):
        prompt = merged_processor.apply_chat_template([row["messages"][:1]], add_generation_prompt=True)
        inputs = merged_processor(images=row["images"], text=prompt, return_tensors="pt")
        generate = dict(max_new_tokens=16, do_sample=False)
        output = merged.generate(**inputs, **generate)
        assert torch.equal(output, adapted.generate(**inputs, **generate))
        changed |= not torch.equal(output, untrained.generate(**inputs, **generate))
    assert changed  # the merge really carries the training
