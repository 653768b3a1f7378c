"""The `pixel_values` a CLIP or BLIP image processor would produce, computed faster.

`PixelTransform` runs the transformers PIL-backend pipeline (convert to RGB, resize, centre crop, rescale,
normalise) with the same PIL operations, but decodes through `earthvl.images.open_image` (pixel limit, `BadImage`),
can let the JPEG decoder downscale in the DCT domain first (`draft`), and does rescale + normalise as one lookup in
a per-channel table of the 256 possible results, so the output is bit-for-bit the processor's arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from transformers.image_processing_backends import PilBackend, TorchvisionBackend

from earthvl.images import DEFAULT_MAX_PIXELS, BadImage, open_image

# What a processor may override and still be reproduced: these are the stock backend's pipeline.
_PIPELINE_METHODS = (
    "preprocess",
    "_preprocess_image_like_inputs",
    "_prepare_image_like_inputs",
    "process_image",
    "convert_to_rgb",
    "_preprocess",
    "resize",
    "rescale_and_normalize",
    "center_crop",
    "rescale",
    "normalize",
)
_READ_SETTINGS = {
    "do_convert_rgb", "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
    "rescale_factor", "do_normalize", "image_mean", "image_std", "do_pad", "pad_size", "data_format",
}
# Settings that cannot change the pixel values of PIL inputs (`default_to_square` is already folded into `size`).
_INERT_SETTINGS = {
    "default_to_square", "input_data_format", "device", "return_tensors", "disable_grouping", "image_seq_length",
}
_RESAMPLE_FILTERS = {int(f) for f in PILImage.Resampling}


@dataclass
class PixelTransform:
    """Image cells (`{"bytes", "path"}`, bytes, paths or PIL images) to float32 `pixel_values`.

    `resize` is a shortest edge (int, aspect kept as transformers computes it) or (height, width), None for no
    resize; `crop` a centre crop (height, width), zero-padded where the image is smaller, as transformers does.
    `rescale_factor` None skips rescaling, `mean`/`std` None skip normalisation. `draft` decodes JPEGs at the
    smallest power-of-two scale that still covers the resize, which changes pixels slightly; without it the output
    equals the PIL-backend processor's to float rounding.
    """

    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None = None
    resample: int = PILImage.Resampling.BICUBIC
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    convert_rgb: bool = True
    draft: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.resize is None or _is_side(self.resize) or _is_pair(self.resize)):
            raise ValueError(f"resize takes a shortest edge or a (height, width) in pixels, got {self.resize!r}")
        if not (self.crop is None or _is_pair(self.crop)):
            raise ValueError(f"crop takes a (height, width) in pixels, got {self.crop!r}")
        if self.resample not in _RESAMPLE_FILTERS:
            raise ValueError(f"resample={self.resample!r} is not a PIL resampling filter")
        normalise = (self.mean, self.std)
        if normalise != (None, None) and (None in normalise or (len(self.mean), len(self.std)) != (3, 3)):
            raise ValueError(f"mean and std take three numbers each, or are both None; got {self.mean!r}, {self.std!r}")
        self._table = _value_table(self.rescale_factor, self.mean, self.std)

    @classmethod
    def from_processor(
        cls, image_processor: Any, *, draft: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> PixelTransform:
        """The transform for a transformers CLIP- or BLIP-style image processor (PIL or torchvision backend).

        Raises ValueError naming the setting or the overridden method when the processor does anything else.
        Exact equality holds for the PIL backend (`CLIPImageProcessorPil`, `BlipImageProcessorPil`); the
        torchvision backend's settings mean the same, but its tensor resize filters slightly differently.
        """
        settings = _supported_settings(image_processor)
        resample = settings["resample"]
        normalize = settings["do_normalize"]
        return cls(
            resize=_resize_setting(settings["size"]) if settings["do_resize"] else None,
            crop=_crop_setting(settings["crop_size"]) if settings["do_center_crop"] else None,
            resample=PILImage.Resampling.BILINEAR if resample is None else int(resample),  # the backend's fallback
            rescale_factor=settings["rescale_factor"] if settings["do_rescale"] else None,
            mean=_per_channel("image_mean", settings["image_mean"]) if normalize else None,
            std=_per_channel("image_std", settings["image_std"]) if normalize else None,
            convert_rgb=bool(settings["do_convert_rgb"]),
            draft=draft,
            max_pixels=max_pixels,
        )

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """The (width, height) a JPEG may be decoded down to: both sides stay at least the resize's."""
        if not self.draft or self.resize is None:
            return None
        # A shortest edge S needs the short side >= S; the long side then keeps >= its int(S * long / short).
        return (self.resize, self.resize) if isinstance(self.resize, int) else (self.resize[1], self.resize[0])

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) after the resize, with transformers' arithmetic (`get_resize_output_image_size`)."""
        if self.resize is None:
            return height, width
        if not isinstance(self.resize, int):
            return self.resize
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def pixels(self, cell: Any) -> np.ndarray:
        """One image as a (3, H, W) float32 array."""
        image = open_image(cell, max_pixels=self.max_pixels, mode=None, draft_size=self.draft_size)
        width, height = image.info.get("original_size", image.size)
        image = self._rgb(image, cell)
        if self.resize is not None:
            new_height, new_width = self.output_size(width, height)
            image = image.resize((new_width, new_height), resample=self.resample)
        if self.crop is not None:
            crop_height, crop_width = self.crop
            # Floor division matches transformers' centre crop, also for the zero padding of a too-small image.
            top, left = (image.height - crop_height) // 2, (image.width - crop_width) // 2
            image = image.crop((left, top, left + crop_width, top + crop_height))
        rgb = np.asarray(image)
        out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
        for channel in range(3):
            np.take(self._table[channel], rgb[..., channel], out=out[channel])
        return out

    def __call__(self, cells: Iterable[Any]) -> torch.Tensor:
        """A batch as an (N, 3, H, W) float32 tensor; every image must come out the same size."""
        arrays = [self.pixels(cell) for cell in cells]
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(
                f"the images come out in different sizes {sorted({a.shape[1:] for a in arrays})}; "
                "a shortest-edge resize needs a crop (or same-shaped inputs) to batch"
            )
        return torch.from_numpy(np.stack(arrays))

    def _rgb(self, image: PILImage.Image, cell: Any) -> PILImage.Image:
        if not self.convert_rgb:
            if image.mode != "RGB":
                where = f" {cell['path']}" if isinstance(cell, dict) and cell.get("path") else ""
                raise BadImage(f"image{where} is {image.mode}, not RGB, and the processor has do_convert_rgb=False")
            return image
        # As transformers' `convert_to_rgb`: transparency is composited onto white, not dropped.
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            image = image.convert("RGBA")
            white = PILImage.new("RGBA", image.size, (255, 255, 255, 255))
            return PILImage.alpha_composite(white, image).convert("RGB")
        return image.convert("RGB") if image.mode != "RGB" else image


