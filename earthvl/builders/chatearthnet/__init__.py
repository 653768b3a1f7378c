"""ChatEarthNet: 9-band Sentinel-2 patches with captions generated from WorldCover land cover."""

from earthvl.builders.chatearthnet.generation import caption_statistics
from earthvl.builders.chatearthnet.landcover import CLASS_NAMES, LAND_COVER_CLASSES
from earthvl.builders.chatearthnet.layout import BANDS, BAND_GROUPS

__all__ = ["BANDS", "BAND_GROUPS", "CLASS_NAMES", "LAND_COVER_CLASSES", "caption_statistics"]
