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

CLASSIFY_TEMPLATE = "Classify the image from the following classes: {classes}. Answer in one word or a short phrase."
"""GeoChat's scene-classification prompt; `{classes}` is the class names joined by ", "."""

VQA_SUFFIX = "Answer the question using a single word or phrase."
"""GeoChat's suffix for short-answer visual questions."""


def classify_instruction(class_names: list[str] | tuple[str, ...]) -> str:
    """The GeoChat classification prompt over `class_names`."""
    return CLASSIFY_TEMPLATE.format(classes=", ".join(class_names))


def vqa_instruction(question: str) -> str:
    """A question in GeoChat's short-answer style."""
    return f"{question.strip()} {VQA_SUFFIX}"
