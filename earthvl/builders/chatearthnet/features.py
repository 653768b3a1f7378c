"""The configs of a ChatEarthNet build, their `datasets.Features`, and the reader that stacks a row's bands."""

from __future__ import annotations

import io
from typing import Any, Mapping, NamedTuple

import numpy as np
from datasets import Features, Image, Value
from PIL import Image as PILImage

from earthvl.builders.chatearthnet import layout
from earthvl.errors import EarthvlError


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


def _as_array(value: Any, column: str) -> np.ndarray:
    if isinstance(value, dict):
        value = PILImage.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"])
    if not isinstance(value, PILImage.Image):
        kind = type(value).__name__
        raise EarthvlError(f"column '{column}' should hold an image or a {{'bytes': ...}} dict, got {kind}")
    return np.asarray(value.convert("RGB"))


def stack_bands(row: Mapping[str, Any]) -> np.ndarray:
    """The nine bands of a multispectral row as a (9, H, W) uint8 array in `layout.BANDS` order."""
    planes = []
    for group, column in BAND_COLUMNS.items():
        if column not in row:
            raise EarthvlError(
                f"stack_bands needs column '{column}' ({', '.join(layout.BAND_GROUPS[group])}), which this row lacks "
                f"(columns: {', '.join(row)}): load a '-multispectral' config"
            )
        planes.append(_as_array(row[column], column))
    return np.ascontiguousarray(np.concatenate(planes, axis=-1).transpose(2, 0, 1))
