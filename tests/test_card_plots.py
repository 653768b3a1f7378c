"""Dataset-card figures: valid PNGs of the expected size, written atomically, with their summaries embedded."""

import math

import numpy as np
import pytest
from PIL import Image

from earthvl.cards.plots import caption_length_histogram, location_map, sample_grid
from earthvl.errors import EarthvlError


def opened(path):
    image = Image.open(path)
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    return image


def no_temporary_files(folder):
    return sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in folder.glob("*.png"))


def test_sample_grid_size_follows_columns_and_tile(tmp_path):
    images = [Image.new("RGB", (200, 100), (255, 0, 0))] * 6
    path = sample_grid(images, None, tmp_path / "new" / "grid.png", columns=4, tile=64)
    assert path == tmp_path / "new" / "grid.png"
    grid = opened(path)
    assert grid.size == (4 * 64, 2 * 64)
    pixels = np.asarray(grid)
    # the 2:1 image is letterboxed: white bands above and below, red in the middle
    assert tuple(pixels[32, 32]) == (255, 0, 0)
    assert tuple(pixels[4, 32]) == (255, 255, 255)
    assert tuple(pixels[60, 32]) == (255, 255, 255)
    assert no_temporary_files(path.parent)

    narrow = opened(sample_grid(images[:3], None, tmp_path / "narrow.png", columns=4, tile=64))
    assert narrow.size == (3 * 64, 64)


def test_sample_grid_with_captions_adds_a_caption_band_per_row(tmp_path):
    images = [Image.new("L", (50, 80), 128), Image.new("RGBA", (80, 80), (0, 0, 255, 0)), Image.new("I;16", (30, 30))]
    captions = ["The image showcases: " + "a very long caption about a flooded river valley " * 5, "short", ""]
    grid = opened(sample_grid(images, captions, tmp_path / "grid.png", columns=2, tile=160, caption_chars=80))
    width, height = grid.size
    assert width == 2 * 160
    assert height % 2 == 0 and height // 2 > 160 + 20  # two rows, each with at least two caption lines
    assert height // 2 < 160 + 120  # the long caption was shortened to 80 characters
    assert tuple(np.asarray(grid)[80, 240]) == (255, 255, 255)  # transparent image drawn over white


def test_sample_grid_rejects_bad_input(tmp_path):
    with pytest.raises(EarthvlError, match="no images"):
        sample_grid([], None, tmp_path / "grid.png")
    with pytest.raises(EarthvlError, match="2 captions for 1 images"):
        sample_grid([Image.new("RGB", (8, 8))], ["a", "b"], tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_location_map_counts_missing_coordinates(tmp_path):
    lats = [48.86, -33.87, None, 35.68, math.nan]
    lons = [2.35, 151.21, 10.0, 139.69, 20.0]
    groups = ["train", "test", "train", "test", "test"]
    path = location_map(lats, lons, tmp_path / "maps" / "map.png", title="GAIA", groups=groups)
    image = opened(path)
    assert image.width >= 600 and image.height >= 300
    assert image.text["Title"] == "GAIA"
    assert image.text["Description"] == "3 located, 2 without coordinates"
    assert path.stat().st_size < 500_000
    assert no_temporary_files(path.parent)


def test_location_map_rejects_bad_input(tmp_path):
    with pytest.raises(EarthvlError, match="no coordinates"):
        location_map([], [], tmp_path / "map.png")
    with pytest.raises(EarthvlError, match="out of range"):
        location_map([10.0, 95.0], [0.0, 0.0], tmp_path / "map.png")
    with pytest.raises(EarthvlError, match="1 longitudes"):
        location_map([10.0, 20.0], [0.0], tmp_path / "map.png")


def test_caption_length_histogram(tmp_path):
    lengths = {"synthetic captions": [30, 36, 42, 38], "alt text": [1, 2, 3, 4]}
    image = opened(caption_length_histogram(lengths, tmp_path / "hist.png"))
    assert image.width >= 400 and image.height >= 200
    assert image.text["Description"] == "synthetic captions: mean 36.50, alt text: mean 2.50"
    with pytest.raises(EarthvlError, match="no text sources"):
        caption_length_histogram({}, tmp_path / "empty.png")
    with pytest.raises(EarthvlError, match="'alt text'"):
        caption_length_histogram({"synthetic captions": [3], "alt text": []}, tmp_path / "empty.png")
