"""ChatEarthNet's caption generation method: the statistics of a land-cover map and the prompts built from them.

This module is the one home of the facts read in zhu-xlab/ChatEarthNet's two generator scripts
(`generate_description_chatgpt3_5_text.py`, `generate_description_chatgpt4v.py`; see
shared/reference/upstream-data.md). The prompts' fixed texts are data files (`prompts/*.json`) with their
provenance and a version.

gpt-3.5 (one request per patch, text only): the overall distribution (class names with >= 20 pixels, most to least,
background left out), then for each of the five regions (four quarters and the central half) its top three classes
with >= 20 pixels and a size word from the share of the region's non-background pixels, bucketed on
`int(round(share, 2) * 100)`, followed by a random size noun.
gpt-4v (one request per 512 px tile: its four patches' colour maps, downsampled x2 by pixel skipping, as images):
per class its share of each region (background included in the denominator), per region its classes by share; the
class words `developed` and `bare`; eight rules, among them shape words for water, developed and crop areas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from earthvl.builders.chatearthnet.landcover import BACKGROUND, LAND_COVER_CLASSES

MIN_PIXELS = 20
"""A class counts (overall and in a region) only with at least this many pixels (gpt-3.5 generator)."""
REGIONS = ("top left", "top right", "bottom left", "bottom right", "middle")
SIZE_BUCKETS = ((9, "extra small"), (19, "small"), (49, "medium"), (79, "large"), (100, "extra large"))
"""Highest percentage (inclusive, as `size_percent` computes it) -> size word."""
SIZE_NOUNS = ("fraction", "part", "portion", "amount", "quantity")
BANNED_WORDS = ("possibly", "likely", "perhaps", "context", "segmentation", "appear", "change", "transition", "dynamic")
"""Words the gpt-3.5 generation rules forbade."""
SHAPE_CLASSES = ("water", "developed", "crop")
"""Classes the gpt-4v rules ask to describe with shape words."""
GPT4V_CLASS_WORDS = {"developed": "developed", "bare": "bare"}
"""Where the gpt-4v prompt's class words differ from the gpt-3.5 ones (`developed area`, `bare land`)."""
IMAGES_PER_REQUEST = 4
"""gpt-4v: the four patches of a tile, in `layout.PATCHES` order, go in one request; the answer has four paragraphs."""
GPT4V_DOWNSAMPLE = 2
"""gpt-4v: colour maps are sent downsampled by keeping every second pixel of every second row."""
PROMPT_FILES = {"gpt35": "gpt35.json", "gpt4v": "gpt4v.json"}


def size_percent(share: float) -> int:
    """The whole percentage the upstream generator buckets a share (0..1) by: `int(round(share, 2) * 100)`."""
    return int(round(share, 2) * 100)


def size_word(share: float, *, rounded: bool = True) -> str:
    """The size word of a share (0..1) of a region's non-background pixels.

    `rounded` (the upstream prompts) buckets `size_percent(share)`, so 9.5% is "small"; `rounded=False` buckets the
    exact percentage (9.5% is "extra small"), as the template renderer always has: its captions, the sample world's,
    stay as they were. Both readings agree except within half a percent below a bucket's edge."""
    percent = size_percent(share) if rounded else share * 100
    if not 0 <= percent <= 100:
        raise ValueError(f"share must be within [0, 1], got {share}")
    return next(word for highest, word in SIZE_BUCKETS if percent < highest + 1)


def size_words(share: float) -> set[str]:
    """The size words a faithful caption may use for a share: the upstream (rounded) and the exact reading."""
    return {size_word(share), size_word(share, rounded=False)}


