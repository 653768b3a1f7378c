"""Faithfulness scores of hand-written captions, computed by hand against one hand-made map."""

import json

import numpy as np
import pytest

from earthvl.cli import main as cli
from earthvl.eval.faithfulness import evaluate_faithfulness, parse_claims, score_caption, shuffled_pairs

WATER, DEVELOPED, TREE, SNOW = 1, 2, 3, 8


@pytest.fixture(scope="module")
def scene():
    """Left half water, right half tree, a 56x56 developed block at the bottom right.

    overall: water 32768, tree 29632, developed 3136 (dominant: water, 50% of the map);
    top left: water 100%; top right: tree 100%; bottom left: water 100%;
    bottom right: tree 13248 (80.9% -> extra large), developed 3136 (19.1% -> small);
    middle: water 50%, tree 50%."""
    labels = np.full((256, 256), TREE, dtype=np.uint8)
    labels[:, :128] = WATER
    labels[200:, 200:] = DEVELOPED
    return labels


def test_a_faithful_caption_scores_perfectly(scene):
    caption = (
        "Water dominates the scene, taking up a large portion of the image. The top left part holds an extra large "
        "amount of water. The top right part is covered by trees. The bottom right part has an extra large portion "
        "of forest and a small part of urban area."
    )
    score = score_caption(caption, scene)
    assert (score.precision, score.recall, score.dominant_first) == (1.0, 1.0, True)
    assert (score.region_agreement, score.size_agreement) == (1.0, 1.0)
    claims = parse_claims(caption)
    assert claims.regions == [(WATER, "top left"), (TREE, "top right"), (TREE, "bottom right"), (DEVELOPED, "bottom right")]
    assert claims.sizes == [(WATER, None, "large"), (WATER, "top left", "extra large"), (TREE, "bottom right", "extra large"),
                            (DEVELOPED, "bottom right", "small")]


def test_wrong_dominant_class_and_an_invented_class(scene):
    score = score_caption("Snow covers most of the scene. There are trees in the top right part and water in the "
                          "top left part.", scene)
    # named snow, tree, water: 2 of 3 present; expected water, tree, developed: 2 of 3 named
    assert score.precision == pytest.approx(2 / 3) and score.recall == pytest.approx(2 / 3)
    assert score.dominant_first is False and score.invented == ["snow"] and score.missed == ["developed"]
    assert score.region_agreement == 1.0 and score.size_agreement is None


def test_swapped_regions(scene):
    score = score_caption("Water fills the top right part, while trees cover the top left part.", scene)
    assert (score.precision, score.recall, score.dominant_first) == (1.0, pytest.approx(2 / 3), True)
    assert score.region_agreement == 0.0  # water is not in the top right's top three, nor tree in the top left's


def test_synonyms_name_the_classes(scene):
    score = score_caption("Built-up land and woodland sit beside a lake.", scene)
    assert score.named == ["developed", "tree", "water"]
    assert (score.precision, score.recall, score.dominant_first) == (1.0, 1.0, False)
    assert score.region_agreement is None


def test_wrong_size_words_and_banned_words(scene):
    score = score_caption("The bottom right part appears to hold a small portion of trees and a large portion of "
                          "developed area.", scene)
    assert score.size_agreement == 0.0  # tree is extra large there, developed small
    assert score.banned_words == ["appears"]


def test_blank_map_and_no_data_caption():
    blank = np.zeros((256, 256), dtype=np.uint8)
    score = score_caption("This image contains no valid land cover information.", blank)
    assert (score.precision, score.recall, score.dominant_first) == (1.0, 1.0, None)
    assert score_caption("Water everywhere.", blank).precision == 0.0


def test_dataset_summary_means_each_metric_where_defined(scene):
    captions = {"a": "Water and trees and urban blocks.", "b": "Snow and ice."}
    summary, per = evaluate_faithfulness(captions, {"a": scene, "b": scene})
    assert per["b"]["precision"] == 0.0 and per["a"]["precision"] == 1.0
    assert summary["precision"] == 0.5 and summary["dominant_first"] == 0.5 and summary["invented"] == {"snow": 1}
    assert summary["region_agreement"] is None and summary["region_agreement_n"] == 0


def test_shuffled_pairs_never_keep_a_caption_with_its_own_map():
    names = [f"n{i}" for i in range(9)]
    pairs = shuffled_pairs(names, seed=1)
    assert sorted(pairs) == names and sorted(pairs.values()) == names
    assert all(k != v for k, v in pairs.items())


def test_sample_world_captions_are_faithful_and_shuffled_ones_are_not(sample_world, tmp_path, capsys):
    from PIL import Image

    from earthvl.builders.chatearthnet.generation import colour_map

    labels = tmp_path / "labels"
    labels.mkdir()
    for patch in sample_world.chatearthnet.patches:
        Image.fromarray(colour_map(patch.label_map)).save(labels / patch.file_name)
    root = str(sample_world.chatearthnet.root)
    results = {}
    for name, extra in (("own", []), ("shuffled", ["--shuffle_maps"])):
        out = tmp_path / f"{name}.json"
        assert cli(["eval", "faithfulness", "--dataset", root, "--labels", str(labels), "--split", "train",
                    "--out", str(out), *extra]) == 0
        results[name] = json.loads(out.read_text())["summary"]
    own, shuffled = results["own"], results["shuffled"]
    for metric in ("precision", "recall", "dominant_first", "region_agreement", "size_agreement"):
        assert own[metric] == 1.0, metric
        assert shuffled[metric] < 0.7, metric
    assert own["banned_word_rate"] == 0.0 and own["captions"] >= 20


