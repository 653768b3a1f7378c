"""Spatially coherent land-cover maps: blobs per biome, blocky settlements, crop parcels and rivers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from earthvl.builders.chatearthnet.landcover import CLASS_BY_KEY


@dataclass(frozen=True)
class Biome:
    name: str
    lon_range: tuple[float, float]
    lat_range: tuple[float, float]
    class_weights: dict[str, float]
    river_probability: float


BIOMES: tuple[Biome, ...] = (
    Biome("temperate", (-5.0, 25.0), (44.0, 56.0),
          {"tree": 3, "grass": 2, "crop": 3, "developed": 1.5, "water": 1, "shrub": 0.5}, 0.4),
    Biome("arid", (-10.0, 30.0), (15.0, 30.0),
          {"bare": 4, "shrub": 3, "grass": 1, "developed": 1, "water": 0.3}, 0.15),
    Biome("arctic", (-50.0, -20.0), (62.0, 72.0),
          {"snow": 4, "bare": 2, "moss": 2, "water": 1.5, "shrub": 0.5}, 0.2),
    Biome("tropical coast", (95.0, 120.0), (-8.0, 10.0),
          {"tree": 4, "mangroves": 2, "wetland": 1.5, "water": 2, "developed": 1, "crop": 1}, 0.35),
    Biome("boreal", (20.0, 40.0), (58.0, 66.0),
          {"tree": 4, "wetland": 2, "water": 2, "moss": 1, "grass": 1}, 0.35),
    Biome("plains", (-102.0, -92.0), (36.0, 46.0),
          {"crop": 5, "grass": 2, "developed": 1, "water": 0.5, "tree": 0.5}, 0.3),
)


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise with features about `size / cells` pixels wide."""
    low = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC))
    return field / max(float(field.std()), 1e-6)


def blocky_field(rng: np.random.Generator, height: int, width: int, cells: int, block: int = 16) -> np.ndarray:
    """Like `smooth_field` but constant on `block`-pixel squares: the footprint of built-up areas."""
    coarse = smooth_field(rng, -(-height // block), -(-width // block), cells)
    return np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:height, :width]


def river_mask(rng: np.random.Generator, height: int, width: int, width_px: tuple[int, int] = (6, 18)) -> np.ndarray:
    """A meandering band crossing the whole image, horizontally or vertically."""
    vertical = bool(rng.integers(2))
    length, across = (height, width) if vertical else (width, height)
    t = np.arange(length, dtype=np.float32)
    centre = (
        rng.uniform(0.25, 0.75) * across
        + rng.uniform(-0.3, 0.3) * (t - length / 2)
        + rng.uniform(0.03, 0.12) * across * np.sin(2 * np.pi * t / rng.uniform(0.4, 1.2) / length + rng.uniform(0, 6.3))
    )
    half = rng.uniform(*width_px) / 2
    mask = np.abs(np.arange(across, dtype=np.float32)[:, None] - centre[None, :]) < half  # (across, length)
    return mask.T if vertical else mask


def land_cover_map(rng: np.random.Generator, biome: Biome, height: int, width: int) -> np.ndarray:
    """A (height, width) uint8 map of land-cover class indices typical of `biome`."""
    keys = list(biome.class_weights)
    weights = np.array([biome.class_weights[k] for k in keys], dtype=np.float64)
    count = int(rng.integers(2, min(5, len(keys)) + 1))
    chosen = [keys[i] for i in rng.choice(len(keys), size=count, replace=False, p=weights / weights.sum())]
    scores = []
    for key in chosen:
        cells = int(rng.integers(2, 7))
        field = blocky_field(rng, height, width, cells) if key == "developed" else smooth_field(rng, height, width, cells)
        scores.append(field + 0.5 * np.log(biome.class_weights[key]) + rng.normal(0.0, 0.6))
    labels = np.array([CLASS_BY_KEY[k].index for k in chosen], dtype=np.uint8)[np.argmax(np.stack(scores), axis=0)]
    _subdivide_fields(rng, labels)
    if rng.random() < biome.river_probability:
        labels[river_mask(rng, height, width)] = CLASS_BY_KEY["water"].index
    return labels


def _subdivide_fields(rng: np.random.Generator, labels: np.ndarray) -> None:
    """Turn some rectangular crop parcels into grass (fallow), giving cropland its field pattern."""
    crop, grass = CLASS_BY_KEY["crop"].index, CLASS_BY_KEY["grass"].index
    is_crop = labels == crop
    if not is_crop.any():
        return
    height, width = labels.shape
    ph, pw = int(rng.integers(24, 72)), int(rng.integers(24, 72))
    rows, cols = -(-height // ph), -(-width // pw)
    fallow = rng.random((rows, cols)) < 0.25
    parcel = np.repeat(np.repeat(fallow, ph, axis=0), pw, axis=1)[:height, :width]
    labels[is_crop & parcel] = grass
