"""The land-cover class table behind ChatEarthNet captions (the statistics built on it: `generation.py`).

Classes follow SatlasPretrain's `land_cover` order (as used by the ChatEarthNet generation code), each with the
name used in the prompts, its mask colour and its ESA WorldCover code.
"""

from __future__ import annotations

from dataclasses import dataclass


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
