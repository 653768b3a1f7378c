"""Model cards from `earthvl eval` results files: the model-index carries exactly the results' numbers (NaN left
out), every metric name names its protocol, the body loads the model the right way and cites the sources."""

import json
import shlex

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from earthvl import cli
from earthvl.cards.model import render_model_card, write_model_card
from earthvl.errors import EarthvlError
from earthvl.eval_results import write_results
from earthvl.scripts import eval_caption

CLIP_ID = "runs/clip-rs"


def results(
    task,
    metrics,
    *,
    model=CLIP_ID,
    family="clip",
    base=None,
    dataset=("eurosat", "tanganke/eurosat", None, "test"),
    settings=None,
):
    name, id_, config, split = dataset
    return {
        "format": "earthvl-eval/1",
        "task": task,
        "model": {"id": model, "revision": None, "family": family, "base_model": base},
        "dataset": {
            "name": name,
            "id": id_,
            "config": config,
            "split": split,
            "revision": "abc123",
            "columns": {},
            "num_samples": 2700,
        },
        "metrics": metrics,
        "failures": {"bad_images": 0, "failed_generations": 0, "rows": []},
        "settings": {"device": "cuda", "dtype": "float32", "max_samples": None, **(settings or {})},
        "versions": {"earthvl": "0.1.0"},
        "started": "2025-06-01T12:00:00+00:00",
        "seconds": 42.5,
    }


RETRIEVAL = {
    f"{way}_R@{k}": round(0.0317 * k + (0.011 if way == "image_to_text" else 0), 6)
    for way in ("text_to_image", "image_to_text")
    for k in (1, 5, 10, 20)
}


@pytest.fixture
def clip_results(tmp_path):
    """Three results files of one CLIP model: EuroSAT classification, a 4-class split (acc5 NaN), GAIA retrieval."""
    return [
        write_results(
            tmp_path / "eurosat.json",
            results(
                "classify", {"clip_benchmark": {"acc1": 0.6123456789, "acc5": 0.9512, "mean_per_class_recall": 0.5987}}
            ),
        ),
        write_results(
            tmp_path / "four.json",
            results(
                "classify",
                {"clip_benchmark": {"acc1": 0.75, "acc5": float("nan"), "mean_per_class_recall": 0.7}},
                dataset=(None, "earthvl/four", "default", "test"),
            ),
        ),
        write_results(
            tmp_path / "gaia-retrieval.json",
            results(
                "retrieve",
                {"clip_benchmark": {**RETRIEVAL, "mean_recall": 0.3141592653589793}},
                dataset=("gaia", "earthvl/gaia", "default", "test"),
                settings={"long_text": "truncate"},
            ),
        ),
    ]


def index_values(card_text):
    """(dataset, split, task type, metric type, metric name) -> value, from the card's YAML as the Hub reads it."""
    name, evals = model_index_to_eval_results(ModelCard(card_text).data.to_dict()["model-index"])
    return name, {
        (e.dataset_type, e.dataset_split, e.task_type, e.metric_type, e.metric_name): e.metric_value for e in evals
    }


def test_model_index_holds_exactly_the_results_numbers_without_nan(clip_results, tmp_path):
    card = render_model_card(clip_results, model_id="earthvl/clip-rs")
    name, values = index_values(str(card))
    assert name == "earthvl/clip-rs"
    expected = {
        (
            "tanganke/eurosat",
            "test",
            "zero-shot-image-classification",
            "accuracy",
            "acc@1 (CLIP_benchmark)",
        ): 0.6123456789,
        ("tanganke/eurosat", "test", "zero-shot-image-classification", "accuracy", "acc@5 (CLIP_benchmark)"): 0.9512,
        (
            "tanganke/eurosat",
            "test",
            "zero-shot-image-classification",
            "recall",
            "mean per-class recall (CLIP_benchmark)",
        ): 0.5987,
        ("earthvl/four", "test", "zero-shot-image-classification", "accuracy", "acc@1 (CLIP_benchmark)"): 0.75,
        (
            "earthvl/four",
            "test",
            "zero-shot-image-classification",
            "recall",
            "mean per-class recall (CLIP_benchmark)",
        ): 0.7,
        (
            "earthvl/gaia",
            "test",
            "image-feature-extraction",
            "recall",
            "mean recall over R@1/5/10 both ways (CLIP_benchmark)",
        ): 0.3141592653589793,
    }
    for key, value in RETRIEVAL.items():
        way, k = key.split("_R@")
        expected[
            (
                "earthvl/gaia",
                "test",
                "image-feature-extraction",
                "recall",
                f"{way.replace('_to_', '-to-')} R@{k} (CLIP_benchmark)",
            )
        ] = value
    assert values == expected  # exact floats; acc@5 of the 4-class split (NaN) is not there
    assert all(name.endswith("(CLIP_benchmark)") for *_, name in values)
    # the same from the written file, through huggingface_hub's metadata reader
    path = write_model_card(clip_results, tmp_path / "card.md", model_id="earthvl/clip-rs")
    index = metadata_load(path)["model-index"][0]["results"]
    assert [r["dataset"]["revision"] for r in index] == ["abc123"] * 3
    assert index[0]["source"] == {
        "name": "earthvl eval",
        "url": "https://huggingface.co/earthvl/clip-rs/blob/main/eval/eurosat.json",
    }
    assert index[2]["task"] == {"type": "image-feature-extraction", "name": "Image-text retrieval"}


