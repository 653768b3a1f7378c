"""`earthvl sample` from the command line: determinism, the summary, and clear errors for bad input."""

import hashlib
import json

import pytest

from earthvl.cli import main
from earthvl.sample import sample_corpus


def digest_tree(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_worlds(tmp_path, capsys):
    args = ["--tiles", "6", "--gaia_images", "8", "--zip", "--quiet"]
    assert main(["sample", "--out", str(tmp_path / "a"), "--seed", "5", *args]) == 0
    assert main(["sample", "--out", str(tmp_path / "b"), "--seed", "5", *args]) == 0
    assert main(["sample", "--out", str(tmp_path / "c"), "--seed", "6", *args]) == 0
    a, b, c = (digest_tree(tmp_path / n) for n in "abc")
    assert len(a) > 80 and a == b
    assert a != c and a.keys() != c.keys()  # other tiles, other file names
    manifest = json.loads((tmp_path / "a" / "sample_world.json").read_text())
    assert manifest["chatearthnet_patches"] == {"train": 12, "validation": 4, "test": 8}  # 6 tiles: 3/1/2
    assert sum(manifest["gaia_records"].values()) == 8
    assert "ChatEarthNet: 24 patches" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tiles", "0"], "tiles must be between 3"),
        (["--tiles", "-4"], "tiles must be between 3"),
        (["--tiles", "1000000"], "tiles must be between 3"),
        (["--gaia_images", "2"], "gaia_images must be between 3"),
        (["--seed", "-1"], "seed must be a non-negative integer"),
    ],
)
def test_nonsense_sizes_get_a_clear_message(tmp_path, capsys, args, message):
    assert main(["sample", "--out", str(tmp_path / "w"), *args]) == 2
    err = capsys.readouterr().err
    assert f"earthvl sample: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_unwritable_output_is_named(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["sample", "--out", str(blocker), "--tiles", "3"]) == 2
    assert f"output path {blocker} exists and is not a folder" in capsys.readouterr().err
    assert main(["sample", "--out", str(blocker / "below"), "--tiles", "3"]) == 2
    assert f"cannot write to output folder {blocker / 'below'}" in capsys.readouterr().err


def test_existing_world_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["sample", "--out", str(out), "--tiles", "3", "--quiet"]) == 0
    assert main(["sample", "--out", str(out), "--tiles", "3", "--quiet"]) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["sample", "--out", str(out), "--tiles", "4", "--quiet", "--overwrite"]) == 0
    assert len(list((out / "chatearthnet" / "s2_rgb_images" / "s2_images").iterdir())) == 16


def test_config_file_and_help(tmp_path, capsys):
    config = tmp_path / "sample.yaml"
    config.write_text(f"out: {tmp_path / 'w'}\ntiles: 3\nquiet: true\n")
    assert main(["sample", "--config", str(config)]) == 0
    assert json.loads((tmp_path / "w" / "sample_world.json").read_text())["tiles"] == 3
    assert main([]) == 0
    assert "sample" in capsys.readouterr().out


def test_sample_corpus_is_deterministic_and_covers_both_datasets():
    corpus = sample_corpus()
    assert corpus == sample_corpus()
    text = " ".join(corpus)
    assert "The image showcases:" in text and "dominated by" in text and "mangroves" in text


def test_models_flag_builds_reloadable_tiny_models_on_the_sample_texts(tmp_path):
    from transformers import AutoProcessor, CLIPModel

    out = tmp_path / "w"
    assert main(["sample", "--out", str(out), "--tiles", "3", "--models", "--quiet"]) == 0
    assert json.loads((out / "sample_world.json").read_text())["models"] == ["tiny-blip2", "tiny-clip", "tiny-llava"]
    model = CLIPModel.from_pretrained(out / "models" / "tiny-clip")
    processor = AutoProcessor.from_pretrained(out / "models" / "tiny-clip")
    caption = json.loads((out / "chatearthnet" / "json_files" / "ChatEarthNet_caps_35_train.json").read_text())[0]["caption"]
    ids = processor.tokenizer(caption)["input_ids"]
    assert len(ids) < len(caption.split()) * 1.3  # the tokenizer was trained on these texts: mostly whole words
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == caption
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
