"""`earthvl train vlm` beyond the basic run: resume after a crash (also mid-save), nine bands, a higher resolution,
classification and VQA rows, bad images, throughput logs and recipe errors."""

import io
import json

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage
from safetensors.torch import load_file
from transformers import AutoProcessor, AutoTokenizer, CLIPVisionModel, LlamaForCausalLM, LlavaForConditionalGeneration
from trl import SFTConfig

from earthvl import cli
from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.images import BadImage
from earthvl.models.assemble import assemble_vlm
from earthvl.model_names import resolve_model
from earthvl.models.vlm import load_adapter
from earthvl.prompts import classify_instruction, vqa_instruction
from earthvl.sample import generate_sample
from earthvl.train.checkpoints import STAGING, last_checkpoint
from earthvl.train.collate import VlmCollator
from earthvl.train.foundation import SKIPPED_IMAGES
from earthvl.train.conversations import to_conversations
from earthvl.train.progress import log_line
from earthvl.train.vlm import VlmModelArguments, VlmScriptArguments, VlmTrainer, train_vlm

CONFIGS = ["gpt35", "gpt35-multispectral"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-options")
    world = generate_sample(root / "world", tiles=12, seed=5, gaia_images=8, progress=False)
    build_chatearthnet(world.chatearthnet.root, root / "cen", configs=CONFIGS, progress=False, num_proc=1)
    return root


def arguments(datasets, out, model=None, **training):
    script = VlmScriptArguments(datasets=datasets, eval_split=None)
    config = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=6, learning_rate=2e-3,
                  logging_steps=50, save_strategy="no", report_to=[], use_cpu=True, activation_checkpointing=False,
                  seed=0, max_length=None, assistant_only_loss=True, bf16=False)
    model_args = VlmModelArguments(model_name_or_path="tiny-llava", dtype="float32", lora_dropout=0.0, **(model or {}))
    return script, SFTConfig(**{**config, **training}), model_args


def adapter_weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def image_bytes(color, size=(64, 64)):
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


# --- resume ------------------------------------------------------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("where", ["after a checkpoint", "during a save"])
def test_resume_after_a_crash_continues_with_the_same_data_order(data, tmp_path, monkeypatch, where):
    # Unquantised LoRA: bitsandbytes' CPU 4-bit path rounds differently in a model reloaded mid-run (~5e-4 on
    # these weights), which would blur the exact comparison this test makes; the resume logic is the same.
    datasets, model = [f"{data / 'cen'}:gpt35"], {"load_in_4bit": False}
    # 7 steps an epoch: the run crosses into epoch 2, with length-grouped batches
    saving = dict(save_strategy="steps", save_steps=2, max_steps=10, train_sampling_strategy="group_by_length")
    train_vlm(*arguments(datasets, tmp_path / "whole", model, **saving))

    run = tmp_path / "crashed"
    if where == "after a checkpoint":
        step = VlmTrainer.training_step

        def crash_at_step_9(self, *args, **kwargs):
            if self.state.global_step == 8:
                raise Crash()
            return step(self, *args, **kwargs)

        monkeypatch.setattr(VlmTrainer, "training_step", crash_at_step_9)
        expected = "checkpoint-8"
    else:
        save = VlmTrainer._save_optimizer_and_scheduler

        def crash_in_the_save_of_step_8(self, output_dir):
            if self.state.global_step == 8:
                raise Crash()  # the adapter weights are already written at this point
            return save(self, output_dir)

        monkeypatch.setattr(VlmTrainer, "_save_optimizer_and_scheduler", crash_in_the_save_of_step_8)
        expected = "checkpoint-6"
    with pytest.raises(Crash):
        train_vlm(*arguments(datasets, run, model, **saving))
    monkeypatch.undo()
    if where == "during a save":
        assert (run / STAGING / "checkpoint-8" / "adapter_model.safetensors").is_file()
        assert not (run / "checkpoint-8").exists()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8"][: int(expected[-1]) // 2]
    assert last_checkpoint(run).endswith(expected) and not (run / STAGING).exists()

    script, training, model_args = arguments(datasets, run, model, **saving)
    script.resume = True
    trainer = train_vlm(script, training, model_args)
    assert trainer.state.global_step == 10
    whole, resumed = adapter_weights(tmp_path / "whole"), adapter_weights(run)
    assert whole.keys() == resumed.keys()
    # the resumed run saw the same batches in the same order: its weights match the uninterrupted run's
    assert max((whole[k] - resumed[k]).abs().max().item() for k in whole) < 1e-7
    earlier = adapter_weights(run / "checkpoint-6")
    assert max((whole[k] - earlier[k]).abs().max().item() for k in whole) > 1e-3  # ... unlike weights 4 steps back


