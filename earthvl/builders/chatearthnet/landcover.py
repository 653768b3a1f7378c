"""The land-cover class table behind ChatEarthNet captions and the statistics its caption prompts were built from.

Classes follow SatlasPretrain's `land_cover` order (as used by the ChatEarthNet generation code), each with the
name used in the prompts, its mask colour and its ESA WorldCover code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LandCoverClass:
    index: int
    key: str
    name: str
    """Wording used in the captions."""
    color: tuple[int, int, int]
    worldcover_code: int


LAND_COVER_CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass(0, "background", "background", (0, 0, 0), 0),
    LandCoverClass(1, "water", "water", (0, 0, 255), 80),
    LandCoverClass(2, "developed", "developed area", (255, 0, 0), 50),
    LandCoverClass(3, "tree", "tree", (0, 192, 0), 10),
    LandCoverClass(4, "shrub", "shrub", (200, 170, 120), 20),
    LandCoverClass(5, "grass", "grass", (0, 255, 0), 30),
    LandCoverClass(6, "crop", "crop", (255, 255, 0), 40),
    LandCoverClass(7, "bare", "bare land", (128, 128, 128), 60),
    LandCoverClass(8, "snow", "snow", (255, 255, 255), 70),
    LandCoverClass(9, "wetland", "wetland", (0, 255, 255), 90),
    LandCoverClass(10, "mangroves", "mangroves", (255, 0, 255), 95),
    LandCoverClass(11, "moss", "moss", (128, 0, 128), 100),
)
BACKGROUND = 0
CLASS_BY_KEY = {c.key: c for c in LAND_COVER_CLASSES}
CLASS_NAMES = tuple(c.name for c in LAND_COVER_CLASSES[1:])
"""Caption wording of the 11 WorldCover classes (background excluded), in table order."""

MIN_PIXELS = 20
"""A class counts in a region only with at least this many pixels."""
REGIONS = ("top left", "top right", "bottom left", "bottom right", "middle")
SIZE_WORDS = ((0.10, "extra small"), (0.20, "small"), (0.50, "medium"), (0.80, "large"), (1.01, "extra large"))
"""Upper bound (exclusive) of a share -> its size word."""
SIZE_NOUNS = ("fraction", "part", "portion", "amount", "quantity")
BANNED_WORDS = ("possibly", "likely", "perhaps", "context", "segmentation", "appear", "change", "transition", "dynamic")
"""Words the caption generation rules forbade."""


def size_word(share: float) -> str:
    """Size word of a class share (0..1) as in the ChatEarthNet prompts."""
    for bound, word in SIZE_WORDS:
        if share < bound:
            return word
    raise ValueError(f"share must be within [0, 1], got {share}")


def region_slices(height: int, width: int) -> dict[str, tuple[slice, slice]]:
    """The five caption regions: the four quarters and the central half (rows/cols H/4..3H/4)."""
    h2, w2, h4, w4 = height // 2, width // 2, height // 4, width // 4
    return {
        "top left": (slice(0, h2), slice(0, w2)),
        "top right": (slice(0, h2), slice(w2, width)),
        "bottom left": (slice(h2, height), slice(0, w2)),
        "bottom right": (slice(h2, height), slice(w2, width)),
        "middle": (slice(h4, height - h4), slice(w4, width - w4)),
    }


def class_shares(label_map: np.ndarray, top: int | None = None) -> list[tuple[int, float]]:
    """Classes with >= MIN_PIXELS pixels, most frequent first, as (index, share of non-background pixels)."""
    counts = np.bincount(label_map.ravel(), minlength=len(LAND_COVER_CLASSES))
    counts[BACKGROUND] = 0
    total = counts.sum()
    if total == 0:
        return []
    order = sorted((i for i in range(len(counts)) if counts[i] >= MIN_PIXELS), key=lambda i: (-counts[i], i))
    return [(i, counts[i] / total) for i in order[:top]]


@dataclass(frozen=True)
class CaptionStatistics:
    """What the caption generator was shown about one 256 px label map."""

    overall: list[tuple[int, float]]
    regions: dict[str, list[tuple[int, float]]]

    @property
    def dominant(self) -> int | None:
        return self.overall[0][0] if self.overall else None


def caption_statistics(label_map: np.ndarray) -> CaptionStatistics:
    """Overall distribution and the top-3 classes of each of the five regions of a label map."""
    if label_map.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label_map.shape}")
    regions = {
        name: class_shares(label_map[rows, cols], top=3)
        for name, (rows, cols) in region_slices(*label_map.shape).items()
    }
    return CaptionStatistics(overall=class_shares(label_map), regions=regions)
