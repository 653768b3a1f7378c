"""Tests for the offline tiny models: tokenizer, chat template, the three builders and the name cache."""

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    CLIPModel,
    CLIPProcessor,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
)

import earthvl.model_names
from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE
from earthvl.models.tiny import (
    IMAGE_SIZE,
    NUM_QUERY_TOKENS,
    PATCH_SIZE,
    TINY_MODELS,
    TINY_MODELS_VERSION,
    build_all,
    build_tokenizer,
)
from earthvl.model_names import resolve_model

LAND_COVER = (
    "water",
    "developed area",
    "tree",
    "shrub",
    "grass",
    "crop",
    "bare land",
    "snow",
    "wetland",
    "mangroves",
    "moss",
)
PLACES = ("top left", "top right", "bottom left", "bottom right", "center")
CORPUS = [
    f"The image is dominated by a large portion of {main} in the {place}, with some {other} around it."
    for main, other in itertools.permutations(LAND_COVER, 2)
    for place in PLACES[:2]
] + [f"A satellite image showing mostly {cls} in the {place}." for cls in LAND_COVER for place in PLACES]

MODEL_CLASSES = {
    "tiny-llava": (LlavaForConditionalGeneration, LlavaProcessor),
    "tiny-clip": (CLIPModel, CLIPProcessor),
    "tiny-blip2": (Blip2ForConditionalGeneration, Blip2Processor),
}
# Parameter-name prefixes of each model's vision and text towers.
TOWERS = {
    "tiny-llava": ("model.vision_tower.", "model.language_model."),
    "tiny-clip": ("vision_model.", "text_model."),
    "tiny-blip2": ("vision_model.", "language_model."),
}
QUESTION = "What covers most of this image?"
ANSWER = "Mostly tree, with some water."


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    return build_all(tmp_path_factory.mktemp("tiny"), corpus=CORPUS)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _conversation(image: Image.Image | None = None) -> list[dict]:
    image_part = {"type": "image", "image": image} if image is not None else {"type": "image"}
    return [
        {"role": "user", "content": [image_part, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
    ]


def _load(built: dict[str, Path], name: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    model_class, processor_class = MODEL_CLASSES[name]
    return model_class.from_pretrained(built[name]), processor_class.from_pretrained(built[name])


def _grad_norm(model: PreTrainedModel, prefix: str) -> float:
    grads = [p.grad for name, p in model.named_parameters() if name.startswith(prefix) and p.grad is not None]
    assert grads, f"no gradients under {prefix}"
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()


def _assert_trains(model: PreTrainedModel, name: str, loss: torch.Tensor) -> None:
    assert torch.isfinite(loss)
    loss.backward()
    for param_name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), param_name
    for prefix in TOWERS[name]:
        assert _grad_norm(model, prefix) > 0


# --- tokenizer ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The image is dominated by a large portion of tree in the top left.",
        "Zyxqv glaciers near Ærøskøbing, 東京 and São Paulo 🌍🛰️",
        "  leading/trailing spaces, tabs\tand\nnewlines  ",
    ],
)
def test_tokenizer_round_trips_any_text_without_unk(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids

    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids


def test_tokenizer_special_tokens(tokenizer):
    ids = tokenizer(f"USER: {tokenizer.image_token}\nhi").input_ids

    assert tokenizer.image_token == "<image>"
    assert tokenizer.tokenize("<image>") == ["<image>"]
    assert ids.count(tokenizer.image_token_id) == 1
    assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "USER: \nhi"
    assert {tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token} == {
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
    }
    # CLIP's text tower reads eos_token_id == 2 as a legacy config and pools at the wrong position.
    assert tokenizer.eos_token_id != 2


def test_tokenizer_is_deterministic_and_bounded(tokenizer):
    again = build_tokenizer(CORPUS)

    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert len(tokenizer) <= 2048
    assert len(build_tokenizer(CORPUS, vocab_size=300)) == 300


def test_tokenizer_rejects_a_vocabulary_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(CORPUS, vocab_size=100)


# --- chat template -----------------------------------------------------------------------------------------------


def test_chat_template_renders_llava_format(tokenizer):
    rendered = tokenizer.apply_chat_template(_conversation(), tokenize=False)

    assert tokenizer.chat_template == LLAVA_CHAT_TEMPLATE
    assert rendered == f"<s>USER: <image>\n{QUESTION} ASSISTANT: {ANSWER}</s>"


def test_chat_template_string_content_system_multi_turn_and_generation_prompt(tokenizer):
    messages = [
        {"role": "system", "content": "You are a remote sensing expert."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Any snow?"},
    ]

    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    assert rendered == (
        f"<s>You are a remote sensing expert. USER: {QUESTION} ASSISTANT: {ANSWER}</s>USER: Any snow? ASSISTANT:"
    )


def test_chat_template_rejects_unknown_roles(tokenizer):
    with pytest.raises(Exception, match="Unsupported role: tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_assistant_mask_covers_exactly_the_answer_and_eos(tokenizer):
    out = tokenizer.apply_chat_template(
        _conversation(), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )

    assert _masked_ids(out["input_ids"], out["assistant_masks"]) == _answer_ids(tokenizer)


def _masked_ids(input_ids, mask) -> list[int]:
    input_ids, mask = list(map(int, input_ids)), list(map(int, mask))
    start = mask.index(1)
    assert all(mask[start:]) and not any(mask[:start]), "the mask must be one block at the end"
    return input_ids[start:]


def _answer_ids(tokenizer) -> list[int]:
    # The space after "ASSISTANT:" belongs to the answer: the model has to produce it after the generation prompt.
    return [*tokenizer(f" {ANSWER}", add_special_tokens=False).input_ids, tokenizer.eos_token_id]


# --- all tiny models ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY_MODELS)
def test_saved_as_safetensors_and_reloads_exactly(built, name, tmp_path):
    model_class, processor_class = MODEL_CLASSES[name]
    files = {path.name for path in built[name].iterdir()}

    assert "model.safetensors" in files
    assert not any(file.endswith(".bin") for file in files)

    model, info = model_class.from_pretrained(built[name], output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    # transformers may rename keys between the file and the module (LLaVA keeps the legacy Hub layout on disk),
    # so compare file to file: saving the reloaded model must give back exactly the built tensors.
    model.save_pretrained(tmp_path)
    saved, resaved = load_file(built[name] / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert saved.keys() == resaved.keys()
    assert all(torch.equal(saved[key], resaved[key]) for key in saved)

    assert isinstance(AutoProcessor.from_pretrained(built[name]), processor_class)
    assert isinstance(processor_class.from_pretrained(built[name]), processor_class)


def test_llava_processor_and_tokenizer_share_the_chat_template(built):
    processor = AutoProcessor.from_pretrained(built["tiny-llava"])

    assert processor.chat_template == LLAVA_CHAT_TEMPLATE
    assert AutoTokenizer.from_pretrained(built["tiny-llava"]).chat_template == LLAVA_CHAT_TEMPLATE


def test_builds_are_deterministic_and_keep_the_global_rng(built, tmp_path):
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)

    again = build_all(tmp_path, corpus=CORPUS)

    assert torch.equal(torch.rand(3), expected_next)
    for name in TINY_MODELS:
        first, second = load_file(built[name] / "model.safetensors"), load_file(again[name] / "model.safetensors")
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first), name


@pytest.mark.parametrize("name", TINY_MODELS)
def test_weights_are_not_degenerate(built, name):
    for key, tensor in load_file(built[name] / "model.safetensors").items():
        if tensor.ndim >= 2:  # matrices and embeddings; norms and biases legitimately start constant
            assert tensor.std() > 1e-3, key


# --- LLaVA -------------------------------------------------------------------------------------------------------


def test_llava_image_tokens_match_image_features(built, image):
    model, processor = _load(built, "tiny-llava")
    inputs = processor(images=image, text=f"USER: <image>\n{QUESTION} ASSISTANT:", return_tensors="pt")

    features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output

    num_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert inputs["pixel_values"].shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
    assert num_image_tokens == features[0].shape[0] == (IMAGE_SIZE // PATCH_SIZE) ** 2
    assert model.config.image_token_id == processor.tokenizer.image_token_id


def test_llava_trains_with_assistant_only_loss(built, image):
    model, processor = _load(built, "tiny-llava")
    inputs = processor.apply_chat_template(
        _conversation(image), tokenize=True, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True
    )
    mask = inputs.pop("assistant_masks")
    assert _masked_ids(inputs["input_ids"][0], mask[0]) == _answer_ids(processor.tokenizer)

    labels = inputs["input_ids"].masked_fill(mask == 0, -100)
    loss = model(**inputs, labels=labels).loss

    _assert_trains(model, "tiny-llava", loss)
    assert _grad_norm(model, "model.multi_modal_projector.") > 0


def test_llava_generates(built, image):
    model, processor = _load(built, "tiny-llava")
    prompt = processor.apply_chat_template(_conversation()[:1], add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")

    output = model.generate(**inputs, max_new_tokens=5, do_sample=False)

    prompt_length = inputs["input_ids"].shape[1]
    assert torch.equal(output[:, :prompt_length], inputs["input_ids"])
    assert 1 <= output.shape[1] - prompt_length <= 5
    assert processor.decode(output[0, :prompt_length], skip_special_tokens=True) == f"USER: \n{QUESTION} ASSISTANT:"
    assert isinstance(processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)[0], str)


# --- CLIP --------------------------------------------------------------------------------------------------------


def test_clip_trains_contrastively(built, image):
    model, processor = _load(built, "tiny-clip")
    inputs = processor(
        text=["mostly water", "mostly developed area"],
        images=[image, image.transpose(Image.Transpose.ROTATE_90)],
        padding=True,
        return_tensors="pt",
    )

    loss = model(**inputs, return_loss=True).loss

    _assert_trains(model, "tiny-clip", loss)


def test_clip_learns_land_cover_zero_shot(built):
    colours = {"water": (30, 60, 150), "tree": (30, 120, 40), "snow": (240, 240, 245), "bare land": (160, 130, 90)}
    rng = np.random.default_rng(0)

    def patch(cls: str) -> Image.Image:
        noise = rng.normal(0, 40, size=(256, 256, 3))
        return Image.fromarray(np.clip(np.array(colours[cls]) + noise, 0, 255).astype(np.uint8))

    def zero_shot_accuracy() -> float:
        inputs = processor(
            text=[f"A satellite image showing mostly {cls}." for cls in colours],
            images=[patch(cls) for cls in colours for _ in range(3)],
            padding=True,
            return_tensors="pt",
        )
        model.eval()
        with torch.no_grad():
            predicted = model(**inputs).logits_per_image.argmax(dim=1)
        model.train()
        return (predicted == torch.arange(len(colours)).repeat_interleave(3)).float().mean().item()

    model, processor = _load(built, "tiny-clip")
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    before = zero_shot_accuracy()
    for _ in range(30):
        captions = [f"The image is dominated by a large portion of {cls} in the top left." for cls in colours]
        inputs = processor(text=captions, images=[patch(cls) for cls in colours], padding=True, return_tensors="pt")
        model(**inputs, return_loss=True).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    assert before < 0.5
    assert zero_shot_accuracy() == 1.0


def test_clip_text_ends_in_eos_and_is_pooled_there(built):
    model, processor = _load(built, "tiny-clip")
    model.eval()
    tokenizer = processor.tokenizer
    inputs = processor(text=["water", "a large portion of developed area"], padding=True, return_tensors="pt")
    lengths = inputs["attention_mask"].sum(dim=1)

    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id != 2
    assert inputs["input_ids"][:, 0].tolist() == [tokenizer.bos_token_id] * 2
    assert inputs["input_ids"][[0, 1], lengths - 1].tolist() == [tokenizer.eos_token_id] * 2
    assert lengths[0] < inputs["input_ids"].shape[1], "the first text must be padded"

    with torch.no_grad():
        text = model.text_model(**inputs)
        embeds = model.get_text_features(**inputs).pooler_output
        # The highest id in the vocabulary, placed in the padding: an argmax-style pooler would move there.
        after_eos = inputs["input_ids"].clone()
        after_eos[0, -1] = len(tokenizer) - 1
        embeds_after_eos = model.get_text_features(input_ids=after_eos, attention_mask=inputs["attention_mask"])
        real_token = inputs["input_ids"].clone()
        real_token[0, 1] = tokenizer("tree", add_special_tokens=False).input_ids[0]
        embeds_real_token = model.get_text_features(input_ids=real_token, attention_mask=inputs["attention_mask"])

    assert torch.equal(text.pooler_output, text.last_hidden_state[[0, 1], lengths - 1])
    assert not torch.allclose(embeds[0], embeds[1], atol=1e-4)
    assert torch.allclose(embeds_after_eos.pooler_output[0], embeds[0])
    assert not torch.allclose(embeds_real_token.pooler_output[0], embeds[0], atol=1e-4)


def test_clip_truncation_keeps_eos(built):
    processor = AutoProcessor.from_pretrained(built["tiny-clip"])
    long_text = " ".join(CORPUS[:20])

    ids = processor(text=[long_text], truncation=True)["input_ids"][0]

    assert len(ids) == processor.tokenizer.model_max_length == 77
    assert ids[-1] == processor.tokenizer.eos_token_id


# --- BLIP-2 ------------------------------------------------------------------------------------------------------


def test_blip2_prepends_query_placeholders_and_trains(built, image):
    model, processor = _load(built, "tiny-blip2")
    inputs = processor(images=image, text=f"Question: {QUESTION} Answer: {ANSWER}", return_tensors="pt")
    input_ids = inputs["input_ids"][0].tolist()

    assert input_ids[:NUM_QUERY_TOKENS] == [model.config.image_token_id] * NUM_QUERY_TOKENS
    assert input_ids[NUM_QUERY_TOKENS] == processor.tokenizer.bos_token_id
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")

    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    loss = model(**inputs, labels=labels).loss

    _assert_trains(model, "tiny-blip2", loss)
    assert _grad_norm(model, "qformer.") > 0
    assert _grad_norm(model, "query_tokens") > 0


def test_blip2_queries_start_distinct(built):
    queries = load_file(built["tiny-blip2"] / "model.safetensors")["query_tokens"][0]

    assert torch.cdist(queries, queries).fill_diagonal_(float("inf")).min() > 0.01


def test_blip2_generates(built, image):
    model, processor = _load(built, "tiny-blip2")
    inputs = processor(images=image, text=f"Question: {QUESTION} Answer:", return_tensors="pt")

    output = model.generate(**inputs, max_new_tokens=5, do_sample=False)

    prompt_length = inputs["input_ids"].shape[1]
    assert torch.equal(output[:, :prompt_length], inputs["input_ids"])
    assert 1 <= output.shape[1] - prompt_length <= 5
    assert processor.decode(output[0, :prompt_length], skip_special_tokens=True) == f"Question: {QUESTION} Answer:"
    assert isinstance(processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)[0], str)


# --- resolve_model -----------------------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch) -> list[int]:
    """Point EARTHVL_CACHE at tmp_path and serve the test corpus as the sample corpus; counts the builds."""
    calls = []

    def sample_corpus(seed: int = 0) -> list[str]:
        calls.append(seed)
        return CORPUS

    monkeypatch.setenv("EARTHVL_CACHE", str(tmp_path))
    monkeypatch.setattr(earthvl.model_names, "sample_corpus", sample_corpus)
    return calls


def test_resolve_model_builds_once_then_reuses(cache, tmp_path):
    first = resolve_model("tiny-clip")
    config = Path(first) / "config.json"
    built_at = config.stat().st_mtime_ns, config.stat().st_ino

    second = resolve_model("tiny-clip")

    assert first == second == str(tmp_path / "tiny" / f"tiny-clip-v{TINY_MODELS_VERSION}")
    assert len(cache) == 1
    assert (config.stat().st_mtime_ns, config.stat().st_ino) == built_at
    assert os.listdir(tmp_path / "tiny") == [f"tiny-clip-v{TINY_MODELS_VERSION}"]
    assert isinstance(CLIPModel.from_pretrained(first), CLIPModel)


def test_resolve_model_leaves_no_folder_after_a_failed_build(cache, tmp_path, monkeypatch):
    def broken_corpus(seed: int = 0) -> list[str]:
        raise RuntimeError("no sample world")

    monkeypatch.setattr(earthvl.model_names, "sample_corpus", broken_corpus)

    with pytest.raises(RuntimeError, match="no sample world"):
        resolve_model("tiny-blip2")

    assert os.listdir(tmp_path / "tiny") == []


@pytest.mark.parametrize("name_or_path", ["llava-hf/llava-1.5-7b-hf", "openai/clip-vit-base-patch32", "./my-model"])
def test_resolve_model_passes_other_names_through(cache, tmp_path, name_or_path):
    assert resolve_model(name_or_path) == name_or_path
    assert not (tmp_path / "tiny").exists()
    assert cache == []


def test_resolve_model_keeps_the_copy_of_a_concurrent_build_that_finished_first(cache, tmp_path, monkeypatch):
    target = tmp_path / "tiny" / f"tiny-clip-v{TINY_MODELS_VERSION}"

    def corpus_while_another_build_finishes(seed: int = 0) -> list[str]:
        target.mkdir()
        (target / "config.json").write_text("{}")
        return CORPUS

    monkeypatch.setattr(earthvl.model_names, "sample_corpus", corpus_while_another_build_finishes)

    assert resolve_model("tiny-clip") == str(target)
    assert os.listdir(tmp_path / "tiny") == [target.name]
    assert os.listdir(target) == ["config.json"]
