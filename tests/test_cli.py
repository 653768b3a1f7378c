"""The `earthvl` entry point: dispatch to one- and two-word commands, and clear messages for unknown ones."""

from pathlib import Path

import pytest
from datasets import load_dataset

import earthvl.scripts
from earthvl.cli import COMMANDS, main


def test_unknown_and_incomplete_commands_name_what_exists(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "unknown command 'trian'; known commands: quickstart, sample, build chatearthnet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build"])
    assert "'build' needs one of: chatearthnet" in capsys.readouterr().err


def test_every_public_script_module_is_a_command():
    """A module of earthvl/scripts is a command (`make_parser`, `main`, in COMMANDS); what scripts share is private."""
    folder = Path(earthvl.scripts.__file__).parent
    public = {f"earthvl.scripts.{path.stem}" for path in folder.glob("*.py") if not path.name.startswith("_")}
    assert public == {module for module, _ in COMMANDS.values()}


def test_build_chatearthnet_from_the_sample_zips(sample_world, tmp_path, capsys):
    out = tmp_path / "hub"
    zips = sample_world.root / "chatearthnet_zenodo"
    assert main(["build", "chatearthnet", "--source", str(zips), "--out", str(out), "--configs", "gpt35", "--quiet"]) == 0
    assert "gpt35: train 28, validation 4, test 16" in capsys.readouterr().out
    dataset = load_dataset(str(out), "gpt35", cache_dir=str(tmp_path / "cache"))
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 28, "validation": 4, "test": 16}


def test_build_chatearthnet_names_an_unusable_source(tmp_path, capsys):
    assert main(["build", "chatearthnet", "--source", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"no ChatEarthNet data in {tmp_path}" in capsys.readouterr().err


def test_build_gaia_from_the_sample_shards_with_options_from_a_yaml_config(sample_world, tmp_path, capsys):
    out = tmp_path / "hub"
    config = tmp_path / "gaia.yaml"
    config.write_text(f"source: {sample_world.gaia.root}\nout: {out}\nstrip_prefix: true\nsplits: [test]\nquiet: true\n")
    assert main(["build", "gaia", "--config", str(config), "--configs", "default"]) == 0
    printed = capsys.readouterr().out
    downloaded = [s for s in sample_world.gaia.scenes if s.split == "test" and s.downloaded]
    assert f"default: test {len(downloaded)}" in printed
    dataset = load_dataset(str(out), "default", split="test", cache_dir=str(tmp_path / "cache"))
    assert sorted(dataset["id"]) == sorted(s.record["id"] for s in downloaded)
    assert not any(c.startswith("The image showcases:") for row in dataset["captions"] for c in row)


def test_build_gaia_and_publish_name_bad_input(tmp_path, capsys):
    assert main(["build", "gaia", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "neither a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "gaia", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--images", "ftp"])
    assert exit_info.value.code == 2 and "invalid choice: 'ftp'" in capsys.readouterr().err
    assert main(["publish", str(tmp_path), "--repo", "me/x"]) == 2
    assert "is not a built earthvl dataset folder" in capsys.readouterr().err