def test_predictions_files_are_scored_against_their_maps(scene, tmp_path, capsys):
    from PIL import Image

    from earthvl.builders.chatearthnet.generation import colour_map

    labels = tmp_path / "labels"
    labels.mkdir()
    Image.fromarray(colour_map(scene)).save(labels / "1_2_patch00.png")
    predictions = tmp_path / "p.predictions.jsonl"
    rows = [{"row": 0, "id": "1_2_patch00.png", "prediction": "Snow and water."},
            {"row": 1, "id": "9_9_patch11.png", "prediction": "Trees."}]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "f.json"
    assert cli(["eval", "faithfulness", "--predictions", str(predictions), "--labels", str(labels), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["captions"]["1_2_patch00.png"]["precision"] == 0.5
    assert result["summary"]["captions"] == 1
    assert result["summary"]["skipped"] == [{"caption": "9_9_patch11.png",
                                             "reason": f"no land-cover map for 9_9_patch11.png in {labels}"}]


def test_records_and_maps_that_cannot_be_scored_are_listed_never_dropped_silently(scene, tmp_path, capsys):
    import os

    from hostile_files import png_declaring
    from PIL import Image

    from earthvl.builders.chatearthnet.generation import colour_map
    from earthvl.builders.chatearthnet.layout import json_path

    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("1_1_patch00", "1_1_patch01"):
        Image.fromarray(colour_map(scene)).save(labels / f"{name}.png")
    (labels / "1_1_patch10.png").write_bytes(png_declaring(100_000, 100_000))
    (labels / "1_1_patch11.tif").write_bytes(b"II*\x00" + b"\x00" * 8)  # a TIFF without an image
    Image.fromarray(colour_map(scene)).save(tmp_path / "elsewhere.png")
    os.symlink(tmp_path / "elsewhere.png", labels / "2_2_patch00.png")
    records = [{"image": "1_1_patch00.png", "caption": "Water and trees."}, {"image": 5, "caption": "x"},
               {"image": "1_1_patch01.png", "caption": ["a", "b"]}, "not a record",
               {"image": "1_1_patch00.png", "caption": "Snow."}, {"image": "1_1_patch10.png", "caption": "Water."},
               {"image": "1_1_patch11.png", "caption": "Water."}, {"image": "2_2_patch00.png", "caption": "Water."}]
    dataset = tmp_path / "layout"
    (dataset / "json_files").mkdir(parents=True)
    (dataset / json_path("gpt35", "test")).write_text(json.dumps(records))
    out = tmp_path / "f.json"
    assert cli(["eval", "faithfulness", "--dataset", str(dataset), "--labels", str(labels), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["captions"]) == ["1_1_patch00.png"] and result["captions"]["1_1_patch00.png"]["precision"] == 1.0
    reasons = {entry["caption"]: entry["reason"] for entry in result["summary"]["skipped"]}
    assert sorted(reasons) == ["1_1_patch00.png", "1_1_patch10.png", "1_1_patch11.png", "2_2_patch00.png",
                               "record 2", "record 3", "record 4"]
    assert "a second caption for 1_1_patch00.png; the first is scored" in reasons["1_1_patch00.png"]
    assert "no 'image' (or 'image_id') string and one non-empty 'caption' string" in reasons["record 3"]
    assert "over the limit" in reasons["1_1_patch10.png"] and "holds no image" in reasons["1_1_patch11.png"]
    assert reasons["2_2_patch00.png"] == f"2_2_patch00.png is a symbolic link out of {labels}: not read"

    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": "1_1_patch00.png", "prediction": "Water."}\n{"id": "1_1_patch01.png", "predic')
    assert cli(["eval", "faithfulness", "--predictions", str(predictions), "--labels", str(labels)]) == 2
    assert f"--predictions {predictions}, line 2: not JSON" in capsys.readouterr().err
    predictions.write_text('{"id": "1_1_patch00.png", "prediction": "Water."}\n')
    assert cli(["eval", "faithfulness", "--predictions", str(predictions), "--labels", str(labels), "--shuffle_maps"]) == 2
    assert "it needs at least two captions with maps, got 1" in capsys.readouterr().err
    assert cli(["eval", "faithfulness", "--predictions", str(predictions), "--labels", str(labels),
                "--out", str(labels / "1_1_patch00.png")]) == 2
    assert f"lies inside --labels {labels}" in capsys.readouterr().err
    assert (labels / "1_1_patch00.png").stat().st_size > 100


def test_the_sample_worlds_label_maps_are_its_ground_truth(tmp_path):
    from earthvl.builders.chatearthnet.maps import read_label_map
    from earthvl.sample import LABELS_DIR, generate_sample

    world = generate_sample(tmp_path / "s", tiles=3, gaia_images=3, label_maps=True, keep_label_maps=True, progress=False)
    labels = tmp_path / "s" / LABELS_DIR
    assert sorted(p.name for p in labels.iterdir()) == sorted(p.file_name for p in world.chatearthnet.patches)
    for patch in world.chatearthnet.patches:
        assert np.array_equal(read_label_map(labels / patch.file_name), patch.label_map), patch.file_name


def test_a_faithfulness_results_file_is_checked(tmp_path):
    from earthvl.errors import EarthvlError
    from earthvl.eval.faithfulness import read_faithfulness, write_faithfulness

    path = tmp_path / "f.json"
    write_faithfulness(path, {"precision": None, "recall": 0.5}, {})
    assert read_faithfulness(path) == {"precision": None, "recall": 0.5}
    for content, message in (
        ('{"captions": {}}', "no 'summary' object"),
        ('{"summary": {"recall": "high"}}', "summary.recall is not a number or null: 'high'"),
        ("{", "cannot read it as JSON"),
    ):
        path.write_text(content)
        with pytest.raises(EarthvlError, match=f"faithfulness results {path}: {message}"):
            read_faithfulness(path)
