"""`earthvl publish` of trained models against the patched HfApi of test_publish.py: the commit carries exactly the
model's safetensors, configs, processor and side files, the card and the results under eval/ (never checkpoints,
hidden files, merged/ unless asked, or pickles), the card's model-index equals the results, and what was sent loads
with transformers and PEFT."""

import json
import logging
from pathlib import Path

import pytest
import test_publish
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoProcessor, Blip2ForConditionalGeneration, CLIPModel, CLIPProcessor

from earthvl import cli
from earthvl.cards.model import write_model_card
from earthvl.errors import EarthvlError
from earthvl.eval_results import write_results
from earthvl.hub import folder_kind, publish_model
from earthvl.model_names import resolve_model
from earthvl.recipes import recipe_path
from earthvl.scripts.train_blip2 import make_parser as blip2_parser
from earthvl.scripts.train_clip import make_parser as clip_parser
from earthvl.train.blip2 import train_blip2
from earthvl.train.clip import train_clip

hub = test_publish.hub  # the recording HfApi fixture: created repos and commit operations
TOKEN = test_publish.TOKEN


@pytest.fixture
def model_hub(hub, monkeypatch):
    """`hub`, with the other calls that would reach the Hub recorded too (none of them must be made offline)."""
    hub["other"] = []
    monkeypatch.setattr(
        HfApi, "preupload_lfs_files", lambda self, *args, **kwargs: hub["other"].append("preupload_lfs_files")
    )
    monkeypatch.setattr(ModelCard, "validate", lambda self, *args, **kwargs: hub["other"].append("validate"))
    return hub


def sent(hub):
    """The one commit's files: path in repo -> bytes."""
    ((_, operations, kwargs),) = hub["commits"]
    assert kwargs["repo_type"] == "model" and not hub["other"]
    files = {}
    for op in operations:
        with op.as_file() as handle:
            files[op.path_in_repo] = handle.read()
    return files


def checkout(files, folder):
    """Write the pushed files as a Hub download would lay them out."""
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def index(card_bytes):
    name, evals = model_index_to_eval_results(ModelCard(card_bytes.decode()).data.to_dict()["model-index"])
    return name, {(e.task_type, e.dataset_type, e.metric_name): e.metric_value for e in evals}


def results_file(path, task, metrics, model, family, base=None):
    return write_results(path, {
        "format": "earthvl-eval/1", "task": task,
        "model": {"id": str(model), "revision": None, "family": family, "base_model": base},
        "dataset": {"name": None, "id": "earthvl/chatearthnet", "config": "gpt35", "split": "test", "revision": None, "columns": {}, "num_samples": 48},
        "metrics": metrics, "failures": {"bad_images": 0, "failed_generations": 0, "rows": []},
        "settings": {"device": "cpu", "dtype": "float32"}, "versions": {}, "started": "2025-06-01T12:00:00+00:00", "seconds": 1.5,
    })  # fmt: skip


@pytest.fixture(scope="module")
def clip_run(caption_world, tmp_path_factory):
    """The tiny CLIP fine-tuned for one epoch, with a checkpoint and staging leftovers beside it, and two results."""
    root = tmp_path_factory.mktemp("clip")
    out = root / "run"
    args = ["--config", recipe_path("clip/tiny"), "--datasets", f"{caption_world['cen']}:gpt35", "--output_dir", str(out)]
    trainer = train_clip(
        *clip_parser().parse_args_and_config(args + ["--num_train_epochs", "1", "--eval_split", "none"])
    )
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "optimizer.pt").write_bytes(b"pickled optimizer state")
    (out / ".checkpoint-staging").mkdir()
    (out / ".checkpoint-staging" / "rng_state.pth").write_bytes(b"pickled")
    (out / "model.safetensors.partial").write_bytes(b"unfinished")
    classify = results_file(
        root / "classify.json",
        "classify",
        {"clip_benchmark": {"acc1": 0.4375, "acc5": None, "mean_per_class_recall": 0.3125}},
        out,
        "clip",
    )
    retrieve = results_file(
        root / "retrieve.json",
        "retrieve",
        {
            "clip_benchmark": {
                "text_to_image_R@1": 0.0625,
                "image_to_text_R@1": 0.125,
                "mean_recall": 0.2604166666666667,
            }
        },
        out,
        "clip",
    )
    return trainer.model, out, [classify, retrieve]


@pytest.fixture(scope="module")
def blip2_run(caption_world, tmp_path_factory):
    """The tiny BLIP-2 LoRA adapter after one epoch, with its merged model, and a caption results file."""
    root = tmp_path_factory.mktemp("blip2")
    out = root / "run"
    args = [
        "--config",
        recipe_path("blip2/tiny"),
        "--datasets",
        f"{caption_world['gaia']}:default",
        "--output_dir",
        str(out),
    ]
    train_blip2(
        *blip2_parser().parse_args_and_config(
            args + ["--num_train_epochs", "1", "--eval_split", "none", "--merge_adapter"]
        )
    )
    metrics = {"coco": {"bleu_4": 0.0123, "cider": 0.0456}, "hf": {"bleu": 0.0111, "meteor": 0.0987}}
    caption = results_file(root / "caption.json", "caption", metrics, out, "blip2", base=resolve_model("tiny-blip2"))
    return out, caption


