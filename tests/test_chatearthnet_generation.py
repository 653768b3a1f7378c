"""ChatEarthNet's generator facts (as zhu-xlab/ChatEarthNet's scripts compute them) and the land-cover map readers."""

import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from earthvl.builders.chatearthnet import generation
from earthvl.builders.chatearthnet.maps import MapRefused, read_label_map

WATER, DEVELOPED, TREE = 1, 2, 3
NOUN = "(?:fraction|part|portion|amount|quantity)"


@pytest.fixture(scope="module")
def scene():
    labels = np.full((256, 256), TREE, dtype=np.uint8)
    labels[:, :128] = WATER
    labels[200:, 200:] = DEVELOPED
    return labels


@pytest.mark.parametrize(
    ("share", "rounded", "exact"),
    [(0.0, "extra small", "extra small"), (0.0949, "extra small", "extra small"), (0.095, "small", "extra small"),
     (0.19, "small", "small"), (0.196, "medium", "small"), (0.29, "medium", "medium"), (0.4951, "large", "medium"),
     (0.795, "extra large", "large"), (0.8, "extra large", "extra large"), (1.0, "extra large", "extra large")],
)
def test_size_words_bucket_the_rounded_percentage(share, rounded, exact):
    assert generation.size_word(share) == rounded
    assert generation.size_word(share, rounded=False) == exact


def test_size_percent_keeps_upstreams_float_truncation():
    assert generation.size_percent(0.29) == 28  # round(0.29, 2) * 100 == 28.999999999999996
    assert generation.size_percent(0.095) == 10


def test_gpt35_user_prompt_is_upstreams_text(scene):
    prompt = generation.gpt35_user_prompt(generation.caption_statistics(scene), np.random.default_rng(0))
    intro = "The {} mainly contains the following land cover types, in descending order of content: "
    expected = (
        "Analyze the provided image as an AI visual assistant. The following contexts are provided.\n"
        "The overall land cover distributions from most to least are: water; tree; developed area; \n"
        + intro.format("top left") + f"water \\(extra large {NOUN}\\).\n"
        + intro.format("top right") + f"tree \\(extra large {NOUN}\\).\n"
        + intro.format("bottom left") + f"water \\(extra large {NOUN}\\).\n"
        + intro.format("bottom right") + f"tree \\(extra large {NOUN}\\) and developed area \\(small {NOUN}\\).\n"
        # a tie (8192 pixels each): upstream's reversed stable sort puts the higher index first
        + intro.format("middle") + f"tree \\(large {NOUN}\\) and water \\(large {NOUN}\\).\n\n"
    )
    assert re.fullmatch(expected, prompt), prompt


def test_an_empty_region_keeps_upstreams_bare_intro():
    labels = np.full((256, 256), TREE, dtype=np.uint8)
    labels[:128, :128] = 0
    prompt = generation.gpt35_user_prompt(generation.caption_statistics(labels), np.random.default_rng(0))
    assert "in descending order of content: The top right mainly" in prompt


def test_three_classes_are_listed_with_an_oxford_and():
    labels = np.full((256, 256), TREE, dtype=np.uint8)
    labels[:64, :] = WATER
    labels[:, :40] = DEVELOPED
    line = generation.gpt35_user_prompt(generation.caption_statistics(labels), np.random.default_rng(0)).split("\n")[2]
    assert re.fullmatch(f".*: tree \\(medium {NOUN}\\), water \\(medium {NOUN}\\), and developed area \\(medium {NOUN}\\)\\.", line), line


def test_gpt4v_statistics_are_upstreams_text(scene):
    assert generation.gpt4v_class_distribution(scene).splitlines() == [
        "water:  top left part: 100.00%  top right part: 0.00%  bottom left part: 100.00%  bottom right part: 0.00% "
        " middle part: 50.00% ",
        "tree:  top left part: 0.00%  top right part: 100.00%  bottom left part: 0.00%  bottom right part: 80.86% "
        " middle part: 50.00% ",
        "developed:  top left part: 0.00%  top right part: 0.00%  bottom left part: 0.00%  bottom right part: 19.14% "
        " middle part: 0.00% ",
    ]
    assert generation.gpt4v_spatial_distribution(scene).splitlines() == [
        "top_left distribution: water: 1.00;",
        "top_right distribution: tree: 1.00;",
        "bottom_left distribution: water: 1.00;",
        "bottom_right distribution: tree: 0.81; developed: 0.19;",
        "middle distribution: water: 0.50; tree: 0.50;",
    ]


