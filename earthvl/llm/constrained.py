"""Constrained decoding for local transformers models: generation that can only spell JSON valid for a schema.

Built on xgrammar: a grammar compiled from the JSON schema masks, at every step, the tokens that cannot continue a
valid answer. xgrammar's string grammar lets raw control characters through, which JSON forbids, so the tokens
holding one are masked as well.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

import torch
from transformers import LogitsProcessor

_COMPILERS: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()
"""tokenizer -> logits width -> (grammar compiler, control-character token ids, compiled grammars by schema)."""


def _compiler(tokenizer: Any, vocab_size: int) -> tuple[Any, list[int], dict[str, Any]]:
    import xgrammar

    by_size = _COMPILERS.setdefault(tokenizer, {})
    if vocab_size not in by_size:
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        special = set(info.special_token_ids)
        controls = [
            token_id
            for token_id, token in enumerate(info.decoded_vocab)
            if token_id not in special and any(byte < 0x20 for byte in token)
        ]
        by_size[vocab_size] = (xgrammar.GrammarCompiler(info), controls, {})
    return by_size[vocab_size]


class JSONSchemaLogitsProcessor(LogitsProcessor):
    """Masks every token that cannot continue JSON valid for a schema (compact separators, no free whitespace).
    One instance serves one `generate()` call (it follows the answer token by token); the grammar is compiled on
    the first step, for the width of the model's logits, and reused across instances."""

    def __init__(self, tokenizer: Any, schema: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.schema = json.dumps(schema)
        self._grammar: Any = None
        self._controls: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._grammar is None:
            from xgrammar.contrib.hf import LogitsProcessor as GrammarProcessor

            compiler, controls, grammars = _compiler(self.tokenizer, scores.shape[-1])
            if self.schema not in grammars:
                grammars[self.schema] = compiler.compile_json_schema(self.schema, any_whitespace=False)
            self._grammar = GrammarProcessor(grammars[self.schema])
            self._controls = torch.tensor(controls, dtype=torch.long, device=scores.device)
        scores = scores.clone()
        if self._controls is not None and len(self._controls):
            scores[:, self._controls] = -float("inf")
        return self._grammar(input_ids, scores)


def json_logits_processor(tokenizer: Any, schema: dict[str, Any]) -> JSONSchemaLogitsProcessor:
    """A logits processor for one `generate()` call that holds a local model's output to JSON valid for `schema`."""
    return JSONSchemaLogitsProcessor(tokenizer, schema)