def test_caption_metrics_name_their_protocol_and_keep_raw_values():
    coco = {
        "bleu_1": 0.61,
        "bleu_2": 0.45,
        "bleu_3": 0.33,
        "bleu_4": 0.2468,
        "meteor": 0.221,
        "rouge_l": 0.47,
        "cider": 1.1234567,
    }
    hf = {"bleu": 0.2301, "rouge1": 0.51, "rouge2": 0.27, "rougeL": 0.44, "meteor": 0.3999}
    data = results(
        "caption",
        {"coco": coco, "hf": hf},
        model="runs/blip2",
        family="blip2",
        base="Salesforce/blip2-opt-2.7b",
        dataset=("gaia", "earthvl/gaia", "default", "test"),
        settings={"prompt": "", "generation": {"num_beams": 5, "max_new_tokens": 120}},
    )
    card = render_model_card([data], model_id="earthvl/blip2-rs")
    _, values = index_values(str(card))
    by_name = {name: (kind, value) for (_, _, task, kind, name), value in values.items() if task == "image-to-text"}
    assert len(by_name) == len(values) == 12
    assert by_name["BLEU-4 (COCO toolkit)"] == ("bleu", 0.2468)
    assert by_name["CIDEr (COCO toolkit)"] == ("cider", 1.1234567)  # as the toolkit gives it, not rescaled
    assert by_name["ROUGE-L (COCO toolkit)"] == ("rouge", 0.47)
    assert by_name["METEOR (COCO toolkit)"] == ("meteor", 0.221)
    assert by_name["METEOR (NLTK, HF evaluate style)"] == ("meteor", 0.3999)
    assert by_name["BLEU (HF evaluate style)"] == ("bleu", 0.2301)
    assert by_name["ROUGE-L (HF evaluate style)"] == ("rouge", 0.44)
    assert card.data.base_model == "Salesforce/blip2-opt-2.7b" and card.data.library_name == "peft"
    assert card.data.pipeline_tag == "image-to-text"
    assert {"remote-sensing", "earth-observation", "earthvl", "lora"} <= set(card.data.tags)
    text = card.text
    assert "| CIDEr | COCO toolkit | 112.35 |" in text and "| METEOR | NLTK, HF evaluate style | 39.99 |" in text
    command = (
        "earthvl eval caption --model earthvl/blip2-rs --dataset gaia --out eval/caption-gaia-test.json "
        "--dataset_config default --split test --dataset_revision abc123 --base_model Salesforce/blip2-opt-2.7b "
        "--dtype float32 --max_new_tokens 120 --num_beams 5"
    )
    assert command in text
    # the command parses back, with the eval parser, into the settings the results file records
    args, task_args = eval_caption.make_parser().parse_args_and_config(shlex.split(command)[3:])
    assert (args.model, args.dataset, args.dataset_config, args.split) == ("earthvl/blip2-rs", "gaia", "default", "test")
    assert (args.dataset_revision, args.base_model, args.dtype) == ("abc123", "Salesforce/blip2-opt-2.7b", "float32")
    assert (task_args.protocols, task_args.num_beams, task_args.max_new_tokens) == (["coco", "hf"], 5, 120)
    assert 'base = Blip2ForConditionalGeneration.from_pretrained("Salesforce/blip2-opt-2.7b")' in text
    assert 'model = PeftModel.from_pretrained(base, "earthvl/blip2-rs")' in text


def test_table_marks_nan_and_body_cites_the_sources(clip_results):
    text = render_model_card(clip_results, model_id="earthvl/clip-rs").text
    assert (
        "| acc@5 | CLIP_benchmark | n/a |" in text
        and "acc@5 is n/a (fewer than five classes) and left out of the model-index." in text
    )
    assert "| acc@1 | CLIP_benchmark | 61.23 |" in text
    assert "earthvl eval retrieve --model earthvl/clip-rs --dataset gaia --out eval/" in text
    assert "--dataset_config default --split test" in text
    assert 'model = CLIPModel.from_pretrained("earthvl/clip-rs")' in text
    for cited in (
        "arXiv:2502.09598",
        "Zavras, Angelos",
        "10.5194/essd-17-1245-2025",
        "Yuan, Zhenghang",
        "Learning Transferable Visual Models",
    ):
        assert cited in text
    assert "GeoChat" not in text.split("## Citation")[1] and "Visual Instruction Tuning" not in text
    for limitation in ("Geographic mix-ups", "SAR backscatter", "hallucinated detail", "WorldCover land-cover maps"):
        assert limitation in text


