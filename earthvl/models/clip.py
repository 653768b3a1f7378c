"""CLIP dual encoders: loading, captions longer than the text tower, and normalised embeddings.

CLIP's text tower reads at most 77 tokens (special tokens included); ChatEarthNet's captions run to several
hundred. `TextChunker` offers three documented ways to fit them:

- `chunks` (default): the caption is split at sentence ends into pieces that fit (a sentence longer than the
  limit is cut into limit-sized pieces) and the pieces' embeddings are averaged, so nothing is dropped unless a
  caption needs more than `max_chunks` pieces;
- `first-sentences`: whole sentences from the start while they fit (the first one cut if it alone is too long);
- `truncate`: the first tokens, as `tokenizer(..., truncation=True)` would.

Averaging follows CLIP_benchmark's prompt ensembles: L2-normalise each embedding, average, normalise again. The
same rule averages the chunks of a caption and the five GAIA captions of an image (`mean_embeddings`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import CLIPModel, CLIPProcessor, PreTrainedTokenizerBase

from earthvl.errors import EarthvlError
from earthvl.models.loading import load_pretrained

LONG_TEXT = ("chunks", "first-sentences", "truncate")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def load_clip(name_or_path: str, **kwargs: Any) -> tuple[CLIPModel, CLIPProcessor]:
    """A CLIP checkpoint (Hub id, folder or `tiny-clip`) and its processor; never runs remote code. The keyword
    arguments (`dtype`, `revision`, `attn_implementation`) are `earthvl.models.loading.load_pretrained`'s."""
    return load_pretrained(CLIPModel, name_or_path, **kwargs)


def text_limit(model: CLIPModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens the text tower reads, special tokens included (77 for OpenAI's CLIP)."""
    return min(model.config.text_config.max_position_embeddings, tokenizer.model_max_length)


@dataclass
class TextFit:
    """How `TextChunker` fitted one text: its token sequences, and the tokens it had and kept (special tokens aside)."""

    sequences: list[list[int]]
    tokens: int
    kept: int


class TextChunker:
    """Turns texts into token-id sequences that fit the text tower (see the module docstring for `mode`)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_tokens: int, mode: str = "chunks", max_chunks: int = 8) -> None:
        if mode not in LONG_TEXT:
            raise EarthvlError(f"long_text={mode!r}: choose one of {', '.join(LONG_TEXT)}")
        if max_chunks < 1:
            raise EarthvlError(f"max_text_chunks={max_chunks}: at least one chunk per caption")
        self.tokenizer, self.mode, self.max_chunks = tokenizer, mode, max_chunks
        self.prefix, self.suffix = _special_tokens(tokenizer)
        self.limit = max_tokens - len(self.prefix) - len(self.suffix)
        if self.limit < 1:
            raise EarthvlError(f"a text tower of {max_tokens} tokens leaves no room besides the special tokens")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def fit(self, text: str) -> TextFit:
        """The sequences (special tokens added) for `text`, and how many of its tokens they keep."""
        if self.mode == "truncate":
            ids = self._encode([text])[0]
            return self._fitted([ids[: self.limit]], len(ids))
        sentences = [s for s in _SENTENCE_END.split(text.strip()) if s] or [""]
        pieces = self._encode([s if i == 0 else f" {s}" for i, s in enumerate(sentences)])
        total = sum(len(piece) for piece in pieces)
        chunks: list[list[int]] = []
        for piece in pieces:
            if chunks and len(chunks[-1]) + len(piece) <= self.limit:
                chunks[-1] += piece
            else:
                chunks += [piece[start : start + self.limit] for start in range(0, max(len(piece), 1), self.limit)]
        keep = 1 if self.mode == "first-sentences" else self.max_chunks
        return self._fitted(chunks[:keep], total)

    def __call__(self, text: str) -> list[list[int]]:
        return self.fit(text).sequences

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def _fitted(self, bodies: list[list[int]], total: int) -> TextFit:
        return TextFit([self.prefix + body + self.suffix for body in bodies], total, sum(map(len, bodies)))

    def report(self, texts: Sequence[str]) -> dict[str, float]:
        """What fitting does to `texts`: the fraction of texts longer than one sequence, the fraction of texts and of
        tokens that are cut, and sequences per text."""
        fits = [self.fit(text) for text in texts]
        count = max(len(fits), 1)
        tokens = max(sum(fit.tokens for fit in fits), 1)
        return {
            "texts": len(fits),
            "max_tokens": self.limit + len(self.prefix) + len(self.suffix),
            "longer_than_limit": sum(fit.tokens > self.limit for fit in fits) / count,
            "texts_cut": sum(fit.kept < fit.tokens for fit in fits) / count,
            "tokens_dropped": sum(fit.tokens - fit.kept for fit in fits) / tokens,
            "sequences_per_text": sum(len(fit.sequences) for fit in fits) / count,
        }

    def pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_ids` and `attention_mask` of `sequences`, right-padded to the longest."""
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (`<|startoftext|>` ... `<|endoftext|>` for CLIP)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise EarthvlError(f"cannot tell which special tokens {type(tokenizer).__name__} adds around a text")


def mean_embeddings(embeddings: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """Per group, the normalised mean of the L2-normalised rows of `embeddings` whose `groups` entry names it."""
    normalised = torch.nn.functional.normalize(embeddings, dim=-1)
    sums = torch.zeros((count, embeddings.shape[-1]), dtype=normalised.dtype, device=normalised.device)
    return torch.nn.functional.normalize(sums.index_add(0, groups, normalised), dim=-1)


@torch.no_grad()
def text_embeddings(model: CLIPModel, chunker: TextChunker, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Normalised embeddings of `texts` (N, D), each the mean of its fitted sequences."""
    sequences, owners = [], []
    for index, text in enumerate(texts):
        fitted = chunker(text)
        sequences += fitted
        owners += [index] * len(fitted)
    device = model.device
    parts = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = chunker.pad(sequences[start : start + batch_size])
        out = model.get_text_features(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        parts.append(out.pooler_output.float())
    return mean_embeddings(torch.cat(parts), torch.tensor(owners, device=device), len(texts))


@torch.no_grad()
def image_embeddings(model: CLIPModel, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Normalised embeddings (N, D) of preprocessed images (N, 3, H, W)."""
    parts = []
    for start in range(0, len(pixel_values), batch_size):
        batch = pixel_values[start : start + batch_size].to(model.device, model.dtype)
        parts.append(model.get_image_features(pixel_values=batch).pooler_output.float())
    return torch.nn.functional.normalize(torch.cat(parts), dim=-1)


def zero_shot_classifier(
    model: CLIPModel, chunker: TextChunker, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """Class embeddings (C, D) as CLIP_benchmark builds them: one prompt per template (`template.format(c=name)`),
    each normalised, averaged per class and normalised again. Logits are `100 * image_embeddings @ classifier.T`."""
    prompts = [template.format(c=name) for name in class_names for template in templates]
    embeddings = text_embeddings(model, chunker, prompts)
    owners = torch.arange(len(class_names), device=embeddings.device).repeat_interleave(len(templates))
    return mean_embeddings(embeddings, owners, len(class_names))
