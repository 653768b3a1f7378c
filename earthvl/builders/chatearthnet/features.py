"""The configs of a ChatEarthNet build and their `datasets.Features`."""

from __future__ import annotations

from typing import Any, NamedTuple

from datasets import Features, Image, Value

from earthvl.builders.chatearthnet import layout



class Config(NamedTuple):
    """What one config of a ChatEarthNet build holds."""

    captions: str
    """The caption source (`layout.CAPTION_SOURCES`): which caption JSONs the rows come from."""
    multispectral: bool
    """Whether the rows carry the six extra band groups besides the RGB image."""


CONFIGS: dict[str, Config] = {
    "gpt35": Config("gpt35", multispectral=False),
    "gpt4v": Config("gpt4v", multispectral=False),
    "gpt35-multispectral": Config("gpt35", multispectral=True),
    "gpt4v-multispectral": Config("gpt4v", multispectral=True),
}
"""Config name -> what it holds."""
DEFAULT_CONFIG = "gpt35"
BAND_COLUMNS: dict[str, str] = {group: "image" if group == "rgb" else group for group in layout.BAND_GROUPS}
"""Band group -> its Image column; iterating it yields the groups in `layout.BANDS` order."""
EXTRA_GROUPS = tuple(group for group in layout.BAND_GROUPS if group != "rgb")


def features_for(multispectral: bool) -> Features:
    """The `datasets.Features` of an RGB-only or a multispectral config."""
    columns: dict[str, Any] = {
        "image": Image(),
        "caption": Value("string"),
        "file_name": Value("string"),
        "tile_x": Value("int32"),
        "tile_y": Value("int32"),
        "patch": Value("string"),
        "lat": Value("float32"),
        "lon": Value("float32"),
        "is_nodata": Value("bool"),
    }
    if multispectral:
        columns.update({BAND_COLUMNS[group]: Image() for group in EXTRA_GROUPS})
    return Features(columns)
