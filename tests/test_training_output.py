"""The training output folder contract (`earthvl.training_output`) and the dataset versions a run records
(`earthvl.data.data_version`)."""

import json

import pytest

from earthvl import data
from earthvl.errors import EarthvlError
from earthvl.training_output import (
    ADAPTER_CONFIG_FILE,
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    MERGED_DIR,
    RUN_FILE,
    VISION_FILE,
    adapter_base,
    read_side_file,
    read_training_output,
    write_side_file,
)


def adapter_folder(tmp_path):
    folder = tmp_path / "run"
    write_side_file(folder, ADAPTER_CONFIG_FILE, {"base_model_name_or_path": "org/base"})
    write_side_file(folder, VISION_FILE, {"image_size": 448})
    write_side_file(folder, RUN_FILE, {"base_model": "tiny-llava", "device": "cpu"})
    for step in (2, 10, 4):
        write_side_file(folder / f"checkpoint-{step}", "trainer_state.json", {"global_step": step})
    return folder


def test_an_adapter_folder_reads_back_with_its_side_files_and_newest_checkpoint_state(tmp_path):
    output = read_training_output(adapter_folder(tmp_path))
    assert output.adapter and output.base_model == "org/base" and output.run["device"] == "cpu"
    assert output.files[VISION_FILE] == {"image_size": 448}
    assert output.state == {"global_step": 10}  # checkpoint-10, not the last listed nor the last in text order
    assert adapter_base(output.path) == "org/base"
    assert read_side_file(output.path, VISION_FILE) == {"image_size": 448}
    assert read_side_file(output.path, "captioning.json") == {} and read_side_file(None, VISION_FILE) == {}


def test_merged_describes_the_merged_model(tmp_path):
    folder = adapter_folder(tmp_path)
    with pytest.raises(EarthvlError, match="no merged model"):
        read_training_output(folder, merged=True)
    write_side_file(folder / MERGED_DIR, CONFIG_FILE, {"model_type": "llava"})
    write_side_file(folder / MERGED_DIR, GENERATION_CONFIG_FILE, {"num_beams": 3})
    output = read_training_output(folder, merged=True)
    assert not output.adapter and output.files[CONFIG_FILE] == {"model_type": "llava"}
    assert output.files[GENERATION_CONFIG_FILE] == {"num_beams": 3}


def test_what_is_not_a_training_output_is_named(tmp_path):
    with pytest.raises(EarthvlError, match="not a trained model folder"):
        read_training_output(tmp_path)
    with pytest.raises(EarthvlError, match="not a PEFT adapter folder"):
        adapter_base(tmp_path)
    (tmp_path / ADAPTER_CONFIG_FILE).write_text("{not json")
    with pytest.raises(EarthvlError, match=f"{ADAPTER_CONFIG_FILE} is not readable JSON"):
        read_training_output(tmp_path)
    (tmp_path / ADAPTER_CONFIG_FILE).write_text(json.dumps({"r": 8}))
    with pytest.raises(EarthvlError, match="names no base_model_name_or_path"):
        adapter_base(tmp_path)


def built_folder(tmp_path):
    folder = tmp_path / "built"
    (folder / "data" / "default").mkdir(parents=True)
    (folder / "README.md").write_text("---\nconfigs: []\n---\n")
    (folder / "build_report.json").write_text("{}")
    (folder / ".earthvl-build.json").write_text(json.dumps({"built_by": "earthvl", "version": "9.9"}))
    (folder / "data" / "default" / "train-00000-of-00001.parquet").write_bytes(b"x" * 10)
    return folder


def test_a_local_folder_is_recorded_by_a_fingerprint_that_follows_its_files(tmp_path):
    folder = built_folder(tmp_path)
    first = data.data_version(str(folder))
    assert first["built_by"] == "earthvl 9.9" and len(first["fingerprint"]) == 64 and "revision" not in first
    assert data.data_version(str(folder)) == first
    (folder / "data" / "default" / "train-00000-of-00001.parquet").write_bytes(b"x" * 11)
    assert data.data_version(str(folder))["fingerprint"] != first["fingerprint"]


def test_a_hub_dataset_is_recorded_by_the_commit_datasets_resolves(monkeypatch, caplog):
    class Builder:
        hash = "0123456789abcdef0123456789abcdef01234567"

    calls = []
    monkeypatch.setattr(data, "load_dataset_builder", lambda *args, **kwargs: calls.append((args, kwargs)) or Builder())
    assert data.data_version("org/gaia", "default", "main") == {"revision": Builder.hash}
    assert calls == [(("org/gaia", "default"), {"revision": "main"})]

    def offline(*args, **kwargs):
        raise ConnectionError("offline, no cached copy")

    monkeypatch.setattr(data, "load_dataset_builder", offline)
    assert data.data_version("org/gaia", "default") == {"revision": None}
    assert "the commit of org/gaia is not recorded: offline, no cached copy" in caplog.text
