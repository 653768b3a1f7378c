"""`earthvl train vlm` (QLoRA, merge) and `earthvl eval caption|classify` on the replica of llava-hf/llava-1.5-7b-hf
(tests/hub): its real config, processor, tokenizer layout and chat template (which marks each answer plus a space
and no `</s>`); the chat-template policy for training (earthvl.models.vlm) and `--chat_template`."""

import json

import pytest
import test_publish
import torch
from huggingface_hub import ModelCard
from peft import PeftModel
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration
from trl import SFTConfig
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from earthvl.cli import main as cli
from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.eval.benchmarks import load_benchmark
from earthvl.eval.classification import normalise_answer
from earthvl.eval.generation import LlavaGenerator
from earthvl.eval_results import read_results
from earthvl.eval.run import predictions_path
from earthvl.hub import publish_model
from earthvl.images import open_image
from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE
from earthvl.models.vlm import load_adapter, load_vlm, training_chat_template, use_chat_template
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.train.conversations import to_conversations
from earthvl.train.vlm import VlmModelArguments, VlmScriptArguments, train_vlm
from hub_models import LLAVA, hub_id
from test_publish_model import checkout, index, model_hub, sent  # noqa: F401  (model_hub: the recording HfApi)

hub = test_publish.hub  # the patched HfApi that model_hub extends

EOS, IMAGE, PAD, BOS = 2, 32000, 32001, 1

# A user's own template: GeoChat-like, with a system line, and the answer with its </s> inside the markers.
USER_TEMPLATE = (
    "{{ bos_token }}A chat about a satellite image. "
    "{% for message in messages %}"
    "{% set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}{{ text }} "
    "{% else %}ASSISTANT:{% generation %} {{ text }}{{ eos_token }}{% endgeneration %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def arguments(hub_replica, gaia, out, *, steps=1, chat_template=None, merge=False):
    script = VlmScriptArguments(
        datasets=[f"{gaia}:default"], eval_split=None, chat_template=chat_template, merge_adapter=merge
    )
    training = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=2, max_steps=steps, learning_rate=1e-3, report_to=[],
        use_cpu=True, activation_checkpointing=False, seed=0, max_length=None, assistant_only_loss=True,
        save_strategy="no", logging_steps=50, bf16=False,
    )  # fmt: skip
    model = VlmModelArguments(model_name_or_path=hub_id(hub_replica, LLAVA), dtype="float32", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    return script, training, model


@pytest.fixture(scope="module")
def trained(hub_replica, sample_gaia, tmp_path_factory):
    """One QLoRA step (bitsandbytes NF4 on CPU) from the llava-hf replica, merged too."""
    out = tmp_path_factory.mktemp("hub-vlm") / "run"
    return train_vlm(*arguments(hub_replica, sample_gaia, out, merge=True)), out


def check_labels(tokenizer, ids, labels, answers):
    """Each row's labels are exactly its answer's tokens and `</s>`, on the input tokens they label."""
    for row_ids, row_labels, answer in zip(ids, labels, answers):
        labelled = row_labels[row_labels != -100]
        assert labelled[-1] == EOS, tokenizer.decode(labelled[-8:])
        assert tokenizer.decode(labelled[:-1]).strip() == answer
        assert torch.equal(labelled, row_ids[row_labels != -100])
        assert (row_ids == IMAGE).sum() == 576  # image_seq_length of the real config: (336 / 14) ** 2
        assert row_ids[row_ids != PAD][0] == BOS and (row_ids == BOS).sum() == 1


@pytest.mark.slow
def test_training_from_llava_hf_labels_every_answer_and_its_end_of_turn(trained):
    trainer, out = trained
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)  # the collator training used, with the template it chose
    check_labels(trainer.processing_class.tokenizer, batch["input_ids"], batch["labels"], [row["messages"][1]["content"][0]["text"] for row in rows])
    # the shipped template could not end turns: earthvl's trained, and is what the adapter and merged model carry
    for folder in (out, out / "merged"):
        assert AutoProcessor.from_pretrained(folder).chat_template == LLAVA_CHAT_TEMPLATE


