"""Batches for the three trainers: rows whose image failed to decode dropped (and named), then the text side of
each model: TRL's vision-language collator for VLMs (plus nine-band pixels), chunked captions for CLIP, masked
caption labels for BLIP-2."""

from __future__ import annotations

from typing import Any, Callable

import torch

from earthvl.errors import EarthvlError
from earthvl.models.blip2 import blip2_prompt_ids
from earthvl.models.clip import TextChunker
from earthvl.models.vision import multispectral_pixel_values
from earthvl.train.caption_rows import TEXTS
from earthvl.train.foundation import SKIPPED_IMAGES
from earthvl.train.rows import BAD_IMAGE

IGNORE_INDEX = -100
"""The label value that transformers' losses skip."""


def usable_rows(examples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows with a usable image, and why the others were dropped; a batch without any usable row is an error."""
    skipped = [example[BAD_IMAGE] for example in examples if example.get(BAD_IMAGE)]
    good = [example for example in examples if not example.get(BAD_IMAGE)]
    if not good:
        raise EarthvlError(f"every row of a batch has an image that failed to decode: {'; '.join(skipped)}")
    return good, skipped


def flatten_rows(batch: dict[str, Any]) -> dict[str, Any]:
    """A padded batch as one padding-free row: the rows' tokens concatenated (padding dropped), `position_ids`
    restarting at 0 for each row, the row offsets as `cu_seq_lens_q`/`_k` (int32) and `max_length_q`/`_k`, and no
    `attention_mask`. Each row's first label is -100: the shifted loss would otherwise train the previous row's last
    token to predict it, which the padded batch never does. Other tensors shaped like `input_ids` are flattened the
    same way; everything else (pixel values, ...) is kept."""
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(dim=1)
    if not bool((lengths > 0).all()):
        raise EarthvlError("a padding-free batch cannot hold an empty row")
    flat = {
        key: value[mask].unsqueeze(0) if isinstance(value, torch.Tensor) and value.shape == mask.shape else value
        for key, value in batch.items()
        if key != "attention_mask"
    }
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    offsets[1:] = lengths.cumsum(0)
    starts = offsets[:-1].long()
    flat["position_ids"] = (torch.arange(int(offsets[-1])) - starts.repeat_interleave(lengths)).unsqueeze(0)
    if "labels" in flat:
        flat["labels"][0, starts] = IGNORE_INDEX
    flat["cu_seq_lens_q"] = flat["cu_seq_lens_k"] = offsets
    flat["max_length_q"] = flat["max_length_k"] = int(lengths.max())
    return flat


class VlmCollator:
    """Wraps TRL's `DataCollatorForVisionLanguageModeling` (tokenisation, image tokens, the assistant-only mask).

    Rows whose image failed to decode are dropped and named under `skipped_images`. With band statistics in
    `vision` the RGB pixel values are replaced by the rows' nine bands, resized like the RGB images and normalised
    per band; the text side (and so the number of image tokens) is what the RGB path produced. With `padding_free`
    the batch's rows are packed into one sequence (`flatten_rows`), for a language model on per-row attention
    (`earthvl.models.attention`)."""

    def __init__(
        self,
        collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
        vision: dict[str, Any] | None = None,
        padding_free: bool = False,
    ) -> None:
        self.collator = collator
        vision = vision or {}
        self.band_mean, self.band_std = vision.get("band_mean"), vision.get("band_std")
        self.padding_free = padding_free

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        good, skipped = usable_rows(examples)
        batch = self.collator(good)
        if self.band_mean is not None:
            pixels = batch["pixel_values"]
            bands = multispectral_pixel_values([example["bands"] for example in good], pixels.shape[-1], self.band_mean, self.band_std)
            batch["pixel_values"] = bands.to(pixels.dtype)
        if self.padding_free:
            batch = flatten_rows(batch)
        if skipped:
            batch[SKIPPED_IMAGES] = skipped
        return batch


class ClipCollator:
    """CLIP batches: the images' pixel values, every caption fitted into token sequences by `chunker`, and two index
    tensors that say which caption each sequence belongs to (`sequence_caption`) and which image each caption
    belongs to (`caption_image`), so the loss can average chunks into captions and captions into images.

    Batches keep a few fixed shapes whatever the captions' lengths: every sequence is padded to the text tower's
    length, and the number of sequences is rounded up to a multiple of `sequence_multiple` with filler rows (empty
    texts) after the real ones. `sequence_caption` covers the real rows only; the loss leaves the rest out. Attention
    backends that plan each new shape (cuDNN) then plan once per shape instead of at every step."""

    def __init__(self, chunker: TextChunker, sequence_multiple: int = 1) -> None:
        if sequence_multiple < 1:
            raise EarthvlError(f"text_sequence_multiple={sequence_multiple}: must be at least 1")
        self.chunker, self.sequence_multiple = chunker, sequence_multiple

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        good, skipped = usable_rows(examples)
        texts = [text for example in good for text in example[TEXTS]]
        caption_image = [image for image, example in enumerate(good) for _ in example[TEXTS]]
        fits = self.chunker.fit_all(texts)
        sequences = [ids for fit in fits for ids in fit.sequences]
        sequence_caption = [caption for caption, fit in enumerate(fits) for _ in fit.sequences]
        rows = -(-len(sequences) // self.sequence_multiple) * self.sequence_multiple
        input_ids, attention_mask = self.chunker.pad(sequences, rows=rows, width=self.chunker.max_tokens)
        batch = {
            "pixel_values": torch.stack([example["pixel_values"] for example in good]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "sequence_caption": torch.tensor(sequence_caption),
            "caption_image": torch.tensor(caption_image),
        }
        if skipped:
            batch[SKIPPED_IMAGES] = skipped
        return batch


class Blip2Collator:
    """BLIP-2 captioning batches: `[image] x num_query_tokens`, the prompt (with the tokenizer's `bos`), the caption
    and its end token, right-padded; labels are the caption and the end token only (-100 at image-query, prompt and
    pad positions). The end token is `end_token_id` (give the one the model's generation stops at:
    `earthvl.models.loading.stop_token_ids`: the newline for Salesforce's OPT checkpoints), by default the tokenizer's
    `eos`.
    Captions longer than `max_caption_tokens` are cut to it."""

    def __init__(self, processor: Any, prompt: str = "", max_caption_tokens: int = 512, end_token_id: int | None = None) -> None:
        self.tokenizer = processor.tokenizer
        self.prefix = blip2_prompt_ids(processor, prompt)
        self.space = " " if prompt and not prompt.endswith(" ") else ""
        self.max_caption_tokens = max_caption_tokens
        self.end_token_id = self.tokenizer.eos_token_id if end_token_id is None else end_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        good, skipped = usable_rows(examples)
        captions = [self.space + example[TEXTS][0] for example in good]
        bodies = self.tokenizer(captions, add_special_tokens=False)["input_ids"]
        rows = [body[: self.max_caption_tokens - 1] + [self.end_token_id] for body in bodies]
        width = len(self.prefix) + max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for index, row in enumerate(rows):
            end = len(self.prefix) + len(row)
            input_ids[index, :end] = torch.tensor(self.prefix + row)
            attention_mask[index, :end] = 1
            labels[index, len(self.prefix) : end] = torch.tensor(row)
        batch = {
            "pixel_values": torch.stack([example["pixel_values"] for example in good]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
        }
        if skipped:
            batch[SKIPPED_IMAGES] = skipped
        return batch
