"""The model families a card describes: their names, classes, pipeline tags and training commands."""

from __future__ import annotations

from typing import NamedTuple


class Family(NamedTuple):
    """How a model family is named, loaded and tagged."""

    name: str
    model_class: str
    processor_class: str
    pipeline_tag: str
    train_command: str
    """`earthvl train <this>`"""
    tag: str


FAMILIES = {
    "clip": Family("CLIP", "CLIPModel", "CLIPProcessor", "zero-shot-image-classification", "clip", "clip"),
    "blip2": Family("BLIP-2", "Blip2ForConditionalGeneration", "AutoProcessor", "image-to-text", "blip2", "blip-2"),
    "llava": Family("LLaVA", "LlavaForConditionalGeneration", "AutoProcessor", "image-text-to-text", "vlm", "llava"),
}
MODEL_TYPES = {"clip": "clip", "blip-2": "blip2", "llava": "llava"}
"""transformers `model_type` -> family."""
TASK_WORDS = {
    "clip": "zero-shot scene classification and image-text retrieval",
    "blip2": "captioning",
    "llava": "captioning, scene classification and visual question answering",
}
