"""Batches for VLM training: TRL's vision-language collator, plus bad-image rows dropped and nine-band pixels."""

from __future__ import annotations

from typing import Any, Callable

from earthvl.errors import EarthvlError
from earthvl.models.vision import multispectral_pixel_values
from earthvl.train.conversations import BAD_IMAGE

SKIPPED_IMAGES = "skipped_images"
"""Batch key listing the rows dropped for bad images; the trainer pops it (and counts them) before the forward."""


class VlmCollator:
    """Wraps TRL's `DataCollatorForVisionLanguageModeling` (tokenisation, image tokens, the assistant-only mask).

    Rows whose image failed to decode are dropped and named under `skipped_images`. With band statistics in
    `vision` the RGB pixel values are replaced by the rows' nine bands, resized like the RGB images and normalised
    per band; the text side (and so the number of image tokens) is what the RGB path produced."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]], vision: dict[str, Any] | None = None) -> None:
        self.collator = collator
        vision = vision or {}
        self.band_mean, self.band_std = vision.get("band_mean"), vision.get("band_std")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        skipped = [example[BAD_IMAGE] for example in examples if example.get(BAD_IMAGE)]
        good = [example for example in examples if not example.get(BAD_IMAGE)]
        if not good:
            raise EarthvlError(f"every row of a batch has an image that failed to decode: {'; '.join(skipped)}")
        batch = self.collator(good)
        if self.band_mean is not None:
            pixels = batch["pixel_values"]
            bands = multispectral_pixel_values([example["bands"] for example in good], pixels.shape[-1], self.band_mean, self.band_std)
            batch["pixel_values"] = bands.to(pixels.dtype)
        if skipped:
            batch[SKIPPED_IMAGES] = skipped
        return batch