@pytest.mark.slow
def test_the_merged_model_keeps_the_real_flags_and_generates_like_the_adapter(trained):
    _, out = trained
    merged = LlavaForConditionalGeneration.from_pretrained(out / "merged", dtype=torch.float32).eval()
    config = merged.config
    assert (config.image_token_id, config.image_seq_length, config.vision_feature_layer) == (IMAGE, 576, -2)
    assert (config.vision_feature_select_strategy, config.projector_hidden_act, config.text_config.vocab_size) == ("default", "gelu", 32064)
    assert not hasattr(merged, "peft_config") and not list((out / "merged").glob("*.bin"))
    adapter, processor = load_adapter(out, dtype=torch.float32)
    picture = Image.effect_noise((300, 260), 60).convert("RGB")
    generator = LlavaGenerator(adapter.eval(), processor, CAPTION_INSTRUCTION, max_new_tokens=5)
    merged_generator = LlavaGenerator(merged, AutoProcessor.from_pretrained(out / "merged"), CAPTION_INSTRUCTION, max_new_tokens=5)
    assert generator([picture]) == merged_generator([picture])


def test_eval_prompts_carry_one_bos_with_either_template(hub_replica):
    model, processor = load_vlm(hub_id(hub_replica, LLAVA), dtype=torch.float32)
    for template in (processor.chat_template, LLAVA_CHAT_TEMPLATE):  # llava-hf's writes no <s>; earthvl's does
        use_chat_template(processor, template)
        generator = LlavaGenerator(model, processor, CAPTION_INSTRUCTION, max_new_tokens=2)
        ids = processor(images=[Image.new("RGB", (64, 48))], text=[generator.prompt], add_special_tokens=generator.add_special_tokens)["input_ids"][0]
        assert ids[0] == BOS and ids.count(BOS) == 1 and ids.count(IMAGE) == 576
        assert processor.tokenizer.decode(ids[-16:]).endswith(" ASSISTANT:")


@pytest.fixture(scope="module")
def captioned(trained, sample_gaia, tmp_path_factory):
    """`earthvl eval caption` of the trained adapter: its results file."""
    out = tmp_path_factory.mktemp("hub-vlm-eval") / "caption.json"
    assert cli(["eval", "caption", "--model", str(trained[1]), "--dataset", str(sample_gaia), "--split", "test", "--max_samples", "2",
                "--max_new_tokens", "4", "--protocols", "coco", "--num_workers", "0", "--out", str(out)]) == 0  # fmt: skip
    return out


@pytest.mark.slow
def test_eval_caption_and_classify_of_the_trained_adapter(trained, captioned, hub_replica, sample_world, sample_gaia, tmp_path):
    _, adapter = trained
    results = read_results(captioned)
    assert results["model"]["family"] == "vlm" and results["model"]["base_model"] == LLAVA
    assert results["settings"]["prompt"] == CAPTION_INSTRUCTION and results["settings"]["generation"]["max_new_tokens"] == 4
    predictions = [json.loads(line) for line in predictions_path(captioned).read_text().splitlines()]
    model, processor = load_adapter(adapter, dtype=torch.float32)
    benchmark = load_benchmark(str(sample_gaia), "caption", split="test", max_samples=2)
    images = [open_image(benchmark.rows[row["row"]][benchmark.image_column]) for row in predictions]
    direct = LlavaGenerator(model.eval(), processor, CAPTION_INSTRUCTION, max_new_tokens=4)(images)
    assert [row["prediction"] for row in predictions] == direct

    out = tmp_path / "classify.json"
    assert cli(["eval", "classify", "--model", str(adapter), "--dataset", str(sample_world.scenes), "--max_samples", "3",
                "--max_new_tokens", "3", "--num_workers", "0", "--out", str(out)]) == 0  # fmt: skip
    results = read_results(out)
    rows = [json.loads(line) for line in predictions_path(out).read_text().splitlines()]
    names = results["settings"]["class_names"]
    hits = [normalise_answer(row["answer"]) == normalise_answer(names[row["label"]]) for row in rows]
    assert len(rows) == 3 and results["metrics"]["geochat"]["acc1"] == pytest.approx(sum(hits) / 3)


