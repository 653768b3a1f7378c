"""CLIP vision towers for remote sensing: nine Sentinel-2 bands instead of RGB, and higher input resolutions.

Both work in place on the transformers models (`LlavaForConditionalGeneration`, `CLIPModel`, `CLIPVisionModel`)
and keep their configs in step, so `save_pretrained` / `from_pretrained` round-trip the changed towers.

- Multispectral: `widen_patch_embedding` gives the patch embedding extra input channels initialised to zero, so
  the widened model starts out computing exactly what the RGB model did; `band_statistics` and
  `multispectral_pixel_values` turn ChatEarthNet's nine bands (`layout.BANDS`, RGB first) into pixel values.
- Resolution: `interpolate_position_embeddings` resizes the position embeddings by bicubic interpolation with
  aligned corners (`interpolate_positions`), as GeoChat did to go from 336 px (24x24 patches) to 504 px (36x36).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedConfig
from transformers.image_utils import SizeDict
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

from earthvl.builders.chatearthnet.features import BAND_COLUMNS, stack_bands
from earthvl.builders.chatearthnet.layout import BANDS
from earthvl.errors import EarthvlError

logger = logging.getLogger(__name__)

RGB_CHANNELS = 3


def vision_embeddings(model: nn.Module) -> CLIPVisionEmbeddings:
    """The CLIP vision embeddings (patch and position embeddings) of a LLaVA or CLIP model."""
    found = [module for module in model.modules() if isinstance(module, CLIPVisionEmbeddings)]
    if len(found) != 1:
        what = "no CLIP vision tower" if not found else f"{len(found)} CLIP vision towers"
        raise EarthvlError(
            f"{type(model).__name__} has {what}: expected a LlavaForConditionalGeneration with a CLIP vision tower, "
            "a CLIPModel or a CLIPVisionModel"
        )
    return found[0]


def _vision_configs(model: nn.Module, embeddings: CLIPVisionEmbeddings) -> list[PreTrainedConfig]:
    """The vision configs to keep in step: the tower's own and the one `save_pretrained` writes, if distinct."""
    model_config = getattr(model, "config", None)
    saved = getattr(model_config, "vision_config", model_config)
    return [embeddings.config] if saved is None or saved is embeddings.config else [embeddings.config, saved]


def widen_patch_embedding(model: nn.Module, num_channels: int = len(BANDS)) -> None:
    """Give the vision tower's patch embedding `num_channels` input channels, in place.

    Channels 0-2 keep the RGB weights (ChatEarthNet's bands start with B4, B3, B2 = R, G, B) and the extra channels
    start at zero, so the widened model's outputs equal the RGB model's whatever the extra bands hold, until
    training moves those weights. The config's `num_channels` follows, so the model saves and reloads widened.
    """
    if num_channels < RGB_CHANNELS:
        raise EarthvlError(f"num_channels={num_channels}: a widened patch embedding needs at least 3 channels")
    embeddings = vision_embeddings(model)
    old = embeddings.patch_embedding
    if old.in_channels != RGB_CHANNELS:
        raise EarthvlError(
            f"the patch embedding of {type(model).__name__} already takes {old.in_channels} channels, not 3 (RGB): "
            "widen an RGB tower, and only once"
        )
    new = nn.Conv2d(
        num_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :RGB_CHANNELS].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    embeddings.patch_embedding = new
    if hasattr(embeddings, "num_channels"):
        embeddings.num_channels = num_channels
    for config in _vision_configs(model, embeddings):
        config.num_channels = num_channels


