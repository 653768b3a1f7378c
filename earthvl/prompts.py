"""Instruction texts shared by training and evaluation (one place, so the two never drift apart)."""

from __future__ import annotations

CAPTION_INSTRUCTION = "Provide a detailed description of the given image."
"""The captioning instruction of the GAIA/GeoChat evaluation; evaluation always uses this one."""

CAPTION_PARAPHRASES = (
    CAPTION_INSTRUCTION,
    "Describe this satellite image in detail.",
    "Write a detailed caption for this remote-sensing image.",
    "What does this image show? Describe it thoroughly.",
    "Give a detailed description of the scene in this image.",
)
"""Training-time variants of the captioning instruction; the first is the evaluation instruction itself."""
