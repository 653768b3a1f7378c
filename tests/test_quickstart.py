"""`earthvl quickstart`: the whole job at a reduced size (every trained model must beat its base on held-out data),
the reuse of finished steps, and the plan for real model and dataset ids."""

import json
from pathlib import Path

import pytest
import yaml

from earthvl.cli import COMMANDS, main
from earthvl.errors import EarthvlError
from earthvl.quickstart import STATE_DIR, SUMMARY_METRICS, Step, StepRunner, format_table
from earthvl.recipes import recipe_path
from earthvl.quickstart_plan import QuickstartArguments, plan

SMALL = ["--tiles", "24", "--gaia_images", "100"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One reduced-size quickstart (about a minute and a half on two cores) and what it printed."""
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    capture = pytest.MonkeyPatch()
    lines: list[str] = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        status = main(["quickstart", "--out", str(out), *SMALL])
    finally:
        capture.undo()
    assert status == 0, "\n".join(lines[-30:])
    return out, "\n".join(lines)


@pytest.mark.slow
def test_every_trained_model_beats_its_base_on_every_summary_metric(run):
    out, printed = run
    rows = json.loads((out / "summary.json").read_text())
    assert {(r["task"], r["model"]) for r in rows} == {
        ("caption", "tiny-llava"), ("faithfulness", "tiny-llava"), ("classify", "tiny-clip"), ("retrieve", "tiny-clip"),
        ("caption", "tiny-blip2"),
    }
    for task, (_, metrics) in SUMMARY_METRICS.items():
        for model in {r["model"] for r in rows if r["task"] == task}:
            assert [r["metric"] for r in rows if (r["task"], r["model"]) == (task, model)] == list(metrics)
    for row in rows:
        assert set(row) == {"task", "model", "dataset", "metric", "before", "after"}
        if row["task"] != "faithfulness":  # see the test of the faithfulness rows
            assert row["after"] > row["before"], row
    # Margins a broken training step (frozen adapter, lost labels, no gradient) would miss.
    value = {(r["model"], r["task"], r["metric"]): (r["before"], r["after"]) for r in rows}
    for key, gain in {
        ("tiny-llava", "caption", "rouge_l"): 0.1,
        ("tiny-blip2", "caption", "bleu_4"): 0.05,
        ("tiny-clip", "retrieve", "mean_recall"): 0.2,
        ("tiny-clip", "classify", "acc1"): 0.05,
    }.items():
        before, after = value[key]
        assert after - before > gain, (key, before, after)
    assert format_table(rows) in printed


@pytest.mark.slow
def test_the_trained_vlms_faithfulness_lies_between_chance_and_the_datasets_own_captions(run, tmp_path):
    out, _ = run
    rows = {r["metric"]: r for r in json.loads((out / "summary.json").read_text()) if r["task"] == "faithfulness"}
    assert list(rows) == ["precision", "recall", "dominant_first"]
    after = json.loads((out / "eval" / "vlm-faithfulness-after.json").read_text())
    predictions = out / "eval" / "vlm-caption-after.predictions.jsonl"
    assert after["summary"]["captions"] == len(after["captions"]) == len(predictions.read_text().splitlines())
    assert after["summary"]["skipped"] == []  # every test patch has its map
    for metric, row in rows.items():
        assert row["dataset"] == "chatearthnet (sample) test"
        assert isinstance(row["after"], float) and 0 <= row["after"] <= 1, row
        assert row["after"] == after["summary"][metric]
    # the base model's captions name (almost) no land cover; the trained one's name some of it
    assert rows["recall"]["after"] > rows["recall"]["before"] + 0.15, rows["recall"]
    labels = out / "sample" / "chatearthnet_labels"
    baseline = {}
    for name, extra in (("own", []), ("shuffled", ["--shuffle_maps"])):
        path = tmp_path / f"{name}.json"
        assert main(["eval", "faithfulness", "--dataset", str(out / "datasets" / "chatearthnet"), "--labels", str(labels),
                     "--out", str(path), *extra]) == 0
        baseline[name] = json.loads(path.read_text())["summary"]
    assert baseline["own"]["captions"] == after["summary"]["captions"]
    # the dataset's own captions are perfect, paired with other patches' maps (chance) clearly lower
    assert baseline["own"]["precision"] == 1.0 > rows["precision"]["after"] > baseline["shuffled"]["precision"] + 0.05


@pytest.mark.slow
def test_summary_values_are_the_results_files_and_the_cards_carry_them(run):
    out, _ = run
    rows = json.loads((out / "summary.json").read_text())
    caption = json.loads((out / "eval" / "blip2-caption-after.json").read_text())
    row = next(r for r in rows if r["model"] == "tiny-blip2" and r["metric"] == "bleu_4")
    assert row["after"] == caption["metrics"]["coco"]["bleu_4"]
    assert caption["model"]["id"] == str(out / "runs" / "blip2")
    for family in ("vlm", "clip", "blip2"):
        card = (out / "runs" / family / "README.md").read_text()
        meta = yaml.safe_load(card.split("---")[1])
        values = [m["value"] for entry in meta["model-index"] for r in entry["results"] for m in r["metrics"]]
        assert values, family
        assert sorted(p.name for p in (out / "runs" / family / "eval").glob("*.json")) == sorted(
            p.name for p in (out / "eval").glob(f"{family}-*-after.json") if "faithfulness" not in p.name
        )  # the faithfulness files are not results files: the card does not take them
    clip_card = yaml.safe_load((out / "runs" / "clip" / "README.md").read_text().split("---")[1])
    accuracy = json.loads((out / "eval" / "clip-classify-after.json").read_text())["metrics"]["clip_benchmark"]["acc1"]
    assert accuracy in [m["value"] for e in clip_card["model-index"] for r in e["results"] for m in r["metrics"]]


@pytest.mark.slow
def test_the_report_says_where_everything_went(run):
    out, printed = run
    assert "[1/20] sample world: 24 ChatEarthNet tiles, 100 GAIA scenes" in printed
    assert "[5/20] score the captions of the base VLM against the land-cover maps of chatearthnet (sample) test" in printed
    assert "[20/20] Space folder" in printed
    assert "skipped:" not in printed
    for place in ("datasets", "trained models", "evaluations", "faithfulness", "Space", "summary"):
        assert any(line.startswith(place) and str(out) in line for line in printed.splitlines()), place
    assert (out / "space" / "app.py").is_file()
    assert (out / "space" / "models" / "clip" / "config.json").is_file()
    assert (out / "space" / "models" / "vlm" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_a_rerun_reuses_every_finished_step(run, capsys):
    out, _ = run
    summary = (out / "summary.json").read_text()
    # what the data, training and eval steps wrote: a step that was redone would rewrite some of it
    outputs = {p: p.stat().st_mtime_ns for d in ("datasets", "runs", "eval") for p in (out / d).rglob("*") if p.is_file()}
    assert main(["quickstart", "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reused (finished in") == 20
    assert "0 steps ran, 20 reused" in printed
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs
    assert (out / "summary.json").read_text() == summary


def _fake_steps() -> list[Step]:
    return [
        Step("a", "first", ["a", "{out}/a.txt"], ("{out}/a.txt",)),
        Step("b", "reads a", ["b", "{out}/b.txt"], ("{out}/b.txt",), reads=("a",)),
        Step("c", "independent", ["c", "{out}/c.txt"], ("{out}/c.txt",)),
    ]


class FakeCommand:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, argv: list[str]) -> None:
        self.calls.append(argv[0])
        if argv[0] == self.fail:
            raise EarthvlError(f"{argv[0]} failed")
        Path(argv[1]).write_text(argv[0])


def test_a_redone_step_redoes_the_steps_that_read_it_and_nothing_else(tmp_path, capsys):
    command = FakeCommand()
    assert StepRunner(tmp_path, command).run(_fake_steps()) == {"a": "ran", "b": "ran", "c": "ran"}
    assert StepRunner(tmp_path, command).run(_fake_steps()) == {"a": "reused", "b": "reused", "c": "reused"}
    (tmp_path / "a.txt").unlink()  # an output gone: redo it, and what reads it
    assert StepRunner(tmp_path, command).run(_fake_steps()) == {"a": "ran", "b": "ran", "c": "reused"}
    changed = _fake_steps()
    changed[2].command.append("--new-option")  # another command: redo only that step
    assert StepRunner(tmp_path, command).run(changed) == {"a": "reused", "b": "reused", "c": "ran"}
    assert StepRunner(tmp_path, command, force=True).run(changed) == {"a": "ran", "b": "ran", "c": "ran"}
    assert "[2/3] reads a" in capsys.readouterr().out


def test_a_failed_step_leaves_no_record_and_is_redone(tmp_path):
    with pytest.raises(EarthvlError, match="b failed"):
        StepRunner(tmp_path, FakeCommand(fail="b")).run(_fake_steps())
    assert sorted(p.name for p in (tmp_path / STATE_DIR).iterdir()) == ["a.json"]
    command = FakeCommand()
    assert StepRunner(tmp_path, command).run(_fake_steps()) == {"a": "reused", "b": "ran", "c": "ran"}


def test_a_moved_folder_is_still_reused(tmp_path):
    (tmp_path / "one").mkdir()
    StepRunner(tmp_path / "one", FakeCommand()).run(_fake_steps()[:1])
    (tmp_path / "one").rename(tmp_path / "two")
    assert StepRunner(tmp_path / "two", FakeCommand()).run(_fake_steps()[:1]) == {"a": "reused"}


def _parses(argv: list[str]) -> None:
    """`argv` names a command and only options its script takes (checked without running the script)."""
    import importlib

    name = next(n for n in COMMANDS if argv[: len(n.split())] == n.split())
    rest = argv[len(name.split()) :]
    parser = importlib.import_module(COMMANDS[name][0]).make_parser()
    if "--config" in rest:
        index = rest.index("--config") + 1
        assert Path(recipe_path(rest[index])).is_file(), rest[index]
        rest = rest[: index - 1] + rest[index + 1 :]
    _, unknown = parser.parse_known_args(rest)
    assert unknown == [], (argv, unknown)


def test_real_ids_skip_the_sample_world_and_use_the_papers_recipes():
    args = QuickstartArguments(
        out="run",
        gaia_dataset="earthvl/gaia",
        chatearthnet_dataset="earthvl/chatearthnet",
        classify_dataset="eurosat",
        vlm_model="llava-hf/llava-1.5-7b-hf",
        clip_model="openai/clip-vit-base-patch32",
        blip2_model="Salesforce/blip2-opt-2.7b",
        max_train_steps=500,
        max_eval_samples=1000,
    )
    work = plan(args)
    names = [step.name for step in work.steps]
    assert not {"sample", "build gaia", "build chatearthnet"} & set(names)
    assert not any("faithfulness" in name for name in names)
    assert work.skipped == [
        "faithfulness of the VLM's captions: --chatearthnet_dataset earthvl/chatearthnet is not the sample world, the "
        "only source with land-cover maps of its test patches"
    ]
    commands = {step.name: step.command for step in work.steps if step.command}
    assert commands["train vlm"][:4] == ["train", "vlm", "--config", "vlm/geochat"]
    assert "earthvl/chatearthnet:gpt35" in commands["train vlm"]
    assert commands["train clip"][3] == "clip/gaia" and commands["train blip2"][3] == "blip2/gaia"
    assert commands["eval clip classify before"][5] == "eurosat"
    assert "gaia:earthvl/gaia" in commands["eval clip retrieve after"]
    assert all(c[c.index("--max_steps") + 1] == "500" for n, c in commands.items() if n.startswith("train"))
    assert all(c[c.index("--max_samples") + 1] == "1000" for n, c in commands.items() if n.startswith("eval"))
    for argv in commands.values():
        _parses(argv)
    assert [e.dataset for e in work.evaluations] == [
        "earthvl/chatearthnet test", "eurosat", "earthvl/gaia test", "earthvl/gaia test"
    ]
    assert len(work.steps) == 15  # 18 less the sample world and the two builds: no faithfulness steps


def test_every_step_of_the_offline_plan_is_a_valid_command():
    work = plan(QuickstartArguments())
    for step in work.steps:
        if step.command:
            _parses([arg.format(out="OUT") for arg in step.command])
    assert [step.name for step in work.steps][:3] == ["sample", "build gaia", "build chatearthnet"]


def test_bad_sizes_are_refused(capsys):
    assert main(["quickstart", "--tiles", "0"]) == 2
    assert "tiles must be at least 1, got 0" in capsys.readouterr().err


def test_an_unreachable_dataset_is_named_and_stops_the_run(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["--gaia_dataset", "someorg/gaia", "--chatearthnet_dataset", "someorg/cen", "--classify_dataset", "eurosat"]
    assert main(["quickstart", "--out", str(out), *args]) == 2  # HF_HUB_OFFLINE=1, as without a network
    err = capsys.readouterr().err
    assert "cannot load split 'test' of someorg/cen:gpt35: Couldn't reach 'someorg/cen' on the Hub" in err
    assert "quickstart: error: `earthvl eval caption --model tiny-llava --dataset chatearthnet:someorg/cen" in err
    assert not (out / STATE_DIR).exists()
