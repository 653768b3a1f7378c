"""Opening untrusted images: one pixel limit and one set of decode errors for builders, training and evaluation."""

from __future__ import annotations

import io
from dataclasses import field
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from earthvl.errors import EarthvlError

DEFAULT_MAX_PIXELS = 2**27
"""134 Mpx: above the largest GAIA originals (~10,000 px a side), far below what would exhaust memory."""
PIL_ERRORS = (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError)
"""What PIL raises on a corrupt, truncated or oversized image."""
HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
ON_BAD_IMAGE = ("stop", "skip")
"""What a pipeline does with an image that fails to decode or is over the pixel limit."""


def on_bad_image_option(default: str, skipped: str) -> Any:
    """The `on_bad_image` option of a command's dataclass, `skipped` saying where skipped rows are listed.

    The defaults differ on purpose: training stops (`"stop"`), since a bad image in the training data is a data bug
    to fix before spending GPU hours on it; evaluation skips (`"skip"`), since a benchmark's score is over the rows
    that decode and the results file counts and lists the others."""
    if default not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image default {default!r}: choose one of {', '.join(ON_BAD_IMAGE)}")
    return field(
        default=default,
        metadata={
            "help": f"An image that fails to decode (or is over max_pixels): 'stop' with the row named, or 'skip' it "
            f"({skipped}).",
            "choices": list(ON_BAD_IMAGE),
        },
    )


def max_pixels_option() -> Any:
    """The `max_pixels` option of a command's dataclass (the same default everywhere: `DEFAULT_MAX_PIXELS`)."""
    return field(default=DEFAULT_MAX_PIXELS, metadata={"help": "Refuse images with more pixels than this."})


class BadImage(EarthvlError):
    """An image that cannot be decoded, or is over the pixel limit."""


def open_image(
    cell: Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mode: str | None = "RGB",
    draft_size: tuple[int, int] | None = None,
) -> PILImage.Image:
    """A decoded `mode` image (None: the mode as stored) from a `datasets` image cell (`{"bytes", "path"}`), a
    path, bytes or a PIL image.

    The size is checked against `max_pixels` from the header, before any pixel is decoded. With `draft_size`
    (width, height), a JPEG read from bytes or a path is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, as
    small as that keeps both sides at least `draft_size` (`PIL.Image.draft`: much faster on large files); its size
    in the file is then kept in `image.info["original_size"]`. Other formats, and PIL images, ignore it."""
    path = cell.get("path") if isinstance(cell, dict) else cell if isinstance(cell, str) else None
    where = f" {path}" if path else ""
    try:
        if isinstance(cell, PILImage.Image):
            image = cell
        else:
            if isinstance(cell, dict):
                cell = cell.get("bytes") or cell.get("path")
            image = PILImage.open(io.BytesIO(cell) if isinstance(cell, (bytes, bytearray)) else cell)
        if image.width * image.height > max_pixels:
            raise BadImage(f"image{where} is {image.width}x{image.height} px, over the limit of {max_pixels:,} pixels")
        if draft_size is not None and not isinstance(cell, PILImage.Image):
            original_size = image.size
            if image.draft(mode, draft_size) is not None:
                image.info["original_size"] = original_size
        image.load()
        return image if mode is None or image.mode == mode else image.convert(mode)
    except PILImage.UnidentifiedImageError as error:
        raise BadImage(f"cannot decode the image{where}: not in an image format PIL reads") from error
    except PILImage.DecompressionBombError as error:
        # PIL itself refuses headers above twice its own limit while opening, before the size can be compared.
        raise BadImage(f"image{where} is over the limit of {max_pixels:,} pixels") from error
    except PIL_ERRORS as error:
        raise BadImage(f"cannot decode the image{where}: {error}") from error
    except TypeError as error:
        raise BadImage(f"not an image cell: {type(cell).__name__}") from error


def to_rgb(image: PILImage.Image, background: tuple[int, int, int] = (255, 255, 255)) -> PILImage.Image:
    """`image` as 8-bit RGB the right way up: 16/32-bit and float bands stretched min-max (not clipped to white),
    transparency composited onto `background` (white, as transformers' `convert_to_rgb`), EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = np.nanmin(values), np.nanmax(values)
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return PILImage.fromarray(np.nan_to_num(scaled).round().astype(np.uint8)).convert("RGB")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return PILImage.alpha_composite(PILImage.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
