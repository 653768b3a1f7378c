"""ChatEarthNet's upstream distribution (Zenodo record 11003436): file layout, band order, splits, tile geometry.

Facts come from `shared/reference/upstream-data.md`; the ones marked there as inferred are noted here too.
"""

from __future__ import annotations

import math
import re

ZENODO_RECORD = "11003436"
LICENSE = "cc-by-4.0"
CODE_LICENSE = "apache-2.0"
CITATION_TITLE = "ChatEarthNet: a global-scale image-text dataset empowering vision-language geo-foundation models"

BANDS = ("B4", "B3", "B2", "B5", "B6", "B7", "B8", "B11", "B12")
"""The nine Sentinel-2 bands in the order of the three upstream 3-channel PNG groups."""

BAND_GROUPS: dict[str, tuple[str, ...]] = {
    "rgb": ("B4", "B3", "B2"),
    "red_edge": ("B5", "B6", "B7"),
    "nir_swir": ("B8", "B11", "B12"),
}
IMAGE_DIRS: dict[str, str] = {
    "rgb": "s2_rgb_images/s2_images",
    "red_edge": "s2_band_5_6_7_images",
    "nir_swir": "s2_band_8_11_12_images",
}
"""Folder of each band group inside the extracted tree (and inside its zip)."""

ZIP_NAMES: dict[str, str] = {
    "json": "json_files.zip",
    "rgb": "s2_rgb_images.zip",
    "red_edge": "s2_band_5_6_7_images.zip",  # name inferred, not confirmed on Zenodo
    "nir_swir": "s2_band_8_11_12_images.zip",  # name inferred, not confirmed on Zenodo
}
ZIP_MD5: dict[str, str] = {
    "json_files.zip": "ac365a328d645641ca28315bee9e1d25",
    "s2_rgb_images.zip": "5425015e2537271044341403e8d90965",
}

JSON_DIR = "json_files"
CAPTION_SOURCES: dict[str, str] = {"gpt35": "35", "gpt4v": "4v"}
"""Caption generator name -> the infix of its JSON files."""
SPLITS: dict[str, str] = {"train": "train", "validation": "val", "test": "test"}
"""`datasets` split name -> upstream file suffix."""
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.6, "validation": 0.1, "test": 0.3}
UPSTREAM_SPLIT_SIZES: dict[str, dict[str, int]] = {
    "gpt35": {"train": 98_092, "validation": 16_348, "test": 49_048},
    "gpt4v": {"train": 6_000, "validation": 1_000, "test": 3_000},
}

PATCH_SIZE = 256
TILE_SIZE = 512
ZOOM = 13
TILES_PER_AXIS = 2**ZOOM
PATCHES = ("00", "01", "10", "11")
"""Quarters of a 512 px tile as `<row><col>` (0 = top/left) [inferred from the names]."""


def json_path(source: str, split: str) -> str:
    """Relative path of the caption JSON for a caption source (`gpt35`/`gpt4v`) and a `datasets` split."""
    return f"{JSON_DIR}/ChatEarthNet_caps_{CAPTION_SOURCES[source]}_{SPLITS[split]}.json"


PATCH_FILE_NAME = re.compile(r"^(\d{1,12})_(\d{1,12})_patch([01]{2})\.png$", re.ASCII)


def patch_file_name(tile_x: int, tile_y: int, patch: str) -> str:
    """Upstream file name of one 256 px patch, e.g. `4216_2795_patch01.png`."""
    return f"{tile_x}_{tile_y}_patch{patch}.png"


def parse_patch_file_name(file_name: str) -> tuple[int, int, str] | None:
    """(tile_x, tile_y, patch) of an upstream patch file name, or None if it is not one."""
    match = PATCH_FILE_NAME.match(file_name)
    return None if match is None else (int(match[1]), int(match[2]), match[3])


def image_path(group: str, file_name: str) -> str:
    """Relative path of a patch's PNG for a band group (`rgb`, `red_edge`, `nir_swir`)."""
    return f"{IMAGE_DIRS[group]}/{file_name}"


def patch_center(tile_x: int, tile_y: int, patch: str) -> tuple[float, float]:
    """(lat, lon) in degrees of a patch centre, from its Web-Mercator zoom-13 tile and quarter; a ValueError for a
    tile outside the grid."""
    n = TILES_PER_AXIS
    if not (0 <= tile_x < n and 0 <= tile_y < n):
        raise ValueError(f"tile {tile_x}_{tile_y} is outside the zoom-13 grid (0 to {n - 1})")
    fx = tile_x + 0.25 + 0.5 * int(patch[1])
    fy = tile_y + 0.25 + 0.5 * int(patch[0])
    lon = fx / n * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * fy / n))))
    return lat, lon


def tile_for(lat: float, lon: float) -> tuple[int, int]:
    """Zoom-13 Web-Mercator tile (x, y) containing a point."""
    n = TILES_PER_AXIS
    x = int((lon + 180.0) / 360.0 * n)
    lat_r = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)
