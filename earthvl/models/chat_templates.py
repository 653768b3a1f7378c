"""Chat templates shared by the tokenizers and processors that earthvl builds.

A template lives here once; the tokenizer's ``chat_template`` and the processor's ``chat_template`` both point
at the same string so the two can never disagree. `turn_end_problem` checks that a template (earthvl's, a
checkpoint's or a user's) can teach a model to stop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# LLaVA-1.5 ("vicuna_v1") conversation format:
#
#     <s>[system ]USER: <image>\n<question> ASSISTANT: <answer></s>USER: ... ASSISTANT:
#
# - Content may be a string or a list of parts ``{"type": "image"}`` / ``{"type": "text", "text": ...}``.
#   As in LLaVA-1.5 (and llava-hf's own template), a turn's images come first, one ``<image>\n`` each, then its
#   text parts joined by a space.
# - The template starts with the bos token because ``apply_chat_template`` tokenizes with
#   ``add_special_tokens=False`` (TRL does the same when it tokenizes rendered chats).
# - Each assistant answer, with its leading space and closing eos, sits inside ``{% generation %}`` so that
#   ``return_assistant_tokens_mask=True`` (TRL's ``assistant_only_loss=True``) trains on exactly those tokens: the
#   model learns to continue the generation prompt "ASSISTANT:" (space included) and to stop.
LLAVA_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}"
    "{%- set parts = message['content'] -%}"
    "{%- endif -%}"
    "{%- set text = parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{- text + ' ' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- 'USER: ' -}}"
    "{%- for part in parts | selectattr('type', 'equalto', 'image') -%}"
    "{{- '<image>\\n' -}}"
    "{%- endfor -%}"
    "{{- text + ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'ASSISTANT:' -}}"
    "{%- generation -%}"
    "{{- ' ' + text + eos_token -}}"
    "{%- endgeneration -%}"
    "{%- else -%}"
    "{{- raise_exception('Unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- 'ASSISTANT:' -}}"
    "{%- endif -%}"
)

# GeoChat's conversation format is LLaVA-1.5's with a fixed system prompt: GeoChat's evaluation scripts and demo use
# its `llava_v1` conversation, `<system> USER: <image>\n<question> ASSISTANT: <answer></s>USER: ...`. A system
# message given by the caller replaces the default (GeoChat's training used `vicuna_v1`, whose prompt says "user"
# where this one says "human").
GEOCHAT_SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
GEOCHAT_CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{%- set messages = [{'role': 'system', 'content': " + json.dumps(GEOCHAT_SYSTEM_PROMPT) + "}] + messages -%}"
    "{%- endif -%}" + LLAVA_CHAT_TEMPLATE
)

_PROBE = (("first question", "first answer"), ("second question", "second answer"))


def turn_end_problem(processor: Any, template: str, stop_ids: Sequence[int]) -> str | None:
    """Why training with `template` would not teach the model to stop, or None when it would.

    A two-turn conversation is rendered and tokenised with the assistant mask that TRL's `assistant_only_loss` trains
    on: each assistant turn must be marked (`{% generation %}` ... `{% endgeneration %}`) as exactly its answer
    followed by a token of `stop_ids` (what generation stops at). Text-only turns, as images are expanded into image
    tokens after the mask is computed."""
    tokenizer = processor.tokenizer
    messages = []
    for question, answer in _PROBE:
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    try:
        rendered = processor.apply_chat_template(
            messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception as error:  # a broken template fails in jinja, in the renderer or in tokenisation
        return f"it does not render a conversation ({type(error).__name__}: {error})"
    ids, mask = list(rendered["input_ids"][0]), list(rendered["assistant_masks"][0])  # a processor batches its output
    spans: list[list[int]] = []
    for index, (token, marked) in enumerate(zip(ids, mask)):
        if marked:
            if not (index and mask[index - 1]):
                spans.append([])
            spans[-1].append(token)
    if not spans:
        return "it marks no assistant tokens: it needs {% generation %} ... {% endgeneration %} around each answer"
    if len(spans) != len(_PROBE):
        return f"it marks {len(spans)} spans in a conversation of {len(_PROBE)} assistant turns"
    stops = " or ".join(repr(tokenizer.decode([stop])) for stop in stop_ids)
    for span, (_, answer) in zip(spans, _PROBE):
        if span[-1] not in stop_ids:
            return f"the answer {answer!r} is marked as {tokenizer.decode(span)!r}, without the end of turn {stops} after it"
        if tokenizer.decode(span[:-1]).strip() != answer:
            return f"the answer {answer!r} is marked as {tokenizer.decode(span)!r}: not just the answer and the end of turn"
    return None