def test_gpt4v_prompt_layout(scene):
    data = generation.prompt_data("gpt4v")
    prompt = generation.gpt4v_prompt([scene] * 4)
    assert prompt.startswith(data["intro"]) and prompt.endswith(data["rules"])
    assert [prompt.count(f"For the {o} image") for o in data["ordinals"]] == [2, 2, 2, 2]
    image = generation.gpt4v_image(scene)
    assert image.shape == (128, 128, 3) and tuple(image[0, 0]) == (0, 0, 255) and tuple(image[127, 127]) == (255, 0, 0)
    with pytest.raises(ValueError, match="4 maps"):
        generation.gpt4v_prompt([scene])
    assert generation.split_paragraphs("a\n\nb\r\n\r\nc\n\n\n d ") == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="got 3"):
        generation.split_paragraphs("a\n\nb\n\nc")


def test_prompts_carry_provenance_and_a_version():
    for style in ("gpt35", "gpt4v"):
        data = generation.prompt_data(style)
        assert data["provenance"]["repository"] == "zhu-xlab/ChatEarthNet"
        assert re.fullmatch(r"[0-9a-f]{40}", data["provenance"]["commit"])
        assert generation.prompt_version(style) == f"{style}-v{data['version']}"
    assert (generation.prompt_data("gpt35")["model"], generation.prompt_data("gpt35")["max_tokens"]) == ("gpt-3.5-turbo-1106", 300)
    assert (generation.prompt_data("gpt4v")["model"], generation.prompt_data("gpt4v")["max_tokens"]) == ("gpt-4-vision-preview", 1200)
    assert "'possibly', 'likely', 'perhaps', 'context', 'segmentation'" in generation.prompt_data("gpt35")["system"]


def test_colour_and_worldcover_maps_read_to_the_same_classes(scene, tmp_path):
    Image.fromarray(generation.colour_map(scene)).save(tmp_path / "colour.png")
    codes = np.array([0, 80, 50, 10], dtype=np.uint8)[scene]
    Image.fromarray(codes).save(tmp_path / "codes.png")
    tifffile.imwrite(tmp_path / "codes.tif", codes)
    for name in ("colour.png", "codes.png", "codes.tif"):
        assert np.array_equal(read_label_map(tmp_path / name, (256, 256)), scene), name


def test_bad_maps_are_refused_with_the_reason(scene, tmp_path):
    colours = generation.colour_map(scene)
    colours[0, 0] = (1, 2, 3)
    Image.fromarray(colours).save(tmp_path / "odd.png")
    with pytest.raises(MapRefused, match=r"odd.png: 1 colour\(s\) not in ChatEarthNet's land-cover table, e.g. \(1, 2, 3\)"):
        read_label_map(tmp_path / "odd.png")
    codes = np.full((256, 256), 15, dtype=np.uint8)
    Image.fromarray(codes).save(tmp_path / "code15.png")
    with pytest.raises(MapRefused, match=r"code\(s\) \[15\] are not ESA WorldCover codes"):
        read_label_map(tmp_path / "code15.png")
    Image.fromarray(generation.colour_map(scene)[:128]).save(tmp_path / "small.png")
    with pytest.raises(MapRefused, match="map is 256x128 px, its image 256x256 px"):
        read_label_map(tmp_path / "small.png", (256, 256))
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(MapRefused, match="junk.tif: cannot read the GeoTIFF"):
        read_label_map(tmp_path / "junk.tif")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(MapRefused, match="cannot decode"):
        read_label_map(tmp_path / "junk.png")
