"""Constrained decoding for local transformers models: generation that can only spell JSON valid for a schema.

Built on xgrammar (a grammar compiled from the JSON schema masks, at every step, the tokens that cannot continue a
valid answer). xgrammar's string grammar lets raw control characters through, which JSON forbids, so the tokens
that hold one are suppressed as well.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from transformers import LogitsProcessorList, SuppressTokensLogitsProcessor

_COMPILERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""tokenizer -> (vocabulary size, grammar compiler, control-character token ids), built once per tokenizer."""


def _compiler(tokenizer: Any, vocab_size: int | None) -> tuple[Any, list[int]]:
    import xgrammar

    size = vocab_size or len(tokenizer)
    cached = _COMPILERS.get(tokenizer)
    if cached is None or cached[0] != size:
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=size)
        controls = [
            token_id
            for token_id, token in enumerate(info.decoded_vocab)
            if token_id not in info.special_token_ids and any(byte < 0x20 for byte in token)
        ]
        cached = (size, xgrammar.GrammarCompiler(info), controls)
        _COMPILERS[tokenizer] = cached
    return cached[1], cached[2]


def json_logits_processor(tokenizer: Any, schema: dict[str, Any], vocab_size: int | None = None) -> LogitsProcessorList:
    """Logits processors for one `generate()` call that hold a local model's output to JSON valid for `schema`
    (compact separators, no free whitespace). `vocab_size` is the width of the model's logits when it differs from
    `len(tokenizer)` (padded embeddings). A new list is needed for every call: the processors track the answer."""
    from xgrammar.contrib.hf import LogitsProcessor

    compiler, controls = _compiler(tokenizer, vocab_size)
    grammar = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
    processors: list[Any] = [LogitsProcessor(grammar)]
    if controls:
        processors.insert(0, SuppressTokensLogitsProcessor(controls))
    return LogitsProcessorList(processors)