def test_vlm_adapter_card_cites_llava_and_geochat_and_loads_through_earthvl(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    base = "llava-hf/llava-1.5-7b-hf"
    (run / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": base, "r": 64, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["v_proj", "q_proj"],
        "auto_mapping": {"base_model_class": "LlavaForConditionalGeneration"},
    }))  # fmt: skip
    (run / "vision.json").write_text(json.dumps({"image_size": 504}))
    (run / "training_args.json").write_text(
        json.dumps({"learning_rate": 2e-4, "num_train_epochs": 1, "max_steps": -1, "bf16": True, "use_cpu": False})
    )
    (run / "trainer_state.json").write_text(json.dumps({
        "global_step": 400,
        "log_history": [{"loss": 1.9, "gpu_peak_memory_gb": 13.4}, {"loss": 1.2, "gpu_peak_memory_gb": 14.25},
                        {"train_runtime": 3723.0, "train_samples_per_second": 15.8}],
    }))  # fmt: skip
    data = results(
        "classify",
        {"geochat": {"acc1": 0.81, "mean_per_class_recall": 0.8, "unmatched": 0.02}},
        model=str(run),
        family="vlm",
        base=base,
    )
    card = render_model_card(
        [data], model_dir=run, model_id="earthvl/geochat-rs", datasets=["earthvl/gaia:default", f"{tmp_path}:gpt35"]
    )
    text = card.text
    assert card.data.library_name == "peft" and card.data.base_model == base and card.data.datasets == ["earthvl/gaia"]
    assert card.data.pipeline_tag == "image-text-to-text"
    assert (
        'model, processor = load_adapter(snapshot_download("earthvl/geochat-rs"), base="llava-hf/llava-1.5-7b-hf")'
        in text
    )
    assert (
        "from earthvl.models.vlm import load_adapter" in text and "PeftModel" not in text
    )  # vision.json needs earthvl
    assert (
        "lora_r: 64" in text
        and "image_size: 504" in text
        and "learning_rate: 0.0002" in text
        and "max_steps" not in text
    )
    assert "- Device: GPU, peak memory 14.2 GB per process" in text and "- Training time: 1 h 02 min, 400 steps" in text
    assert (
        "bf16 mixed precision" in text
        and "- [earthvl/gaia:default](https://huggingface.co/datasets/earthvl/gaia)" in text
    )
    assert f"- `{tmp_path}:gpt35`" in text  # a local folder: in the body, not the metadata
    _, values = index_values(str(card))
    assert (
        values[
            ("tanganke/eurosat", "test", "zero-shot-image-classification", "accuracy", "acc@1 (GeoChat exact match)")
        ]
        == 0.81
    )
    for cited in (
        "Kuckreja, Kartik",
        "Visual Instruction Tuning",
        "Improved Baselines with Visual Instruction Tuning",
        "arXiv:2502.09598",
    ):
        assert cited in text


def test_results_of_two_models_duplicates_and_bad_files_are_clear_errors(clip_results, tmp_path):
    other = write_results(
        tmp_path / "other.json", results("classify", {"clip_benchmark": {"acc1": 0.5}}, model="my-org/other-clip")
    )
    with pytest.raises(
        EarthvlError, match=r"different models \('runs/clip-rs' in eurosat.json, 'my-org/other-clip' in other.json\)"
    ):
        render_model_card([clip_results[0], other])
    twice = write_results(tmp_path / "again.json", json.loads(clip_results[0].read_text()))
    with pytest.raises(EarthvlError, match="eurosat.json and again.json have the same task on the same dataset split"):
        render_model_card([clip_results[0], twice])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**json.loads(clip_results[0].read_text()), "metrics": {"coco": {"bleu_4": 0.1}}}))
    with pytest.raises(EarthvlError, match=f"{broken}: protocol 'coco' is not one of task 'classify'"):
        render_model_card([broken])


def test_cli_writes_the_card_into_the_model_folder_with_the_results(clip_results, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (run / "training_args.json").write_text(json.dumps({"use_cpu": True, "learning_rate": 1e-3}))
    args = [
        "card",
        "--results",
        *map(str, clip_results),
        "--model_dir",
        str(run),
        "--model_id",
        "earthvl/clip-rs",
        "--license",
        "mit",
    ]
    assert cli.main(args) == 0
    assert f"wrote the model card {run / 'README.md'} from 3 results files" in capsys.readouterr().out
    card = ModelCard.load(run / "README.md")
    assert (
        card.data.license == "mit"
        and card.data.library_name == "transformers"
        and card.data.pipeline_tag == "zero-shot-image-classification"
    )
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["eurosat.json", "four.json", "gaia-retrieval.json"]
    assert (run / "eval" / "four.json").read_bytes() == clip_results[1].read_bytes()
    assert "- Device: CPU" in card.text and "Training time: not recorded" in card.text
    (run / "eval" / "stale.json").write_text("{}")
    assert cli.main(args) == 2
    assert "holds results this card does not show: stale.json" in capsys.readouterr().err
    assert cli.main(["card", "--results", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.md")]) == 2
    assert f"results file {tmp_path / 'missing.json'} does not exist" in capsys.readouterr().err
    assert cli.main(["card", "--results", str(clip_results[0])]) == 2
    assert "say where the card goes" in capsys.readouterr().err