@pytest.mark.parametrize("kind", ["earthvl", "user"])
def test_a_template_that_ends_turns_labels_exactly_the_answer_and_eos(hub_replica, sample_gaia, tmp_path, kind):
    if kind == "earthvl":
        path = tmp_path / "llava.jinja"
        path.write_text(LLAVA_CHAT_TEMPLATE)
    else:
        path = tmp_path / "chat_template.json"
        path.write_text(json.dumps({"chat_template": USER_TEMPLATE}))
    model, processor = load_vlm(hub_id(hub_replica, LLAVA), dtype=torch.float32)
    template = training_chat_template(model, processor, path)
    assert template == (LLAVA_CHAT_TEMPLATE if kind == "earthvl" else USER_TEMPLATE)
    use_chat_template(processor, template)
    rows, _ = to_conversations(load_split(str(sample_gaia), "default", "train"))
    examples = [rows[i] for i in range(3)]
    batch = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)(examples)
    check_labels(processor.tokenizer, batch["input_ids"], batch["labels"], [row["messages"][1]["content"][0]["text"] for row in examples])
    if kind == "user":
        assert "A chat about a satellite image." in processor.tokenizer.decode(batch["input_ids"][0])


def test_templates_that_cannot_end_turns_are_refused_naming_the_file(hub_replica, sample_gaia, tmp_path, capsys):
    model, processor = load_vlm(hub_id(hub_replica, LLAVA), dtype=torch.float32)
    shipped = hub_replica(LLAVA) / "chat_template.json"  # llava-hf's own: the answer and a space, no </s>
    outside = tmp_path / "eos-outside.jinja"
    outside.write_text(USER_TEMPLATE.replace("{{ eos_token }}{% endgeneration %}", "{% endgeneration %}{{ eos_token }}"))
    unmarked = tmp_path / "unmarked.jinja"
    unmarked.write_text(USER_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}{{ message.content[0].text ")
    reasons = {
        shipped: "'first answer' is marked as 'first answer ', without the end of turn '</s>'",
        outside: "'first answer' is marked as 'first answer', without the end of turn '</s>'",
        unmarked: "marks no assistant tokens",
        broken: "does not render",
    }
    for path, reason in reasons.items():
        with pytest.raises(EarthvlError, match="chat template") as error:
            training_chat_template(model, processor, path)
        assert str(path) in str(error.value) and reason in str(error.value)
    with pytest.raises(EarthvlError, match="no such file"):
        training_chat_template(model, processor, tmp_path / "missing.jinja")

    argv = ["train", "vlm", "--model_name_or_path", hub_id(hub_replica, LLAVA), "--datasets", f"{sample_gaia}:default", "--eval_split",
            "none", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--max_steps", "1"]  # fmt: skip
    assert cli([*argv, "--chat_template", str(shipped)]) == 2
    error = capsys.readouterr().err
    assert f"chat template {shipped} cannot teach the model to stop" in error and "Traceback" not in error
    assert cli([*argv, "--chat_template_path", str(shipped)]) == 2
    assert "--chat_template" in capsys.readouterr().err
    assert not (tmp_path / "out" / "adapter_config.json").exists()


@pytest.mark.slow
def test_card_and_offline_publish_of_the_adapter(trained, captioned, hub_replica, model_hub, tmp_path):
    _, adapter = trained
    assert cli(["card", "--results", str(captioned), "--model_dir", str(adapter), "--model_id", "earthvl/llava-rs"]) == 0
    card = ModelCard.load(adapter / "README.md")
    assert card.data.base_model == LLAVA and card.data.library_name == "peft"
    coco = read_results(captioned)["metrics"]["coco"]
    assert sorted(index((adapter / "README.md").read_bytes())[1].values()) == sorted(coco.values())
    publish_model(adapter, "earthvl/llava-rs")
    files = sent(model_hub)
    assert not any(name.startswith("merged/") for name in files) and "eval/caption.json" in files
    assert files["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    pushed = checkout(files, tmp_path / "download")
    processor = AutoProcessor.from_pretrained(pushed)
    assert processor.chat_template == LLAVA_CHAT_TEMPLATE  # what the adapter was trained with travels with it
    assert (processor.patch_size, processor.num_additional_image_tokens) == (14, 1)
    base = LlavaForConditionalGeneration.from_pretrained(LLAVA, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, pushed)
    saved = load_file(adapter / "adapter_model.safetensors")
    assert sum("lora_" in name for name, _ in reloaded.named_parameters()) == len(saved) > 0