CLIP_FILES = {
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_args.json",
    "trainer_state.json",
    "text_fit.json",
    "run.json",
}


def test_a_clip_commit_is_its_safetensors_configs_card_and_results_and_loads_as_clip(clip_run, model_hub, tmp_path):
    model, out, results = clip_run
    url = publish_model(out, "earthvl/clip-rs", results=results, private=True)
    assert url.endswith("/commit/abc")
    assert model_hub["repos"] == [("earthvl/clip-rs", {"repo_type": "model", "private": True, "exist_ok": True})]
    files = sent(model_hub)
    assert set(files) == CLIP_FILES | {"README.md", "eval/classify.json", "eval/retrieve.json"}
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert files["eval/retrieve.json"] == results[1].read_bytes()
    name, values = index(files["README.md"])
    assert name == "earthvl/clip-rs"
    assert values == {
        ("zero-shot-image-classification", "earthvl/chatearthnet", "acc@1 (CLIP_benchmark)"): 0.4375,
        ("zero-shot-image-classification", "earthvl/chatearthnet", "mean per-class recall (CLIP_benchmark)"): 0.3125,
        ("image-feature-extraction", "earthvl/chatearthnet", "text-to-image R@1 (CLIP_benchmark)"): 0.0625,
        ("image-feature-extraction", "earthvl/chatearthnet", "image-to-text R@1 (CLIP_benchmark)"): 0.125,
        (
            "image-feature-extraction",
            "earthvl/chatearthnet",
            "mean recall over R@1/5/10 both ways (CLIP_benchmark)",
        ): 0.2604166666666667,
    }
    pushed = checkout(files, tmp_path / "download")
    reloaded = CLIPModel.from_pretrained(pushed)
    trained = model.state_dict()
    assert all(torch.equal(value, trained[key].cpu()) for key, value in reloaded.state_dict().items())
    assert CLIPProcessor.from_pretrained(pushed).tokenizer("a river").input_ids


def test_a_blip2_adapter_commit_leaves_merged_out_and_loads_with_peft(blip2_run, model_hub, tmp_path):
    out, caption = blip2_run
    with pytest.raises(
        EarthvlError, match=r"its README.md is not an earthvl model card\): run `earthvl card --model_dir"
    ):
        publish_model(out, "earthvl/blip2-rs")  # PEFT's placeholder card
    assert not model_hub["commits"]
    publish_model(out, "earthvl/blip2-rs", results=[caption])
    files = sent(model_hub)
    assert set(files) == {
        "README.md", "adapter_config.json", "adapter_model.safetensors", "captioning.json", "generation_config.json",
        "processor_config.json", "tokenizer.json", "tokenizer_config.json", "training_args.json", "trainer_state.json",
        "run.json", "eval/caption.json",
    }  # fmt: skip
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft" and "earthvl" in card.data.tags
    assert (
        index(files["README.md"])[1][("image-to-text", "earthvl/chatearthnet", "METEOR (NLTK, HF evaluate style)")]
        == 0.0987
    )
    pushed = checkout(files, tmp_path / "download")
    base = Blip2ForConditionalGeneration.from_pretrained(resolve_model("tiny-blip2"))
    adapter = PeftModel.from_pretrained(base, pushed)
    saved = load_file(out / "adapter_model.safetensors")
    loaded = {k: v for k, v in adapter.state_dict().items() if "lora_" in k}
    assert len(saved) == len(loaded) > 0
    assert all(torch.equal(loaded[k.replace(".weight", ".default.weight")], v) for k, v in saved.items())
    assert AutoProcessor.from_pretrained(pushed).tokenizer("smoke").input_ids


def test_merged_publishes_the_merged_model_in_place_of_the_adapter(blip2_run, model_hub, tmp_path):
    out, caption = blip2_run
    publish_model(out, "earthvl/blip2-merged", results=[caption], merged=True)
    files = sent(model_hub)
    assert set(files) == {
        "README.md", "config.json", "model.safetensors", "generation_config.json", "processor_config.json", "tokenizer.json",
        "tokenizer_config.json", "captioning.json", "training_args.json", "trainer_state.json", "run.json", "eval/caption.json",
    }  # fmt: skip
    assert files["model.safetensors"] == (out / "merged" / "model.safetensors").read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "transformers" and "lora" not in card.data.tags
    assert 'Blip2ForConditionalGeneration.from_pretrained("earthvl/blip2-merged")' in card.text
    model = Blip2ForConditionalGeneration.from_pretrained(checkout(files, tmp_path / "download"))
    assert model.generation_config.max_new_tokens == 60


