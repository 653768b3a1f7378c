"""`earthvl eval caption|classify|retrieve` on the tiny models and the sample world, checked against independent
computations with the stock transformers processors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image as PILImage
from transformers import CLIPModel

from earthvl.cli import main as cli
from earthvl.eval import caption_metrics, classification_metrics, retrieval_metrics
from earthvl.eval.batches import Failures
from earthvl.eval.benchmarks import load_benchmark
from earthvl.eval.classification import normalise_answer
from earthvl.eval.generation import LlavaGenerator, generate_all
from earthvl.eval.eval_model import load_eval_model
from earthvl.eval_results import read_results
from earthvl.errors import EarthvlError
from earthvl.eval.run import predictions_path
from earthvl.images import open_image
from earthvl.prompts import CAPTION_INSTRUCTION

COCO_KEYS = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
HF_KEYS = {"bleu", "rouge1", "rouge2", "rougeL", "meteor"}


@pytest.fixture(scope="module")
def scenes(caption_world):
    return caption_world["cen"].parent / "world" / "scenes"


def _eval(task, *options):
    return cli(["eval", task, "--num_workers", "0", *map(str, options)])


def _predictions(out):
    return [json.loads(line) for line in predictions_path(out).read_text().splitlines()]


def test_caption_blip2_writes_results_that_match_its_predictions(caption_world, tmp_path):
    out = tmp_path / "blip2.json"
    assert _eval(
        "caption", "--model", "tiny-blip2", "--dataset", caption_world["gaia"], "--split", "test",
        "--max_samples", 6, "--num_beams", 1, "--max_new_tokens", 12, "--out", out,
    ) == 0  # fmt: skip
    results = read_results(out)
    assert results["task"] == "caption"
    assert results["model"]["family"] == "blip2"
    assert results["dataset"]["split"] == "test" and results["dataset"]["num_samples"] == 6
    assert set(results["metrics"]) == {"coco", "hf"}
    assert set(results["metrics"]["coco"]) == COCO_KEYS and set(results["metrics"]["hf"]) == HF_KEYS
    assert results["settings"]["generation"]["num_beams"] == 1
    assert results["versions"]["torch"] == torch.__version__ and results["versions"]["pycocoevalcap"]
    assert results["failures"] == {"bad_images": 0, "failed_generations": 0, "rows": []}

    rows = _predictions(out)
    assert len(rows) == 6 and all(len(row["references"]) == 5 for row in rows)
    assert any(row["prediction"] for row in rows)
    predictions, references = [row["prediction"] for row in rows], [row["references"] for row in rows]
    for protocol in ("coco", "hf"):
        assert results["metrics"][protocol] == pytest.approx(caption_metrics(predictions, references, protocol), abs=1e-9)


def test_llava_batched_generation_equals_one_image_at_a_time(caption_world):
    benchmark = load_benchmark(str(caption_world["cen"]), "caption", config="gpt35", split="test", max_samples=5)
    model = load_eval_model("tiny-llava", task="caption")
    images = [open_image(benchmark.rows[i][benchmark.image_column]) for i in range(5)]
    generate = LlavaGenerator(model.model, model.processor, CAPTION_INSTRUCTION, max_new_tokens=10)
    batched = generate(images)
    assert batched == [generate([image])[0] for image in images]
    assert all(batched) and len(set(batched)) > 1  # real, image-dependent text


def test_llava_caption_cli_on_chatearthnet(caption_world, tmp_path):
    out = tmp_path / "llava.json"
    assert _eval(
        "caption", "--model", "tiny-llava", "--dataset", caption_world["cen"], "--dataset_config", "gpt35", "--split", "test",
        "--max_samples", 4, "--max_new_tokens", 8, "--protocols", "hf", "--batch_size", 3, "--out", out,
    ) == 0  # fmt: skip
    results = read_results(out)
    assert results["model"]["family"] == "vlm" and list(results["metrics"]) == ["hf"]
    assert results["settings"]["prompt"] == CAPTION_INSTRUCTION
    assert results["dataset"]["columns"] == {"image": "image", "caption": "caption"}
    assert [len(row["references"]) for row in _predictions(out)] == [1, 1, 1, 1]


def _clip_reference(name, images, texts_per_class):
    """Normalised image embeddings and the class matrix, computed with the stock processor and tokenizer."""
    from transformers import CLIPModel, CLIPProcessor

    from earthvl.model_names import resolve_model

    model, processor = CLIPModel.from_pretrained(resolve_model(name)).eval(), CLIPProcessor.from_pretrained(resolve_model(name))
    limit = min(model.config.text_config.max_position_embeddings, processor.tokenizer.model_max_length)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        image = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

        def embed(texts):
            tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            return torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)

        classes = [torch.nn.functional.normalize(embed(texts).mean(0), dim=-1) for texts in texts_per_class]
    return image, torch.stack(classes) if classes else None, embed


def test_clip_classification_matches_the_stock_processor(scenes, tmp_path):
    out = tmp_path / "clip.json"
    assert _eval("classify", "--model", "tiny-clip", "--dataset", scenes, "--out", out) == 0
    results = read_results(out)
    benchmark = load_benchmark(str(scenes), "classify")
    assert results["dataset"]["num_samples"] == len(benchmark.rows) > 10
    assert results["settings"]["class_names"] == benchmark.class_names
    assert "tree" in benchmark.class_names

    images = [open_image(cell) for cell in benchmark.rows[benchmark.image_column]]
    prompts = [[template.format(c=name) for template in benchmark.templates] for name in benchmark.class_names]
    image, classes, _ = _clip_reference("tiny-clip", images, prompts)
    expected = classification_metrics(100 * image @ classes.T, benchmark.labels())
    for key, value in expected.items():
        assert results["metrics"]["clip_benchmark"][key] == pytest.approx(value, abs=1e-6, nan_ok=True)
    top5 = (100 * image @ classes.T).topk(5, dim=1).indices.tolist()
    assert [row["top5"] for row in _predictions(out)] == top5

    # the card rendered from this results file carries exactly its numbers in model-index
    card = tmp_path / "README.md"
    assert cli(["card", "--results", str(out), "--model_id", "my-org/tiny-clip", "--out", str(card)]) == 0
    _, index = model_index_to_eval_results(ModelCard.load(card).data.to_dict()["model-index"])
    values = sorted(result.metric_value for result in index)
    assert values == sorted(results["metrics"]["clip_benchmark"].values())


def test_clip_retrieval_matches_the_stock_processor(caption_world, tmp_path):
    out = tmp_path / "retrieval.json"
    gaia = caption_world["gaia"]
    assert _eval("retrieve", "--model", "tiny-clip", "--dataset", gaia, "--split", "test", "--out", out) == 0
    results = read_results(out)
    benchmark = load_benchmark(str(gaia), "retrieve", split="test")
    rows = range(len(benchmark.rows))
    texts = [text for row in rows for text in benchmark.references(row)]
    owners = [row for row in rows for _ in benchmark.references(row)]
    assert results["settings"]["texts"] == len(texts) == 5 * len(benchmark.rows)

    images = [open_image(cell) for cell in benchmark.rows[benchmark.image_column]]
    image, _, embed = _clip_reference("tiny-clip", images, [])
    with torch.no_grad():
        expected = retrieval_metrics(image, embed(texts), owners)
    assert results["metrics"]["clip_benchmark"] == pytest.approx(expected, abs=1e-6)
    assert set(expected) == {f"{d}_R@{k}" for d in ("text_to_image", "image_to_text") for k in (1, 5, 10, 20)} | {"mean_recall"}


def test_vlm_classification_scores_exact_matches(scenes, tmp_path):
    out = tmp_path / "vlm.json"
    assert _eval(
        "classify", "--model", "tiny-llava", "--dataset", scenes, "--max_samples", 5, "--max_new_tokens", 4, "--out", out
    ) == 0
    results = read_results(out)
    class_names = results["settings"]["class_names"]
    assert results["settings"]["prompt"].startswith("Classify the image from the following classes: ")
    rows = _predictions(out)
    hits = [normalise_answer(row["answer"]) == normalise_answer(class_names[row["label"]]) for row in rows]
    named = [any(normalise_answer(row["answer"]) == normalise_answer(name) for name in class_names) for row in rows]
    assert results["metrics"]["geochat"]["acc1"] == pytest.approx(sum(hits) / len(rows))
    assert results["metrics"]["geochat"]["unmatched"] == pytest.approx(1 - sum(named) / len(rows))


def test_geochat_answer_normalisation():
    assert normalise_answer(" Dense Residential. ") == normalise_answer("denseresidential") == "denseresidential"
    assert normalise_answer("Tree cover") != normalise_answer("grassland")


def _image_folder(root, corrupt: bool):
    rng = np.random.default_rng(0)
    for label in ("forest", "water"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            PILImage.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    if corrupt:
        (root / "water" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    return root


def test_bad_images_are_counted_listed_or_stop_the_run(tmp_path, capsys):
    folder = _image_folder(tmp_path / "scenes", corrupt=True)
    out = tmp_path / "r.json"
    assert _eval("classify", "--model", "tiny-clip", "--dataset", folder, "--out", out) == 0
    results = read_results(out)
    assert results["failures"]["bad_images"] == 1 and results["dataset"]["num_samples"] == 6
    (failure,) = results["failures"]["rows"]
    assert failure["kind"] == "bad_image" and "cannot decode" in failure["reason"]

    assert _eval("classify", "--model", "tiny-clip", "--dataset", folder, "--on_bad_image", "stop", "--out", out) == 2
    assert f"row {failure['row']}" in capsys.readouterr().err

    assert _eval("classify", "--model", "tiny-clip", "--dataset", folder, "--max_pixels", 100, "--out", out) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_failed_generations_are_retried_then_counted():
    def generate(images):
        if len(images) > 1 or images[0] == "bad":
            raise RuntimeError("CUDA out of memory")
        return [f"caption of {images[0]}"]

    failures = Failures(keys=["a", "b", "c"])
    texts = generate_all([([0, 1], ["x", "bad"]), ([2], ["z"])], generate, failures)
    assert texts == {0: "caption of x", 1: "", 2: "caption of z"}
    assert failures.summary()["failed_generations"] == 1
    assert failures.rows == [{"kind": "failed_generation", "row": 1, "id": "b", "reason": "RuntimeError: CUDA out of memory"}]


def test_a_model_that_cannot_do_the_task_is_refused(caption_world, capsys):
    assert _eval("retrieve", "--model", "tiny-blip2", "--dataset", caption_world["gaia"], "--split", "test") == 2
    assert "blip2 model: it can caption, not retrieve" in capsys.readouterr().err


def test_pickled_weights_are_refused_with_one_line(tmp_path, capsys):
    from earthvl.model_names import resolve_model

    tiny = resolve_model("tiny-clip")
    pickled = tmp_path / "pickled-clip"
    pickled.mkdir()
    for path in Path(tiny).iterdir():
        if path.suffix != ".safetensors":
            (pickled / path.name).write_bytes(path.read_bytes())
    torch.save(CLIPModel.from_pretrained(tiny).state_dict(), pickled / "pytorch_model.bin")
    folder = _image_folder(tmp_path / "scenes", corrupt=False)

    assert _eval("classify", "--model", pickled, "--dataset", folder, "--out", tmp_path / "r.json") == 2
    err = capsys.readouterr().err
    assert f"{pickled} has no safetensors weights (model.safetensors); its weights are pickled (pytorch_model.bin)" in err
    assert "Traceback" not in err and not (tmp_path / "r.json").exists()

    adapter = tmp_path / "pickled-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": resolve_model("tiny-blip2"), "peft_type": "LORA"}))
    torch.save({}, adapter / "adapter_model.bin")
    with pytest.raises(EarthvlError, match=r"has no safetensors weights \(adapter_model.safetensors\); its weights are pickled \(adapter_model.bin\)"):
        load_eval_model(str(adapter), task="caption")
