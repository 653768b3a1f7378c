"""Turn any captioned config (GAIA `default`, every ChatEarthNet config) into TRL's conversational VLM format.

A row becomes `{"messages": [user: image + instruction, assistant: caption], "images": [image]}`, what
`trl.SFTTrainer` and its `DataCollatorForVisionLanguageModeling` take. Rows are made on access (a
`datasets` transform), so one caption of a GAIA image is sampled per image per epoch, and images stay lazily
decoded.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Sequence

from datasets import Dataset

from earthvl.errors import EarthvlError
from earthvl.prompts import CAPTION_INSTRUCTION, CAPTION_PARAPHRASES

logger = logging.getLogger(__name__)

CAPTION_COLUMNS = ("captions", "caption")
"""A list of captions per image (GAIA), or one caption (ChatEarthNet)."""
KEY_COLUMNS = ("id", "file_name")
"""The column that names a row stably, to seed its caption and instruction choice."""


def caption_messages(instruction: str, caption: str | None = None) -> list[dict[str, Any]]:
    """A user turn with the image and `instruction`, followed by the assistant's `caption` when one is given."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
    ]
    if caption is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": caption}]})
    return messages


class CaptionConversations:
    """The transform behind `to_conversations`: picks a caption and an instruction per row from (seed, epoch, key).

    Call `set_epoch` at the start of each epoch (e.g. from a `TrainerCallback`) to draw new captions."""

    def __init__(self, caption_column: str, key_column: str, *, seed: int = 0, instructions: Sequence[str] = CAPTION_PARAPHRASES) -> None:
        self.caption_column, self.key_column = caption_column, key_column
        self.seed, self.epoch, self.instructions = seed, 0, tuple(instructions)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _choose(self, key: Any, options: Sequence[str], salt: str) -> str:
        return options[random.Random(f"{self.seed}:{self.epoch}:{salt}:{key}").randrange(len(options))]

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        messages, images = [], []
        for key, captions, image in zip(batch[self.key_column], batch[self.caption_column], batch["image"]):
            caption = self._choose(key, captions, "caption") if isinstance(captions, list) else captions
            instruction = self._choose(key, self.instructions, "instruction")
            messages.append(caption_messages(instruction, caption))
            images.append([image])
        return {"messages": messages, "images": images}


def _column(dataset: Dataset, candidates: Sequence[str], role: str) -> str:
    for name in candidates:
        if name in dataset.column_names:
            return name
    raise EarthvlError(
        f"dataset has no {role} column ({' or '.join(candidates)}); its columns are {', '.join(dataset.column_names)}"
    )


def to_conversations(dataset: Dataset, *, seed: int = 0, paraphrase: bool = True) -> tuple[Dataset, CaptionConversations]:
    """`dataset` as TRL conversational rows, and the transform (whose `set_epoch` re-draws captions).

    Rows without any caption cannot train captioning: they are left out, and their count is logged. With
    `paraphrase` off every row uses the evaluation instruction "Provide a detailed description of the given image."
    """
    if "image" not in dataset.column_names:
        raise EarthvlError(f"dataset has no 'image' column (columns: {', '.join(dataset.column_names)}): load a config with pixels, e.g. GAIA 'default'")
    caption_column = _column(dataset, CAPTION_COLUMNS, "caption")
    key_column = _column(dataset, KEY_COLUMNS, "key")
    kept = dataset.filter(lambda captions: bool(captions), input_columns=caption_column)
    if len(kept) < len(dataset):
        logger.warning("left out %d of %d rows that have no caption", len(dataset) - len(kept), len(dataset))
    transform = CaptionConversations(
        caption_column, key_column, seed=seed, instructions=CAPTION_PARAPHRASES if paraphrase else (CAPTION_INSTRUCTION,)
    )
    return kept.with_transform(transform), transform