def band_statistics(
    dataset: Dataset, *, max_rows: int | None = 2048, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation, in [0, 1] units, of a multispectral ChatEarthNet split.

    The rows are `np.random.default_rng(seed).choice(len(dataset), max_rows, replace=False)` (every row when
    `max_rows` is None or at least `len(dataset)`); rows flagged `is_nodata` are skipped. Only per-band sums are
    kept, so memory does not grow with the number of rows. The bands come in `layout.BANDS` order.
    """
    missing = [column for column in BAND_COLUMNS.values() if column not in dataset.column_names]
    if missing:
        raise EarthvlError(
            f"band_statistics needs the band columns {', '.join(missing)}, which this dataset lacks "
            f"(columns: {', '.join(dataset.column_names)}): load a '-multispectral' ChatEarthNet config"
        )
    if max_rows is not None and max_rows < 1:
        raise EarthvlError(f"max_rows={max_rows}: give a positive number of rows, or None for all of them")
    if max_rows is None or max_rows >= len(dataset):
        indices = list(range(len(dataset)))
    else:
        indices = sorted(np.random.default_rng(seed).choice(len(dataset), size=max_rows, replace=False).tolist())
    rows = dataset.select(indices)
    if "is_nodata" in rows.column_names:
        keep = [i for i, nodata in enumerate(rows["is_nodata"]) if not nodata]
        rows = rows.select(keep)
    logger.info("band_statistics: %d of %d sampled rows skipped as no-data", len(indices) - len(rows), len(indices))
    if len(rows) == 0:
        raise EarthvlError(f"band_statistics found no row with data among the {len(indices)} sampled rows")

    # Integer sums of uint8 values are exact, so the result does not depend on the order of the rows.
    total = np.zeros(len(BANDS), dtype=np.int64)
    total_sq = np.zeros(len(BANDS), dtype=np.int64)
    count = 0
    for row in rows:
        bands = stack_bands(row).reshape(len(BANDS), -1).astype(np.int64)
        total += bands.sum(axis=1)
        total_sq += (bands * bands).sum(axis=1)
        count += bands.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return (mean / 255.0).tolist(), (std / 255.0).tolist()


def multispectral_pixel_values(
    arrays: Sequence[np.ndarray], image_size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """A (B, C, image_size, image_size) float32 batch from (C, H, W) uint8 band arrays, as CLIP preprocesses RGB.

    Each image is resized so that its shorter side is `image_size` (bicubic, antialiased), centre-cropped, scaled
    to [0, 1] and normalised per band with `mean` and `std` (e.g. from `band_statistics`).
    """
    if image_size < 1:
        raise EarthvlError(f"image_size={image_size}: give a positive number of pixels")
    if not arrays:
        raise EarthvlError("multispectral_pixel_values got no arrays")
    if len(mean) != len(std):
        raise EarthvlError(f"mean has {len(mean)} values but std has {len(std)}: give one of each per band")
    if any(value <= 0 for value in std):
        raise EarthvlError(f"std={list(std)}: every band needs a positive standard deviation")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    batch = []
    for index, array in enumerate(arrays):
        if array.ndim != 3 or array.dtype != np.uint8 or array.shape[0] != len(mean):
            raise EarthvlError(
                f"array {index} has shape {array.shape} and dtype {array.dtype}: expected ({len(mean)}, H, W) uint8, "
                f"one channel per value of mean and std"
            )
        batch.append((_resize_and_crop(torch.from_numpy(array), image_size) / 255.0 - mean_t) / std_t)
    return torch.stack(batch)


def _resize_and_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (C, H, W) image so that its shorter side is `size`, then crop the centre `size` x `size`."""
    height, width = image.shape[-2:]
    # The longer side is rounded down, as transformers' `get_resize_output_image_size` does for CLIP.
    if height <= width:
        new_height, new_width = size, int(size * width / height)
    else:
        new_height, new_width = int(size * height / width), size
    resized = nn.functional.interpolate(
        image[None].float(), size=(new_height, new_width), mode="bicubic", antialias=True, align_corners=False
    )[0]
    # Bicubic overshoots at edges; clamp to the uint8 range as a resize of 8-bit images would.
    resized = resized.clamp(0.0, 255.0)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return resized[:, top : top + size, left : left + size]


def interpolate_positions(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """CLIP position embeddings (class token first, then a square patch grid) resized to `grid` x `grid` patches the
    way GeoChat does (`CLIPVisionTower.clip_interpolate_embeddings` in GeoChat's
    geochat/model/multimodal_encoder/clip_encoder.py): bicubic with `align_corners=True`, in float32, the class
    token's embedding kept apart. transformers' on-the-fly `interpolate_pos_encoding` uses `align_corners=False`:
    its positions differ slightly from these."""
    old_grid = math.isqrt(weight.shape[0] - 1)
    if old_grid * old_grid != weight.shape[0] - 1:
        raise EarthvlError(f"{weight.shape[0] - 1} patch positions do not form a square grid")
    patches = weight[1:].float().T.reshape(1, -1, old_grid, old_grid)
    resized = nn.functional.interpolate(patches, size=grid, mode="bicubic", align_corners=True)
    return torch.cat([weight[:1].float(), resized.reshape(weight.shape[1], grid * grid).T]).to(weight.dtype)


def interpolate_position_embeddings(model: nn.Module, image_size: int, processor: Any = None) -> None:
    """Make the vision tower take `image_size` px images by interpolating its position embeddings as GeoChat does
    (`interpolate_positions`).

    The patch grid goes from (old image_size / patch_size)^2 to (image_size / patch_size)^2 positions; the
    class-token embedding is kept as is. The config follows (`vision_config.image_size`, and a LLaVA config's
    `image_seq_length`), so the model saves and reloads at the new size. With `processor` (a `LlavaProcessor`, a
    `CLIPProcessor` or a bare image processor) its resize and crop sizes follow too, so that it emits images, and
    for LLaVA `<image>` tokens, for the new grid. Interpolating to the current size changes nothing.
    """
    embeddings = vision_embeddings(model)
    patch_size = embeddings.patch_size
    if image_size < patch_size or image_size % patch_size:
        raise EarthvlError(
            f"image_size={image_size} is not a positive multiple of the vision tower's patch size {patch_size}"
        )
    grid = image_size // patch_size
    old_grid = math.isqrt(embeddings.num_patches)
    if grid != old_grid:
        old = embeddings.position_embedding
        weight = old.weight.detach()
        new = nn.Embedding(grid * grid + 1, weight.shape[-1], device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.weight.copy_(interpolate_positions(weight, grid))
        new.requires_grad_(old.weight.requires_grad)
        embeddings.position_embedding = new
        embeddings.num_patches = grid * grid
        embeddings.num_positions = grid * grid + 1
        embeddings.image_size = image_size
        embeddings.position_ids = torch.arange(grid * grid + 1, device=weight.device).expand((1, -1))
        for config in _vision_configs(model, embeddings):
            config.image_size = image_size
        model_config = getattr(model, "config", None)
        if hasattr(model_config, "image_seq_length"):
            full = getattr(model_config, "vision_feature_select_strategy", "default") == "full"
            model_config.image_seq_length = grid * grid + int(full)
    if processor is not None:
        image_processor = getattr(processor, "image_processor", processor)
        # Keep the kind of resize: CLIP's shorter side, or a fixed height and width (BLIP-style processors).
        if "height" in image_processor.size and "shortest_edge" not in image_processor.size:
            image_processor.size = SizeDict(height=image_size, width=image_size)
        else:
            image_processor.size = SizeDict(shortest_edge=image_size)
        image_processor.crop_size = SizeDict(height=image_size, width=image_size)


__all__ = [
    "band_statistics",
    "interpolate_position_embeddings",
    "interpolate_positions",
    "multispectral_pixel_values",
    "vision_embeddings",
    "widen_patch_embedding",
]