def test_resume_without_a_checkpoint_starts_afresh(data, tmp_path):
    script, training, model_args = arguments([f"{data / 'cen'}:gpt35"], tmp_path / "fresh", max_steps=2)
    script.resume = True
    assert train_vlm(script, training, model_args).state.global_step == 2


# --- nine bands and resolution -----------------------------------------------------------------------------------


def test_nine_band_training_trains_the_extra_channels_and_reloads(data, tmp_path):
    datasets = [f"{data / 'cen'}:gpt35-multispectral"]
    out = tmp_path / "ms"
    trainer = train_vlm(*arguments(datasets, out, model={"multispectral": True}, max_steps=4))
    vision = json.loads((out / "vision.json").read_text())
    assert vision["num_channels"] == 9 and len(vision["band_mean"]) == len(vision["band_std"]) == 9
    assert all(0 < m < 1 for m in vision["band_mean"]) and all(s > 0 for s in vision["band_std"])

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["pixel_values"].shape == (2, 9, 64, 64)

    saved = {k: v for k, v in adapter_weights(out).items() if "patch_embedding" in k}
    assert saved and all(w.shape[1] == 9 for w in saved.values())
    weight = next(iter(saved.values()))
    assert weight[:, 3:].abs().max() > 1e-4  # the six extra bands moved away from their zero start

    model, _ = load_adapter(out, dtype=torch.float32, load_in_4bit=True)  # reloaded as trained: on the 4-bit base
    model.eval(), trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, trainer.model(**batch).logits, atol=1e-2)


def test_bands_on_an_rgb_config_are_refused(data, tmp_path):
    with pytest.raises(EarthvlError, match="lacks the band columns"):
        train_vlm(*arguments([f"{data / 'cen'}:gpt35"], tmp_path / "x", model={"multispectral": True}))


def test_higher_resolution_training_emits_the_new_image_token_count(data, tmp_path):
    out = tmp_path / "hires"
    script, training, model_args = arguments([f"{data / 'cen'}:gpt35"], out, model={"image_size": 96}, max_steps=3)
    script.merge_adapter = True
    trainer = train_vlm(script, training, model_args)
    processor = AutoProcessor.from_pretrained(out)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["pixel_values"].shape[-2:] == (96, 96)
    assert int((batch["input_ids"] == trainer.model.config.image_token_id).sum()) == (96 // 8) ** 2
    merged = LlavaForConditionalGeneration.from_pretrained(out / "merged")
    assert merged.config.vision_config.image_size == 96
    assert merged.model.vision_tower.embeddings.position_embedding.num_embeddings == 12 * 12 + 1
    row = trainer.train_dataset[0]
    prompt = processor.apply_chat_template([row["messages"][:1]], add_generation_prompt=True)
    inputs = processor(images=row["images"], text=prompt, return_tensors="pt")
    adapted, _ = load_adapter(out, dtype=torch.float32)
    generate = dict(max_new_tokens=8, do_sample=False)
    assert torch.equal(merged.generate(**inputs, **generate), adapted.eval().generate(**inputs, **generate))


# --- classification and VQA rows --------------------------------------------------------------------------------


def scenes(n=12, bad_rows=()):
    names = ["forest", "river", "industrial area"]
    colors = [(20, 120, 20), (20, 20, 160), (150, 150, 150)]
    images = [{"bytes": b"not a png" if i in bad_rows else image_bytes(colors[i % 3]), "path": None} for i in range(n)]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"image": images, "label": [i % 3 for i in range(n)]}, features=features)


def test_classification_rows_use_geochats_prompt():
    rows, _ = to_conversations(scenes(), name="scenes")
    user, assistant = rows[4]["messages"]
    assert user["content"][1]["text"] == classify_instruction(["forest", "river", "industrial area"])
    assert user["content"][1]["text"] == (
        "Classify the image from the following classes: forest, river, industrial area. "
        "Answer in one word or a short phrase."
    )
    assert assistant["content"][0]["text"] == "river"
    assert rows.with_format(None)["length"][0] > 10


