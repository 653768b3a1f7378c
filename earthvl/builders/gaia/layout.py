"""GAIA's upstream distribution (Hub `azavras/GAIA`, code Orion-AI-Lab/GAIA): metadata JSON + img2dataset shards.

Facts come from `shared/reference/upstream-data.md`.
"""

from __future__ import annotations

import math

HUB_ID = "azavras/GAIA"
LICENSE = "mit"
"""License of the metadata and code; image rights stay with the sources named in `credits`."""

FIELDS = (
    "id",
    "image_src",
    "image_alt",
    "captions",
    "credits",
    "location",
    "lat",
    "lon",
    "tag",
    "resolution",
    "satellite",
    "sensor",
    "modalities",
)
"""Record fields, under their upstream names."""
LIST_FIELDS = ("captions", "tag", "satellite", "sensor", "modalities")
RESOLUTIONS = ("Low", "Moderate", "High", "Very High")
CAPTION_PREFIX = "The image showcases:"
"""The generating prompt forced every synthetic caption to begin with this."""
CAPTIONS_PER_IMAGE = 5

SPLITS: dict[str, str] = {"train": "train", "validation": "val", "test": "test"}
"""`datasets` split name -> upstream file/folder prefix."""
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.7, "validation": 0.1, "test": 0.2}
UPSTREAM_SPLIT_SIZES: dict[str, int] = {"train": 28_900, "validation": 3_930, "test": 8_170}
"""Approximate row counts of the Hub's auto-converted Parquet branch."""

# img2dataset output written by the official recipe
SAMPLES_PER_SHARD = 512
SHARD_DIGITS = 5
IMAGE_SHORT_SIDE = 512
SHARD_JSON_FIELDS = (
    "url",
    "caption",
    "id",
    "captions",
    "key",
    "status",
    "error_message",
    "width",
    "height",
    "original_width",
    "original_height",
    "exif",
    "sha256",
)


def json_path(split: str) -> str:
    """Relative path of the metadata JSON of a `datasets` split."""
    return f"{SPLITS[split]}_data.json"


def shard_dir(split: str) -> str:
    """Folder of a split's WebDataset shards, beside the JSON."""
    return SPLITS[split]


def shard_name(shard_id: int) -> str:
    """File name of a WebDataset shard, e.g. `00000.tar`."""
    return f"{shard_id:0{SHARD_DIGITS}d}.tar"


def sample_key(shard_id: int, index: int, samples_per_shard: int = SAMPLES_PER_SHARD) -> str:
    """img2dataset's sample key: shard id and in-shard index, zero-padded (`compute_key` upstream)."""
    index_digits = math.ceil(math.log10(samples_per_shard))
    return f"{shard_id * 10**index_digits + index:0{SHARD_DIGITS + index_digits}d}"