def test_pickles_are_refused_by_name_and_nothing_is_sent(clip_run, model_hub, tmp_path):
    _, out, results = clip_run
    (out / "pytorch_model.bin").write_bytes(b"pickle")
    (out / "training_args.bin").write_bytes(b"pickle")
    try:
        with pytest.raises(
            EarthvlError,
            match=r"pickled files, which earthvl does not publish \(safetensors only\): pytorch_model.bin, training_args.bin",
        ):
            publish_model(out, "earthvl/clip-rs", results=results)
    finally:
        (out / "pytorch_model.bin").unlink()
        (out / "training_args.bin").unlink()
    assert not model_hub["repos"] and not model_hub["commits"]
    with pytest.raises(
        EarthvlError, match="is not a trained model folder: it has no config.json or adapter_config.json"
    ):
        publish_model(tmp_path, "earthvl/x", results=results)
    with pytest.raises(EarthvlError, match=r"has no merged model \(merged/config.json\): train with --merge_adapter"):
        publish_model(out, "earthvl/x", results=results, merged=True)


def test_an_earthvl_card_in_the_folder_is_pushed_as_written_and_checked(clip_run, model_hub, tmp_path):
    _, out, results = clip_run
    write_model_card(results, model_dir=out, model_id="earthvl/clip-rs", license="mit")
    try:
        publish_model(out, "earthvl/clip-rs")  # card and eval/ from the folder
        files = sent(model_hub)
        assert files["README.md"] == (out / "README.md").read_bytes()
        assert set(files) == CLIP_FILES | {"README.md", "eval/classify.json", "eval/retrieve.json"}
        with pytest.raises(
            EarthvlError, match=r"README.md was written for 'earthvl/clip-rs', not 'earthvl/other': rerun `earthvl card"
        ):
            publish_model(out, "earthvl/other")
        changed = results_file(tmp_path / "classify.json", "classify", {"clip_benchmark": {"acc1": 0.5}}, out, "clip")
        with pytest.raises(EarthvlError, match="the metrics in .*README.md differ from those of the results files"):
            publish_model(out, "earthvl/clip-rs", results=[changed, results[1]])
    finally:
        (out / "README.md").unlink()
        for path in (out / "eval").iterdir():
            path.unlink()
        (out / "eval").rmdir()


def test_cli_detects_the_folder_kind_and_never_prints_the_token(clip_run, model_hub, capsys, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    _, out, results = clip_run
    assert cli.main(["publish", str(out), "--repo", "earthvl/clip-rs", "--results", *map(str, results)]) == 0
    printed, err = capsys.readouterr()
    assert f"published {out} to https://huggingface.co/earthvl/clip-rs" in printed
    assert TOKEN not in printed + err + caplog.text
    assert {op.path_in_repo for op in model_hub["commits"][0][1]} >= {"model.safetensors", "eval/classify.json"}
    both = tmp_path / "both"
    (both / "data").mkdir(parents=True)
    (both / "config.json").write_text("{}")
    assert cli.main(["publish", str(both), "--repo", "earthvl/x"]) == 2
    assert "say which to publish with --repo_type dataset or --repo_type model" in capsys.readouterr().err
    assert cli.main(["publish", str(tmp_path / "both" / "data"), "--repo", "earthvl/x"]) == 2
    assert (
        "is not a built earthvl dataset folder (README.md, build_report.json, data/) nor a trained model folder"
        in capsys.readouterr().err
    )
    assert folder_kind(out) == "model"
    assert cli.main(["publish", str(both), "--repo", "earthvl/x", "--repo_type", "dataset", "--merged"]) == 2
    assert "--results and --merged apply to models" in capsys.readouterr().err


def test_cards_without_results_name_what_to_run(clip_run, model_hub):
    _, out, _ = clip_run
    with pytest.raises(
        EarthvlError,
        match=r"it has no README.md\): run `earthvl card --model_dir .* --model_id earthvl/clip-rs --results",
    ):
        publish_model(out, "earthvl/clip-rs")
    (out / "README.md").write_text("---\ntags: [earthvl\n---\n")
    try:
        with pytest.raises(EarthvlError, match="README.md has unreadable YAML metadata"):
            publish_model(out, "earthvl/clip-rs")
    finally:
        (out / "README.md").unlink()
    assert not model_hub["commits"] and Path(out / "config.json").is_file()
    assert json.loads((out / "text_fit.json").read_text())  # the run's side files are untouched


def test_links_out_of_the_folder_and_pickles_by_content_are_refused(clip_run, model_hub, tmp_path):
    _, out, results = clip_run
    secret = tmp_path / "secret.txt"
    secret.write_text("private notes")
    (out / "notes.txt").symlink_to(secret)
    torch.save({"w": torch.zeros(2)}, out / "scaler.joblib")
    try:
        with pytest.raises(EarthvlError, match=r"symbolic links that lead out of it, .*: notes.txt;"):
            publish_model(out, "earthvl/clip-rs", results=results)
        (out / "notes.txt").unlink()
        with pytest.raises(EarthvlError, match=r"pickled files, .*: scaler.joblib;"):
            publish_model(out, "earthvl/clip-rs", results=results)
    finally:
        (out / "notes.txt").unlink(missing_ok=True)
        (out / "scaler.joblib").unlink()
    assert not model_hub["repos"] and not model_hub["commits"]
