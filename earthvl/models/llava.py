"""The LLaVA-1.5 layout in one place, for the tiny model and for models assembled from a vision tower and an LLM.

Features of the vision tower's second-to-last layer without the class token, a two-layer GELU projector, one
`<image>` token per patch, and earthvl's training chat template.
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig, LlavaConfig, LlavaProcessor, PreTrainedConfig

from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE


def llava15_config(vision_config: CLIPVisionConfig, text_config: PreTrainedConfig, image_token_id: int) -> LlavaConfig:
    """A LLaVA-1.5 config over these towers, with one image token per patch."""
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def llava15_processor(image_processor: Any, tokenizer: Any, patch_size: int) -> LlavaProcessor:
    """The processor of a LLaVA-1.5 model, with earthvl's training chat template."""
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the class token, which the "default" strategy drops again
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
