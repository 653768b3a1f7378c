"""`earthvl annotate gaia` end to end on the scraped-records world: every planted duplicate and failure in the report,
a GAIA folder that `earthvl build gaia` builds and `load_dataset` loads, and resumption after a kill."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gaia_scrape_world import PLACES, PLANTED, ScriptedChatServer, build_world
from llm_servers import CHAT_PATH, chat_route

from earthvl.builders.gaia import layout
from earthvl.cli import main as cli

KEPT = sorted(record_id for record_id, fate in PLANTED.items() if fate is None)
KEPT_IMAGES = sorted(f"{i}.png" for i in KEPT)
ANNOTATED = len(KEPT) + 1  # record 20 is asked too, and fails
REQUESTS = 1 + ANNOTATED + 1 + 2  # one summary, one annotation each, a retry for 19, two for 20


@pytest.fixture
def chat():
    server = ScriptedChatServer()
    yield server
    server.close()


@pytest.fixture
def world(tmp_path, server):
    return build_world(tmp_path, server)


def _args(records, gazetteer, out, chat, *extra):
    return ["annotate", "gaia", "--records", str(records), "--out", str(out), "--backend", "openai", "--model",
            "scripted", "--base_url", chat.base_url, "--gazetteer", str(gazetteer), "--allow_networks", "127.0.0.0/8",
            "--concurrency", "1", "--max_retries", "0", "--quiet", *extra]  # fmt: skip


@pytest.mark.slow
def test_the_fixture_becomes_a_gaia_dataset_with_every_record_accounted_for(world, chat, tmp_path, capsys):
    records, gazetteer = world
    out = tmp_path / "annotated"
    assert cli(_args(records, gazetteer, out, chat)) == 0
    report = json.loads((out / "annotation_report.json").read_text())

    dropped = {entry["id"]: (entry["step"], entry.get("duplicate_of")) for entry in report["dropped"]}
    assert dropped == {record_id: fate for record_id, fate in PLANTED.items() if fate is not None}
    assert report["steps"]["read"] == {"rows": 20, "dropped": 1}
    assert report["steps"]["dedup"] == {"in": 19, "dropped_same_url": 2, "dropped_same_bytes": 1,
                                        "dropped_near_duplicate": 1, "dropped": 4, "out": 13}
    assert report["steps"]["images"] == {"dropped": 2, "fetched": 14, "cached": 0, "local": 1}
    assert report["steps"]["clean"]["html"] == 1
    assert report["steps"]["summarise"] == {"in": 13, "long": 1, "summarised": 1}
    assert {(f["id"], f["step"]) for f in report["flagged"]} >= {(18, "clean")}
    assert report["usage"]["annotate"]["requests"] == ANNOTATED + 3 and report["usage"]["annotate"]["schema_retries"] == 3
    assert report["usage"]["total"]["requests"] == REQUESTS == chat.requests
    assert report["usage"]["total"]["prompt_tokens"] > 20_000 * 4 // 4  # the long article was sent once
    assert "violates the RS_image schema" in dict((e["id"], e["reason"]) for e in report["dropped"])[20]

    splits = {split: json.loads((out / layout.json_path(split)).read_text()) for split in layout.SPLITS}
    rows = {row["id"]: row for rows in splits.values() for row in rows}
    assert sorted(rows) == KEPT 
    assert all(list(row) == list(layout.FIELDS) for row in rows.values())
    assert (rows[5]["lat"], rows[5]["lon"]) == (38.5, -90.2)  # given with the record
    assert (rows[1]["lat"], rows[1]["lon"]) == PLACES["Athens, Greece"] and rows[13]["location"] == "Θεσσαλία, Ελλάδα"
    assert rows[12]["location"] == "Athens, Greece"  # read from the summary
    assert rows[18]["lat"] is None and all(len(row["captions"]) == 5 for row in rows.values())

    hub = tmp_path / "hub"
    assert cli(["build", "gaia", "--source", str(out), "--out", str(hub), "--images", "folder", "--quiet"]) == 0
    from datasets import load_dataset

    built = load_dataset(str(hub), "default")
    assert sorted(i for split in built.values() for i in split["id"]) == KEPT
    assert built["train"][0]["image"].size[0] > 0

    images = out / "images"
    assert _image_names(out) == KEPT_IMAGES  # no duplicate's, no failed record's, no manifest
    assert images.joinpath("1.png").stat().st_nlink == 2  # a hard link to the fetch cache's file
    assert images.joinpath("16.png").read_bytes() == (records.parent / "local" / "16.png").read_bytes()
    assert not images.joinpath("16.png").samefile(records.parent / "local" / "16.png")  # the user's file, copied

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not ours")
    (images / "99.png").write_bytes(b"an image an earlier run kept")
    (images / "98.png").symlink_to(outside)
    (images / "1.png").unlink()
    (images / "1.png").symlink_to(outside)
    before = chat.requests
    assert cli(_args(records, gazetteer, out, chat)) == 0  # everything answered is cached; 20 is asked again
    assert chat.requests - before == 3
    assert _image_names(out) == KEPT_IMAGES and outside.read_bytes() == b"not ours"
    assert not images.joinpath("1.png").is_symlink() and images.joinpath("1.png").stat().st_nlink == 2
    report = json.loads((out / "annotation_report.json").read_text())
    assert report["steps"]["split"]["stray_images_removed"] == 2


def _image_names(out):
    return sorted(os.listdir(out / "images"))


@pytest.mark.slow
def test_a_killed_run_resumes_asking_only_for_records_not_done(world, chat, tmp_path):
    records, gazetteer = world
    out = tmp_path / "annotated"
    done_before_kill = 5
    chat.hold_after(done_before_kill)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "earthvl", *_args(records, gazetteer, out, chat)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while chat.requests <= done_before_kill:  # the sixth request is held: five answers are in the cache
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    process.kill()
    process.wait()
    process.stderr.close()
    assert not (out / "train_data.json").exists()
    chat.hold_from = None
    chat.release()
    sent_before = chat.requests
    assert cli(_args(records, gazetteer, out, chat)) == 0
    # The held request got no answer before the kill: it is asked again, with everything not yet done.
    assert chat.requests - sent_before == REQUESTS - done_before_kill
    report = json.loads((out / "annotation_report.json").read_text())
    assert report["usage"]["total"]["requests"] == REQUESTS - done_before_kill
    assert report["usage"]["summarise"]["cached"] == 1
    assert sorted(row["id"] for split in layout.SPLITS for row in json.loads((out / layout.json_path(split)).read_text())) == KEPT
    assert _image_names(out) == KEPT_IMAGES


@pytest.mark.slow
def test_a_run_stopped_by_max_requests_writes_no_dataset_and_the_next_run_finishes(world, chat, tmp_path):
    records, gazetteer = world
    out = tmp_path / "annotated"
    assert cli(_args(records, gazetteer, out, chat, "--max_requests", "4")) == 0
    report = json.loads((out / "annotation_report.json").read_text())
    assert chat.requests == 4 and "run the same command again" in report["stopped"]
    assert report["usage"]["annotate"]["pending"] == ANNOTATED - 3 and report["usage"]["annotate"]["stopped_by"] == "max_requests"
    assert not any(entry["step"] == "annotate" for entry in report["dropped"])
    assert not (out / "train_data.json").exists() and not (out / "images").exists()
    assert cli(_args(records, gazetteer, out, chat)) == 0
    assert chat.requests == REQUESTS and _image_names(out) == KEPT_IMAGES
    assert sorted(row["id"] for split in layout.SPLITS for row in json.loads((out / layout.json_path(split)).read_text())) == KEPT


def _local_world(root, count):
    """`count` records with local images and short articles (no image server needed), and short prompts (the tiny
    model's context is 512 tokens; the shipped annotation prompt alone is longer)."""
    from gaia_scrape_world import article, encoded, scene

    rows = []
    for i in range(count):
        (root / f"{i}.png").write_bytes(encoded(scene(100 + i)))
        rows.append({"id": i, "image_src": f"{i}.png", "article": article("Athens, Greece", 20), "date": "2024-05-01"})
    records = root / "records.jsonl"
    records.write_text("\n".join(json.dumps(row) for row in rows))
    prompts = root / "prompts"
    prompts.mkdir()
    for name in ("summary", "annotate"):
        prompt = {"name": name, "version": "test-1", "provenance": "a short prompt for the tiny model",
                  "system": "Answer with JSON.", "user": "{article}"}
        (prompts / f"{name}.json").write_text(json.dumps(prompt))
    return records, prompts


def test_filters_drop_charts_and_images_that_are_not_remote_sensing(chat, tmp_path):
    from gaia_scrape_world import CHART, NOT_REMOTE_SENSING

    records, _ = _local_world(tmp_path, 3)
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    rows[1]["article"] += " " + CHART
    rows[2]["article"] += " " + NOT_REMOTE_SENSING
    records.write_text("\n".join(json.dumps(row) for row in rows))
    out = tmp_path / "a"
    assert cli(["annotate", "gaia", "--records", str(records), "--out", str(out), "--backend", "openai", "--model", "m",
                "--base_url", chat.base_url, "--filters", "--quiet"]) == 0  # fmt: skip
    report = json.loads((out / "annotation_report.json").read_text())
    assert [(e["id"], e["step"]) for e in report["dropped"]] == [(1, "filter"), (2, "filter")]
    assert "chart" in report["dropped"][0]["reason"] and "not a remote-sensing" in report["dropped"][1]["reason"]
    assert [row["id"] for split in layout.SPLITS for row in json.loads((out / layout.json_path(split)).read_text())] == [0]


@pytest.mark.slow
def test_429_and_500_are_retried_and_a_dead_request_is_reported(server, tmp_path):
    valid = {"tag": ["a", "b", "c"], "location": None, "modality": None, "satellite": None, "sensor": None,
             "resolution": "Low", "captions": [f"{layout.CAPTION_PREFIX} A field." for _ in range(5)]}
    records, _ = _local_world(tmp_path, 1)
    url = chat_route(server, json.dumps(valid), script=["429", "500"])
    argv = ["annotate", "gaia", "--records", str(records), "--out", str(tmp_path / "a"), "--backend", "openai",
            "--model", "m", "--base_url", url, "--max_retries", "2", "--quiet"]  # fmt: skip
    assert cli(argv) == 0
    assert server.hits[CHAT_PATH] == 3
    report = json.loads((tmp_path / "a" / "annotation_report.json").read_text())
    assert report["dropped"] == [] and report["usage"]["annotate"]["requests"] == 1  # one request, three tries
    chat_route(server, json.dumps(valid), script=["500"] * 3)
    server.hits.clear()
    assert cli([*argv[:5], str(tmp_path / "b"), *argv[6:]]) == 0
    report = json.loads((tmp_path / "b" / "annotation_report.json").read_text())
    assert server.hits[CHAT_PATH] == 3 and report["dropped"][0]["reason"] == "HTTP 500 after 3 tries"


@pytest.mark.slow
def test_the_tiny_local_model_annotates_through_constrained_decoding(tmp_path):
    records, prompts = _local_world(tmp_path, 1)
    out = tmp_path / "annotated"
    assert cli(["annotate", "gaia", "--records", str(records), "--out", str(out), "--prompt_dir", str(prompts),
                "--backend", "transformers",
                "--model", "tiny-llava", "--device", "cpu", "--max_chars", "10", "--max_tokens", "300",
                "--filters", "false", "--quiet"]) == 0  # fmt: skip
    report = json.loads((out / "annotation_report.json").read_text())
    assert report["dropped"] == [] and report["usage"]["annotate"]["answered"] == 1
    assert report["usage"]["annotate"]["schema_retries"] == 0  # constrained: valid the first time
    rows = [row for split in layout.SPLITS for row in json.loads((out / layout.json_path(split)).read_text())]
    assert [row["id"] for row in rows] == [0]
    assert all(len(row["captions"]) == 5 and row["captions"][0].startswith(layout.CAPTION_PREFIX) for row in rows)


@pytest.mark.slow
def test_a_real_server_without_structured_output_is_retried_then_reported(transformers_server, tmp_path):
    """`transformers serve` ignores response_format, so the tiny model's babble violates the schema: each record is
    asked 1 + schema_retries times with the shipped prompts and then reported, and nothing unvalidated reaches the
    dataset."""
    records, _ = _local_world(tmp_path, 2)
    out = tmp_path / "annotated"
    assert cli(["annotate", "gaia", "--records", str(records), "--out", str(out), "--backend", "openai", "--model",
                transformers_server.model, "--base_url", transformers_server.base_url, "--max_tokens", "12",
                "--schema_retries", "1", "--quiet"]) == 0  # fmt: skip
    report = json.loads((out / "annotation_report.json").read_text())
    assert report["usage"]["annotate"]["requests"] == 4 and report["usage"]["annotate"]["prompt_tokens"] > 0
    assert [(e["id"], e["step"]) for e in report["dropped"]] == [(0, "annotate"), (1, "annotate")]
    assert all("unusable answer" in e["reason"] for e in report["dropped"])
    assert all(json.loads((out / layout.json_path(split)).read_text()) == [] for split in layout.SPLITS)
