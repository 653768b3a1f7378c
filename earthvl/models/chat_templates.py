"""Chat templates shared by the tokenizers and processors that earthvl builds.

A template lives here once; the tokenizer's ``chat_template`` and the processor's ``chat_template`` both point
at the same string so the two can never disagree.
"""

import json

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
