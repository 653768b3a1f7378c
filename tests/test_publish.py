"""`earthvl publish` against a patched HfApi (no Hub server takes uploads offline): the commit carries exactly the
built folder's files, the repo is a dataset repo, and the token never reaches the output."""

import bz2
import gzip
import json
import logging
import lzma
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.utils import _runtime

from earthvl import cli
from earthvl.builders.gaia.build import build_gaia
from earthvl.errors import EarthvlError
from earthvl.hub import publish_dataset, space_files

TOKEN = "hf_earthvlTestTokenThatMustNeverBePrinted"


@pytest.fixture(scope="module")
def folder(sample_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("publish") / "gaia"
    build_gaia(sample_world.gaia.root, out, progress=False)
    return out


@pytest.fixture
def hub(monkeypatch):
    """Record what would be sent: created repos and commit operations."""
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(_runtime.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    sent = {"repos": [], "commits": [], "cards": []}

    def create_repo(self, repo_id, **kwargs):
        sent["repos"].append((repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        sent["commits"].append((repo_id, list(operations), kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, content, **kwargs: sent["cards"].append(content))
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return sent


def test_commit_carries_exactly_the_built_files(folder, hub, tmp_path):
    (folder / ".scratch").write_text("local only")
    (folder / "data" / "default" / "train-00001.partial").write_bytes(b"unfinished")
    url = publish_dataset(folder, "earthvl/gaia", private=True)
    assert url == "https://huggingface.co/datasets/earthvl/gaia/commit/abc"
    assert hub["repos"] == [("earthvl/gaia", {"repo_type": "dataset", "private": True, "exist_ok": True})]
    (repo_id, operations, kwargs), = hub["commits"]
    assert repo_id == "earthvl/gaia" and kwargs["repo_type"] == "dataset"
    sent = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
    expected = {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".partial")
    }
    assert sent == expected
    assert {"README.md", "build_report.json", "data/default/train-00000-of-00001.parquet", "figures/samples.png"} <= set(sent)
    assert hub["cards"] == [(folder / "README.md").read_text()]  # the card the Hub would validate


def test_cli_publishes_without_printing_the_token(folder, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert cli.main(["publish", str(folder), "--repo", "earthvl/gaia"]) == 0
    out, err = capsys.readouterr()
    assert "published" in out and "earthvl/gaia" in out
    assert TOKEN not in out + err + caplog.text
    assert hub["repos"][0][1]["private"] is False


def test_not_a_built_folder_and_offline_are_clear_errors(tmp_path, folder, monkeypatch):
    with pytest.raises(EarthvlError, match="not a built earthvl dataset folder: README.md, build_report.json, data missing"):
        publish_dataset(tmp_path, "earthvl/x")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(EarthvlError, match="HF_HUB_OFFLINE"):
        publish_dataset(folder, "earthvl/gaia")


def test_links_out_of_the_folder_and_pickles_are_refused_by_name(folder, hub, tmp_path):
    copy = Path(shutil.copytree(folder, tmp_path / "gaia", symlinks=True))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("private notes")
    (copy / "notes.txt").symlink_to(outside / "secret.txt")
    (copy / "figures" / "more").symlink_to(outside)
    (copy / "card.md").symlink_to(copy / "README.md")  # stays inside: sent as the file it names
    with pytest.raises(EarthvlError, match=r"symbolic links that lead out of it, .*: figures/more, notes.txt;"):
        publish_dataset(copy, "earthvl/gaia")
    (copy / "notes.txt").unlink()
    (copy / "figures" / "more").unlink()
    torch.save({"weights": torch.zeros(2)}, copy / "figures" / "scaler.joblib")
    with pytest.raises(EarthvlError, match=r"pickled files, .*: figures/scaler.joblib"):
        publish_dataset(copy, "earthvl/gaia")
    assert not hub["repos"] and not hub["commits"]

    (copy / "figures" / "scaler.joblib").unlink()
    publish_dataset(copy, "earthvl/gaia")
    ((_, operations, _),) = hub["commits"]
    sent = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
    assert sent["card.md"] == (folder / "README.md").read_bytes() and "notes.txt" not in sent


def safetensors_with_header(length):
    """A valid safetensors file whose header is `length` bytes long (its first bytes then read 0x80 0x03 for 896)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", length) + header.ljust(length) + b"\0\0\0\0"


def test_pickles_are_recognised_by_content_whatever_their_name(tmp_path):
    stream = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)
    planted = {
        "scaler.joblib": None,  # torch.save: a zip holding archive/data.pkl
        "legacy.dat": None,  # torch.save without the zip container: a protocol-2 pickle
        "vocab.txt": stream,
        "model.z": zlib.compress(stream),  # joblib's compressed dumps
        "model.gz": gzip.compress(stream),
        "model.bz2": bz2.compress(stream),
        "model.xz": lzma.compress(stream),
    }
    for name, data in planted.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    torch.save({"w": torch.zeros(2)}, tmp_path / "scaler.joblib")
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.dat", _use_new_zipfile_serialization=False)
    (tmp_path / "model.safetensors").write_bytes(safetensors_with_header(896))
    (tmp_path / "app.py").write_text("print('hello')\n")
    (tmp_path / "README.md").write_bytes(b"\x80\x03 is not how a card starts, yet it is no pickle")

    with pytest.raises(EarthvlError) as caught:
        space_files(tmp_path)
    assert f"pickled files, which earthvl does not publish (safetensors only): {', '.join(sorted(planted))};" in str(caught.value)

    for name in planted:
        (tmp_path / name).unlink()
    assert sorted(space_files(tmp_path)) == ["README.md", "app.py", "model.safetensors"]
