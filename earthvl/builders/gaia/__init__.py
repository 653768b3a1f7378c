"""GAIA: web-scraped Earth-observation images with five GPT-4o captions each and rich metadata."""

from earthvl.builders.gaia.layout import CAPTION_PREFIX, FIELDS

__all__ = ["CAPTION_PREFIX", "FIELDS"]