def _value_table(
    rescale_factor: float | None, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> np.ndarray:
    """(3, 256) float32: each channel's output for each uint8 value, computed with the processor's own numpy steps
    (rescale in float64 then float32, normalise in float32), so looking values up reproduces it exactly."""
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 256))
    if rescale_factor is not None:
        values = (values.astype(np.float64) * rescale_factor).astype(np.float32)
    values = values.astype(np.float32)
    if mean is not None and std is not None:
        values = ((values.T - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)).T
    return np.ascontiguousarray(values)


def _is_side(value: Any) -> bool:
    return isinstance(value, int) and value >= 1


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(_is_side(v) for v in value)


def _supported_settings(image_processor: Any) -> dict[str, Any]:
    """The processor's settings, once checked that its pipeline is the stock one and that they ask for nothing
    beyond a CLIP or BLIP processor's; otherwise ValueError naming the method or the setting."""
    cls = type(image_processor)
    backend = next((b for b in (PilBackend, TorchvisionBackend) if isinstance(image_processor, b)), None)
    if backend is None:
        raise ValueError(f"{cls.__name__} is not a transformers image processor with the PIL or torchvision backend")
    overridden = [name for name in _PIPELINE_METHODS if getattr(cls, name, None) is not getattr(backend, name, None)]
    if overridden:
        raise ValueError(
            f"{cls.__name__} overrides {', '.join(overridden)}; PixelTransform reproduces only the stock "
            "resize / centre-crop / rescale / normalise pipeline (CLIP, BLIP)"
        )
    settings = {name: getattr(image_processor, name, None) for name in image_processor.valid_kwargs.__annotations__}
    unsupported = {
        name: value
        for name, value in settings.items()
        if name not in _READ_SETTINGS | _INERT_SETTINGS and value is not None and value is not False
    }
    if settings["do_pad"]:
        unsupported["do_pad"] = settings["do_pad"]
    if settings["data_format"] not in (None, "channels_first"):
        unsupported["data_format"] = settings["data_format"]
    resample = settings["resample"]
    if resample is not None and (not isinstance(resample, int) or resample not in _RESAMPLE_FILTERS):
        unsupported["resample"] = resample  # e.g. a torchvision InterpolationMode
    if unsupported:
        listed = ", ".join(f"{name}={value!r}" for name, value in unsupported.items())
        raise ValueError(f"PixelTransform does not support the image processor setting(s) {listed}")
    return settings


def _resize_setting(size: Any) -> int | tuple[int, int]:
    given = {k: v for k, v in dict(size or {}).items() if v is not None}
    if set(given) == {"shortest_edge"}:
        return given["shortest_edge"]
    if set(given) == {"height", "width"}:
        return given["height"], given["width"]
    raise ValueError(
        f"PixelTransform does not support the image processor setting size={given}: only "
        "{'shortest_edge': n} or {'height': h, 'width': w}"
    )


def _crop_setting(crop_size: Any) -> tuple[int, int]:
    given = {k: v for k, v in dict(crop_size or {}).items() if v is not None}
    if set(given) != {"height", "width"}:
        raise ValueError(
            f"PixelTransform does not support the image processor setting crop_size={given}: only height and width"
        )
    return given["height"], given["width"]


def _per_channel(name: str, value: Any) -> tuple[float, float, float]:
    values = tuple(value) if isinstance(value, Iterable) else (value,) * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(
            f"PixelTransform does not support the image processor setting {name}={value!r}: one number or three"
        )
    return values  # type: ignore[return-value]
