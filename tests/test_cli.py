"""The `earthvl` entry point: dispatch to one- and two-word commands, and clear messages for unknown ones."""

import pytest
from datasets import load_dataset

from earthvl.cli import main


def test_unknown_and_incomplete_commands_name_what_exists(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "unknown command 'trian'; known commands: sample, build chatearthnet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build"])
    assert "'build' needs one of: chatearthnet" in capsys.readouterr().err


def test_build_chatearthnet_from_the_sample_zips(sample_world, tmp_path, capsys):
    out = tmp_path / "hub"
    zips = sample_world.root / "chatearthnet_zenodo"
    assert main(["build", "chatearthnet", "--source", str(zips), "--out", str(out), "--configs", "gpt35", "--quiet"]) == 0
    assert "gpt35: train 28, validation 4, test 16" in capsys.readouterr().out
    dataset = load_dataset(str(out), "gpt35")
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 28, "validation": 4, "test": 16}


def test_build_chatearthnet_names_an_unusable_source(tmp_path, capsys):
    assert main(["build", "chatearthnet", "--source", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"no ChatEarthNet data in {tmp_path}" in capsys.readouterr().err
