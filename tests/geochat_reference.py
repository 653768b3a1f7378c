"""GeoChat's position-embedding interpolation wired as GeoChat's `CLIPVisionTower.clip_interpolate_embeddings` wires
it (geochat/model/multimodal_encoder/clip_encoder.py): the tests' independent reference for earthvl's."""

import math

import torch
from torch import nn


def geochat_interpolation(weight, grid):
    """Bicubic, align_corners=True, on the (1, dim, side, side) patch grid; the class token kept apart."""
    n, dim = weight.shape
    old = int(math.sqrt(n - 1))
    patches = weight[1:].unsqueeze(0).permute(0, 2, 1).reshape(1, dim, old, old)
    patches = nn.functional.interpolate(patches, size=grid, mode="bicubic", align_corners=True)
    return torch.cat([weight[:1], patches.reshape(1, dim, grid * grid).permute(0, 2, 1)[0]])
