"""Class-typical Sentinel-2 spectra (8-bit, as in ChatEarthNet's PNGs) and rendering of a label map into bands.

Some classes share nearly the same colour but differ in red-edge, NIR or SWIR (tree/mangroves, shrub/moss,
grass/crop), so the six extra bands carry information that the true-colour bands do not.
"""

from __future__ import annotations

import numpy as np

from earthvl.builders.chatearthnet.landcover import CLASS_BY_KEY, LAND_COVER_CLASSES
from earthvl.builders.chatearthnet.layout import BANDS
from earthvl.sample.terrain import blocky_field, smooth_field

SPECTRA: dict[str, tuple[int, ...]] = {
    # key:        B4   B3   B2   B5   B6   B7   B8  B11  B12
    "background": (0, 0, 0, 0, 0, 0, 0, 0, 0),
    "water": (28, 42, 62, 24, 20, 18, 12, 8, 6),
    "developed": (122, 116, 112, 126, 130, 132, 136, 152, 140),
    "tree": (34, 62, 40, 78, 138, 158, 168, 92, 48),
    "shrub": (96, 88, 66, 104, 120, 126, 132, 148, 118),
    "grass": (72, 104, 58, 104, 150, 166, 176, 122, 80),
    "crop": (74, 106, 60, 126, 186, 206, 218, 104, 62),
    "bare": (172, 152, 130, 176, 182, 186, 190, 222, 204),
    "snow": (238, 244, 250, 232, 224, 218, 212, 38, 28),
    "wetland": (50, 72, 62, 68, 88, 98, 104, 58, 38),
    "mangroves": (36, 62, 42, 70, 112, 126, 136, 44, 24),
    "moss": (98, 90, 68, 112, 160, 178, 186, 96, 64),
}
assert set(SPECTRA) == {c.key for c in LAND_COVER_CLASSES}
SPECTRA_TABLE = np.array([SPECTRA[c.key] for c in LAND_COVER_CLASSES], dtype=np.float32)
"""(classes, bands) in `BANDS` order, indexed by class index."""
assert SPECTRA_TABLE.shape[1] == len(BANDS)

PIXEL_NOISE = 3.0
BRIGHTNESS_VARIATION = 0.08


def render_bands(
    rng: np.random.Generator, labels: np.ndarray, noise: float = PIXEL_NOISE, bands: int = len(BANDS)
) -> np.ndarray:
    """Render a label map into (H, W, bands) uint8, the first `bands` of `BANDS`, with texture and sensor noise."""
    height, width = labels.shape
    gain = 1.0 + BRIGHTNESS_VARIATION * smooth_field(rng, height, width, int(rng.integers(4, 9)))
    crop = labels == CLASS_BY_KEY["crop"].index
    if crop.any():
        rows = np.arange(height, dtype=np.float32)[:, None]
        gain = gain + crop * (0.06 * np.sin(rows * 2 * np.pi / rng.uniform(4, 9)))
    built = labels == CLASS_BY_KEY["developed"].index
    if built.any():
        gain = gain + built * (0.12 * blocky_field(rng, height, width, 24, block=4))
    image = SPECTRA_TABLE[:, :bands][labels] * gain[..., None]
    image += noise * rng.standard_normal(size=image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