def region_slices(height: int, width: int) -> dict[str, tuple[slice, slice]]:
    """The five caption regions: the four quarters and the central half (rows/cols H/4..3H/4)."""
    h2, w2, h4, w4 = height // 2, width // 2, height // 4, width // 4
    return {
        "top left": (slice(0, h2), slice(0, w2)),
        "top right": (slice(0, h2), slice(w2, width)),
        "bottom left": (slice(h2, height), slice(0, w2)),
        "bottom right": (slice(h2, height), slice(w2, width)),
        "middle": (slice(h4, 3 * height // 4), slice(w4, 3 * width // 4)),
    }


def _counts(label_map: np.ndarray) -> np.ndarray:
    counts = np.bincount(label_map.ravel(), minlength=len(LAND_COVER_CLASSES))
    counts[BACKGROUND] = 0
    return counts


def class_shares(label_map: np.ndarray, top: int | None = None) -> list[tuple[int, float]]:
    """Classes with >= MIN_PIXELS pixels, most frequent first, as (index, share of non-background pixels).

    Ties go as upstream's region ranking puts them (a stable ascending sort reversed: the higher index first)."""
    counts = _counts(label_map)
    total = counts.sum()
    if total == 0:
        return []
    order = sorted((i for i in range(len(counts)) if counts[i] >= MIN_PIXELS), key=lambda i: (-counts[i], -i))
    return [(i, counts[i] / total) for i in order[:top]]


def overall_classes(label_map: np.ndarray) -> list[int]:
    """The overall distribution's classes: >= MIN_PIXELS pixels, most frequent first, ties in order of first
    appearance in the map (upstream sorts a Counter of the raster stably)."""
    counts = _counts(label_map)
    flat = label_map.ravel()
    present = [i for i in range(len(counts)) if counts[i] >= MIN_PIXELS]
    first = {i: int(np.argmax(flat == i)) for i in present}
    return sorted(present, key=lambda i: (-counts[i], first[i]))


@dataclass(frozen=True)
class CaptionStatistics:
    """What the gpt-3.5 generator was shown about one label map (with the overall shares, for the renderers)."""

    overall: list[tuple[int, float]]
    regions: dict[str, list[tuple[int, float]]]

    @property
    def dominant(self) -> int | None:
        return self.overall[0][0] if self.overall else None


def caption_statistics(label_map: np.ndarray) -> CaptionStatistics:
    """Overall distribution and the top-3 classes of each of the five regions of a label map."""
    if label_map.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label_map.shape}")
    shares = dict(class_shares(label_map))
    regions = {
        name: class_shares(label_map[rows, cols], top=3)
        for name, (rows, cols) in region_slices(*label_map.shape).items()
    }
    return CaptionStatistics(overall=[(i, shares[i]) for i in overall_classes(label_map)], regions=regions)


@cache
def prompt_data(style: str) -> dict[str, Any]:
    """The fixed texts, model and max_tokens of a generator's prompt (`gpt35` or `gpt4v`), with provenance."""
    text = resources.files("earthvl.builders.chatearthnet").joinpath("prompts", PROMPT_FILES[style]).read_text("utf-8")
    return json.loads(text)


def prompt_version(style: str) -> str:
    """`<style>-v<n>`: part of every cache key, bumped whenever a prompt text or its statistics change."""
    return f"{style}-v{prompt_data(style)['version']}"


def _class_word(index: int, style: str) -> str:
    key = LAND_COVER_CLASSES[index].key
    return GPT4V_CLASS_WORDS.get(key, key) if style == "gpt4v" else LAND_COVER_CLASSES[index].name


def gpt35_user_prompt(stats: CaptionStatistics, rng: np.random.Generator) -> str:
    """The gpt-3.5 user prompt of one patch; `rng` draws the size nouns (upstream: `random.choice`)."""
    data = prompt_data("gpt35")
    lines = "".join(f"{_class_word(i, 'gpt35')}; " for i, _ in stats.overall) + "\n"
    for region in REGIONS:
        items = [
            f"{_class_word(i, 'gpt35')} ({size_word(s)} {SIZE_NOUNS[int(rng.integers(len(SIZE_NOUNS)))]})"
            for i, s in stats.regions[region]
        ]
        lines += data["region_intro"].format(region=region)
        if len(items) == 3:
            lines += f"{items[0]}, {items[1]}, and {items[2]}.\n"
        elif items:
            lines += " and ".join(items) + ".\n"
        # A region without any class keeps its bare intro and no line break, as upstream writes it.
    return data["user_intro"] + lines + "\n"


def gpt35_messages(stats: CaptionStatistics, rng: np.random.Generator) -> list[dict[str, str]]:
    """The gpt-3.5 chat of one patch: the upstream system prompt and the statistics as the user turn."""
    return [
        {"role": "system", "content": prompt_data("gpt35")["system"]},
        {"role": "user", "content": gpt35_user_prompt(stats, rng)},
    ]


def _region_pixels(label_map: np.ndarray) -> dict[str, np.ndarray]:
    return {name: label_map[rows, cols] for name, (rows, cols) in region_slices(*label_map.shape).items()}


def gpt4v_class_distribution(label_map: np.ndarray) -> str:
    """Per class (first appearance order, background left out), its share of each region in percent."""
    regions = _region_pixels(label_map)
    flat = label_map.ravel()
    present = [int(i) for i in np.unique(flat) if i != BACKGROUND]
    out = ""
    for index in sorted(present, key=lambda i: int(np.argmax(flat == i))):
        out += f"{_class_word(index, 'gpt4v')}: "
        for name, pixels in regions.items():
            out += f" {name} part: {np.count_nonzero(pixels == index) / pixels.size:.2%} "
        out += "\n"
    return out


def gpt4v_spatial_distribution(label_map: np.ndarray) -> str:
    """Per region, its classes by share of all its pixels (background counted, not listed)."""
    out = ""
    for name, pixels in _region_pixels(label_map).items():
        values, counts = np.unique(pixels, return_counts=True)
        shares = counts / counts.sum()
        out += f"{name.replace(' ', '_')} distribution:"
        for k in np.argsort(-shares, kind="stable"):
            if values[k] != BACKGROUND:
                out += f" {_class_word(int(values[k]), 'gpt4v')}: {shares[k]:.2f};"
        out += "\n"
    return out


def gpt4v_prompt(label_maps: list[np.ndarray]) -> str:
    """The gpt-4v text prompt for the four label maps of a tile (`layout.PATCHES` order)."""
    if len(label_maps) != IMAGES_PER_REQUEST:
        raise ValueError(f"a gpt-4v request holds {IMAGES_PER_REQUEST} maps, got {len(label_maps)}")
    data = prompt_data("gpt4v")
    text = data["intro"]
    for ordinal, label_map in zip(data["ordinals"], label_maps):
        text += data["distribution_intro"].format(ordinal=ordinal) + gpt4v_class_distribution(label_map)
        text += data["spatial_intro"].format(ordinal=ordinal) + gpt4v_spatial_distribution(label_map)
    return text + data["rules"]


def colour_map(label_map: np.ndarray) -> np.ndarray:
    """The RGB colour map of a label map in ChatEarthNet's 12-colour table."""
    palette = np.array([c.color for c in LAND_COVER_CLASSES], dtype=np.uint8)
    return palette[label_map]


def gpt4v_image(label_map: np.ndarray) -> np.ndarray:
    """The colour map a gpt-4v request shows for one patch: every GPT4V_DOWNSAMPLE-th pixel of every such row."""
    return colour_map(label_map)[::GPT4V_DOWNSAMPLE, ::GPT4V_DOWNSAMPLE]


def split_paragraphs(answer: str) -> list[str]:
    """A gpt-4v answer's four descriptions (one per patch); a ValueError unless it has exactly four paragraphs."""
    paragraphs = [p.strip() for p in answer.replace("\r\n", "\n").split("\n\n") if p.strip()]
    if len(paragraphs) != IMAGES_PER_REQUEST:
        raise ValueError(f"expected {IMAGES_PER_REQUEST} paragraphs (one per patch), got {len(paragraphs)}")
    return paragraphs
