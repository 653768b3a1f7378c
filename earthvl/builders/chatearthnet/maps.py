"""Land-cover maps as `earthvl generate chatearthnet` and `earthvl eval faithfulness` read them.

Two encodings are accepted, both turned into a 2-D array of class indices of `landcover.LAND_COVER_CLASSES`:
- ChatEarthNet colour PNGs (RGB, the 12-colour table);
- single-band maps of ESA WorldCover codes (10..100, 0 no data) as PNG (8-bit grey or palette) or GeoTIFF (read with
  `tifffile`, the `geotiff` extra).
A map that cannot be used (unknown colours or codes, wrong size, unreadable) raises `MapRefused` with the reason;
callers record it for that patch and go on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earthvl.builders.chatearthnet.landcover import LAND_COVER_CLASSES
from earthvl.images import DEFAULT_MAX_PIXELS, BadImage, open_image
from earthvl.paths import leads_out

MAP_SUFFIXES = (".png", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
_CODE_TO_INDEX = np.full(256, 255, dtype=np.uint8)
for _c in LAND_COVER_CLASSES:
    _CODE_TO_INDEX[_c.worldcover_code] = _c.index
_COLOUR_KEYS = {(r << 16) | (g << 8) | b: c.index for c in LAND_COVER_CLASSES for r, g, b in [c.color]}


class MapRefused(Exception):
    """A land-cover map that cannot be used for its patch; the message is the reason."""


def colours_to_classes(rgb: np.ndarray, where: str = "map") -> np.ndarray:
    """Class indices of an RGB colour map in ChatEarthNet's table; MapRefused naming unknown colours."""
    keys = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    labels = np.full(keys.shape, 255, dtype=np.uint8)
    for key, index in _COLOUR_KEYS.items():  # 12 comparisons: much faster than sorting the pixels
        labels[keys == key] = index
    unmatched = labels == 255
    if unmatched.any():
        unknown = [int(k) for k in np.unique(keys[unmatched])]
        shown = ", ".join(str(((k >> 16) & 255, (k >> 8) & 255, k & 255)) for k in unknown[:3])
        raise MapRefused(f"{where}: {len(unknown)} colour(s) not in ChatEarthNet's land-cover table, e.g. {shown}")
    return labels


def codes_to_classes(codes: np.ndarray, where: str = "map") -> np.ndarray:
    """Class indices of a map of ESA WorldCover codes; MapRefused naming unknown codes."""
    values = np.unique(codes)
    unknown = [int(v) for v in values if not (0 <= v <= 255) or _CODE_TO_INDEX[int(v)] == 255]
    if unknown:
        known = ", ".join(str(c.worldcover_code) for c in LAND_COVER_CLASSES)
        raise MapRefused(f"{where}: code(s) {unknown[:5]} are not ESA WorldCover codes ({known})")
    return _CODE_TO_INDEX[codes.astype(np.int64)]


def read_tiff(path: Path, max_values: int) -> np.ndarray:
    """The first image of a (Geo)TIFF, refused (MapRefused) before decoding when it holds more than `max_values`
    values (pixels times bands), or when it cannot be read."""
    try:
        import tifffile
    except ImportError as error:
        raise MapRefused(f"{path.name}: reading GeoTIFFs needs tifffile (pip install 'earthvl[geotiff]')") from error
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise MapRefused(f"{path.name}: cannot read the GeoTIFF: it holds no image")
            series = tif.series[0]
            if int(np.prod(series.shape)) > max_values:
                raise MapRefused(f"{path.name}: {series.shape} values, over the limit of {max_values:,}")
            return series.asarray()
    except MapRefused:
        raise
    except Exception as error:  # noqa: BLE001 - on corrupt files tifffile raises zlib.error, ZeroDivisionError, ...
        raise MapRefused(f"{path.name}: cannot read the GeoTIFF: {type(error).__name__}: {error}") from error


def read_label_map(path: str | Path, size: tuple[int, int] | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The class-index map stored at `path` (colour PNG, WorldCover-code PNG or GeoTIFF); `size` (height, width), when
    given, must match. MapRefused with the reason otherwise."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        array = read_tiff(path, max_pixels)
    else:
        try:
            array = np.asarray(open_image(str(path), max_pixels=max_pixels, mode=None))
        except BadImage as error:
            raise MapRefused(str(error)) from error
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        labels = colours_to_classes(array[..., :3], path.name)
    elif array.ndim == 2:
        if not np.issubdtype(array.dtype, np.integer):
            raise MapRefused(f"{path.name}: a code map must hold integers, got {array.dtype}")
        labels = codes_to_classes(array, path.name)
    else:
        raise MapRefused(f"{path.name}: neither a colour map (RGB) nor a single-band code map (shape {array.shape})")
    if size is not None and labels.shape != tuple(size):
        raise MapRefused(
            f"{path.name}: map is {labels.shape[1]}x{labels.shape[0]} px, its image {size[1]}x{size[0]} px"
        )
    return labels


def find_map(folder: Path, stem: str) -> Path | None:
    """The land-cover map for a patch named `stem` in `folder` (any of MAP_SUFFIXES), or None; MapRefused for a
    symbolic link that leads out of `folder`."""
    for suffix in MAP_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            if leads_out(candidate, folder):
                raise MapRefused(f"{candidate.name} is a symbolic link out of {folder}: not read")
            return candidate
    return None