def test_vqa_rows_use_geochats_suffix():
    dataset = Dataset.from_dict(
        {"image": [{"bytes": image_bytes((0, 0, 200)), "path": None}], "question": ["Is there water?"], "answer": ["yes"]},
        features=Features({"image": Image(), "question": Value("string"), "answer": Value("string")}),
    )
    rows, _ = to_conversations(dataset)
    user, assistant = rows[0]["messages"]
    assert user["content"][1]["text"] == vqa_instruction("Is there water?")
    assert user["content"][1]["text"] == "Is there water? Answer the question using a single word or phrase."
    assert assistant["content"][0]["text"] == "yes"


def test_task_errors_name_the_dataset_and_columns():
    with pytest.raises(EarthvlError, match="scenes cannot train task 'vqa'.*question"):
        to_conversations(scenes(), name="scenes", task="vqa")
    with pytest.raises(EarthvlError, match="cannot tell what to train on"):
        to_conversations(scenes().rename_column("label", "klass"))
    with pytest.raises(EarthvlError, match="on_bad_image"):
        to_conversations(scenes(), on_bad_image="ignore")


# --- bad images ---------------------------------------------------------------------------------------------------


def test_a_bad_image_stops_with_the_row_named_or_is_skipped_and_counted(tmp_path):
    dataset = scenes(n=8, bad_rows=(5,))
    rows, _ = to_conversations(dataset, name="scenes")
    with pytest.raises(BadImage, match=r"scenes row _row=5: cannot decode the image.*--on_bad_image skip"):
        rows[5]
    (tmp_path / "scenes").mkdir()
    dataset.save_to_disk(str(tmp_path / "arrow"))
    Dataset.load_from_disk(str(tmp_path / "arrow")).to_parquet(str(tmp_path / "scenes" / "train.parquet"))
    script, training, model_args = arguments([str(tmp_path / "scenes")], tmp_path / "run", max_steps=2,
                                              per_device_train_batch_size=8)
    script.on_bad_image = "skip"
    trainer = train_vlm(script, training, model_args)
    name = str(tmp_path / "scenes")
    assert trainer.skipped_images == [f"{name} row _row=5: cannot decode the image: not in an image format PIL reads"] * 2
    listed = json.loads((tmp_path / "run" / "skipped_images.json").read_text())
    assert len(listed) == 2 and all("_row=5" in line for line in listed)


def test_the_collator_refuses_a_batch_of_only_bad_images():
    collator = VlmCollator(lambda rows: {"n": len(rows)})
    assert collator([{"bad_image": None}, {"bad_image": "x row 1: broken"}]) == {"n": 1, SKIPPED_IMAGES: ["x row 1: broken"]}
    with pytest.raises(EarthvlError, match="every row of a batch"):
        collator([{"bad_image": "x row 1: broken"}])


# --- logs and recipes ---------------------------------------------------------------------------------------------


def test_logs_carry_throughput_and_read_as_one_line(data, tmp_path, capsys):
    trainer = train_vlm(*arguments([f"{data / 'cen'}:gpt35"], tmp_path / "logs", max_steps=4, logging_steps=2,
                              train_sampling_strategy="group_by_length"))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["samples_per_second"] > 0 and entry["tokens_per_second"] > 0
        tokens_per_sample = entry["tokens_per_second"] / entry["samples_per_second"]
        assert 64 < tokens_per_sample < 400  # 64 image tokens plus the prompt and a caption, no padding counted
    printed = capsys.readouterr()
    assert "tokens/s" in printed.out + printed.err and "step 2/4 | loss" in printed.out + printed.err


def test_log_line_is_readable():
    class State:
        global_step, max_steps = 10, 200

    line = log_line({"loss": 2.31415, "learning_rate": 1e-4, "samples_per_second": 18.25, "tokens_per_second": 5120.0,
                     "total_flos": 1e12}, State())
    assert line == "step 10/200 | loss 2.314 | learning_rate 0.0001 | 18.25 samples/s | 5,120 tokens/s"


