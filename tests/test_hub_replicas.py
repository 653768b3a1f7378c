"""The Hub replicas (tests/hub) load by their real ids offline, with the real special-token layouts and image-token
counts that the end-to-end tests rely on."""

import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor

from hub_models import BLIP2, CLIP_B32, CLIP_L336, LLAVA, hub_id

PICTURE = Image.new("RGB", (300, 200), (40, 120, 60))


def test_llava_hf_layout(hub_replica):
    processor = AutoProcessor.from_pretrained(hub_id(hub_replica, LLAVA))
    tokenizer = processor.tokenizer
    layout = {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<pad>": 32001}
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in layout} == layout
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)) == (1, 2, 32001, 32002)
    assert tokenizer.padding_side == "left" and AutoConfig.from_pretrained(LLAVA).text_config.vocab_size == 32064
    ids = processor(images=[PICTURE], text=["USER: <image>\nWhat is it? ASSISTANT:"])["input_ids"][0]
    assert ids[0] == 1 and ids.count(32000) == AutoConfig.from_pretrained(LLAVA).image_seq_length == 576
    assert "</s>" not in processor.chat_template and "{% generation %}" in processor.chat_template


def test_openai_clip_layout(hub_replica):
    for name, side in ((CLIP_B32, 224), (CLIP_L336, 336)):
        processor = AutoProcessor.from_pretrained(hub_id(hub_replica, name))
        tokenizer = processor.tokenizer
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)) == (49406, 49407, 49407, 49408)
        ids = tokenizer(["A River.", "a forested landscape with water"], padding=True)["input_ids"]
        assert ids[0][0] == 49406 and ids[0][-1] == 49407 and max(ids[1]) == ids[1][-1] == 49407
        assert tokenizer.decode(ids[0], skip_special_tokens=True) == "a river ."  # lower-cased, word-level BPE
        assert processor(images=[PICTURE], return_tensors="pt")["pixel_values"].shape == (1, 3, side, side)
        assert AutoConfig.from_pretrained(name).text_config.eos_token_id == 2  # the legacy id: pooling at argmax


def test_blip2_opt_layout(hub_replica):
    processor = AutoProcessor.from_pretrained(hub_id(hub_replica, BLIP2))
    tokenizer = processor.tokenizer
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 2, 1)
    assert tokenizer("\n", add_special_tokens=False)["input_ids"] == [50118]
    inputs = processor(images=[PICTURE], text=["a satellite photo of"], return_tensors="pt")
    assert torch.equal(inputs["input_ids"][0, :33], torch.tensor([50265] * 32 + [2]))
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    config = AutoConfig.from_pretrained(BLIP2)
    assert (config.num_query_tokens, config.image_token_index, config.text_config.vocab_size) == (32, 50265, 50304)
