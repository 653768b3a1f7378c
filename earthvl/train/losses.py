"""The contrastive (InfoNCE) loss of CLIP, over the global batch when training runs on several processes.

Each process scores its own images against every process's texts and its own texts against every process's
images (embeddings gathered with their gradients, as open_clip's `gather_with_grad` + `local_loss`). With the
gradient averaging of DDP this gives exactly the gradient of the loss over the concatenated batch: running on N
GPUs with per-device batch B trains the same objective as one GPU with batch N x B.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP caps the learned temperature at 100 (`exp` of the logit scale)."""


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of `local` concatenated in rank order (gradients flow back to their owners), and the
    offset of this process's rows. Processes may hold different numbers of rows (e.g. after skipped images)."""
    world, rank = _world()
    if world == 1:
        return local, 0
    size = torch.tensor([len(local)], device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = F.pad(local, (0, 0, 0, max(counts) - len(local)))
    from torch.distributed.nn.functional import all_gather  # imported late: it needs a distributed build of torch

    gathered = all_gather(padded)
    return torch.cat([part[:count] for part, count in zip(gathered, counts)]), sum(counts[:rank])


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of the image-text similarities of L2-normalised embeddings, row i matching row i,
    against the texts and images of all processes; the temperature is `exp(logit_scale)`, capped at 100."""
    if len(image_embeds) != len(text_embeds):
        raise ValueError(f"{len(image_embeds)} image embeddings for {len(text_embeds)} text embeddings")
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    all_images, offset = gather_with_grad(image_embeds)
    all_texts, _ = gather_with_grad(text_embeds)
    targets = torch.arange(len(image_embeds), device=image_embeds.device) + offset
    image_loss = F.cross_entropy(scale * image_embeds @ all_texts.T, targets)
    text_loss = F.cross_entropy(scale * text_embeds @ all_images.T, targets)
    return (image_loss + text_loss) / 2