def test_an_unknown_recipe_key_is_named(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: tiny-llava\nlora_rnk: 8\n")
    assert cli.main(["train", "vlm", f"--config={recipe}", "--datasets", "x", "--output_dir", str(tmp_path)]) == 2
    assert "unknown key 'lora_rnk' (did you mean 'lora_r'?)" in capsys.readouterr().err


def test_shipped_recipes_use_only_known_keys():
    from earthvl.recipes import check_recipe_keys, recipe_path, shipped_recipes
    from earthvl.scripts import train_blip2, train_clip, train_vlm

    parsers = {"vlm": train_vlm.make_parser(), "clip": train_clip.make_parser(), "blip2": train_blip2.make_parser()}
    checked = [name for name in shipped_recipes() if name.split("/")[0] in parsers]
    assert {name.split("/")[0] for name in checked} == set(parsers)
    for name in checked:
        check_recipe_keys(parsers[name.split("/")[0]], recipe_path(name))
        # Values are checked too; bf16 is off since this machine has no GPU.
        parsers[name.split("/")[0]].parse_args_and_config(
            ["--config", recipe_path(name), "--datasets", "x", "--output_dir", "o", "--bf16", "false"]
        )


# --- assembling a model -------------------------------------------------------------------------------------------


def test_an_assembled_model_keeps_both_halves_and_trains_its_fresh_projector(data, tmp_path):
    llava = LlavaForConditionalGeneration.from_pretrained(resolve_model("tiny-llava"))
    llm = LlamaForCausalLM(llava.config.text_config)
    llm.model.load_state_dict(llava.model.language_model.state_dict())
    llm.lm_head.load_state_dict(llava.lm_head.state_dict())
    llm.save_pretrained(tmp_path / "llm")
    AutoTokenizer.from_pretrained(resolve_model("tiny-llava")).save_pretrained(tmp_path / "llm")

    path = assemble_vlm(resolve_model("tiny-clip"), str(tmp_path / "llm"), tmp_path / "assembled")
    model = LlavaForConditionalGeneration.from_pretrained(path)
    clip = CLIPVisionModel.from_pretrained(resolve_model("tiny-clip"))
    for halves in ((model.model.vision_tower, clip), (model.model.language_model, llm.model), (model.lm_head, llm.lm_head)):
        ours, theirs = halves[0].state_dict(), halves[1].state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    script, training, model_args = arguments([f"{data / 'cen'}:gpt35"], tmp_path / "run", max_steps=3)
    model_args.model_name_or_path = None
    model_args.vision_tower, model_args.language_model = "tiny-clip", str(tmp_path / "llm")
    trainer = train_vlm(script, training, model_args)
    assert model_args.train_projector
    # float32 training (bf16 off): TRL's bf16 cast of a QLoRA model's trained weights is undone, else the projector
    # trained in full would meet float32 activations in bf16 and the first step would fail
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert int((batch["input_ids"] == trainer.model.config.image_token_id).sum()) == (64 // 8) ** 2
    trained = {k: v for k, v in adapter_weights(tmp_path / "run").items() if "multi_modal_projector" in k}
    fresh = {k.split("multi_modal_projector.")[1]: v for k, v in model.state_dict().items() if "multi_modal_projector" in k}
    assert trained and all(
        not torch.allclose(v.float(), fresh[k.split("multi_modal_projector.")[1].replace("modules_to_save.default.", "")])
        for k, v in trained.items() if k.endswith("weight")
    )
    with pytest.raises(EarthvlError, match="both --vision_tower and --language_model"):
        train_vlm(*arguments([f"{data / 'cen'}:gpt35"], tmp_path / "x", model={"vision_tower": "tiny-clip"}))


def test_two_folders_of_the_same_name_are_not_confused(tmp_path):
    """datasets 5.2 caches `load_dataset(folder, config)` by folder name: earthvl reads local folders by file."""
    sizes = {}
    for index, tiles in enumerate((6, 12)):
        world = generate_sample(tmp_path / f"w{index}", tiles=tiles, seed=index, gaia_images=3, progress=False)
        out = tmp_path / f"p{index}" / "cen"
        build_chatearthnet(world.chatearthnet.root, out, configs=["gpt35"], splits="train", progress=False, num_proc=1)
        sizes[index] = (len(load_split(str(out), "gpt35", "train")), len(pq_rows(out)))
    assert sizes[0][0] == sizes[0][1] and sizes[1][0] == sizes[1][1] and sizes[0][0] != sizes[1][0]
    with pytest.raises(EarthvlError, match="no config 'gpt4v'; its configs are gpt35"):
        load_split(str(out), "gpt4v", "train")
    with pytest.raises(EarthvlError, match="has no split 'test'"):
        load_split(str(out), "gpt35", "test")


def pq_rows(folder):
    import pyarrow.parquet as pq

    return [row for path in sorted(folder.glob("data/gpt35/train-*.parquet")) for row in pq.read_table(path, columns=["file_name"]).to_pylist()]
