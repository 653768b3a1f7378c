"""`earthvl convert geochat` on tiny random checkpoints written in GeoChat's layout, checked against a forward pass
wired the way GeoChat's own code wires the same weights.

The fixture follows GeoChat's released files: config.json with `model_type: geochat` and its `mm_*` fields,
`pytorch_model-0000N-of-00002.bin` shards plus their index, a sentencepiece `tokenizer.model` with a
`LlamaTokenizer` config, and the CLIP vision tower named by `mm_vision_tower` (a local CLIP folder here, which
GeoChat's builder accepts). Sizes are tiny; the resolution step is GeoChat's 336 -> 504 px (24 -> 36 patches per
side) scaled down to 28 -> 42 px (4 -> 6).
"""

import argparse
import io
import json

import numpy as np
import pytest
import sentencepiece
import torch
from geochat_reference import geochat_interpolation
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from earthvl.cli import main as cli
from earthvl.eval.generation import LlavaGenerator
from earthvl.eval_results import read_results
from earthvl.eval.run import predictions_path
from earthvl.models.geochat import REPORT_FILE

# GeoChat's conversation.py, `conv_llava_v1` (what its evaluation scripts and demo use): system prompt, roles and
# separators of SeparatorStyle.TWO.
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES, SEPS = ("USER", "ASSISTANT"), (" ", "</s>")
IMAGE_PLACEHOLDER = -200  # GeoChat's IMAGE_TOKEN_INDEX

TOWER_SIZE, IMAGE_SIZE, PATCH = 28, 42, 7
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, patch_size=PATCH)
LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
VOCAB = 320
GEOCHAT_VISION = "model.vision_tower.vision_tower."


def _convert(*options):
    return cli(["convert", "geochat", "--dtype", "float32", "--image_size", str(IMAGE_SIZE), *map(str, options)])


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    """What `mm_vision_tower` names: a CLIP checkpoint (both towers, as openai/clip-vit-large-patch14-336) with its
    image processor (shorter side and crop at the tower's size, bicubic, OpenAI's mean and std)."""
    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(1)
    config = CLIPConfig(
        vision_config={**VISION, "image_size": TOWER_SIZE},
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=99),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(
        size={"shortest_edge": TOWER_SIZE},
        crop_size={"height": TOWER_SIZE, "width": TOWER_SIZE},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sp_model():
    """A Llama-style sentencepiece model (<unk>=0, <s>=1, </s>=2, byte fallback) trained on GeoChat's prompts."""
    corpus = [SYSTEM, "USER: ASSISTANT: Classify the image from the following classes: forest, water, crops."] * 10
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=VOCAB, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    return model.getvalue()


def _geochat_config(tower):
    return {
        "architectures": ["GeoChatLlamaForCausalLM"], "model_type": "geochat", "transformers_version": "4.31.0",
        **LLAMA, "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_scaling": None,
        "initializer_range": 0.02, "pretraining_tp": 1, "tie_word_embeddings": False, "torch_dtype": "float16",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "vocab_size": VOCAB, "use_cache": True,
        "mm_vision_tower": str(tower), "mm_hidden_size": VISION["hidden_size"], "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "image_aspect_ratio": "pad", "image_grid_pinpoints": None, "use_mm_proj": True,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
    }  # fmt: skip


def _tower_vision_weights(tower):
    """The tower's `vision_model.*` weights as a transformers 4.31 CLIPVisionModel names them."""
    return {k: v for k, v in load_file(tower / "model.safetensors").items() if k.startswith("vision_model.")}


def write_geochat(folder, tower, sp_model, *, vision="504", extra=None, drop=(), shards=2, rotary=True, fmt="bin"):
    """A random GeoChat checkpoint: `vision` is "504" (the tower stored after GeoChat's interpolation, like the
    released merge), "336" (stored before it) or "none" (not stored; GeoChat rebuilds it from mm_vision_tower).
    `fmt` "bin" writes torch pickles as the Hub repo has them, "safetensors" safetensors shards."""
    folder.mkdir(parents=True)
    config = _geochat_config(tower)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.model").write_bytes(sp_model)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": 2048, "padding_side": "right", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<unk>", "clean_up_tokenization_spaces": False, "sp_model_kwargs": {},
    }))  # fmt: skip
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    )
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(**LLAMA, vocab_size=VOCAB, max_position_embeddings=4096))
    weights = {k: v.clone() for k, v in llm.state_dict().items()}
    for key in list(weights):  # spread the norms and embeddings so that a misplaced weight shows in the logits
        if key.endswith("norm.weight"):
            weights[key] = 1 + 0.1 * torch.randn_like(weights[key])
    hidden, mm_hidden = LLAMA["hidden_size"], VISION["hidden_size"]
    weights |= {
        "model.mm_projector.0.weight": 0.2 * torch.randn(hidden, mm_hidden),
        "model.mm_projector.0.bias": 0.1 * torch.randn(hidden),
        "model.mm_projector.2.weight": 0.2 * torch.randn(hidden, hidden),
        "model.mm_projector.2.bias": 0.1 * torch.randn(hidden),
    }
    if rotary:  # transformers 4.31 checkpoints may carry the rotary buffers
        head = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
        for layer in range(LLAMA["num_hidden_layers"]):
            weights[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = 1 / 10000 ** (torch.arange(0, head, 2) / head)
    if vision != "none":
        for key, value in _tower_vision_weights(tower).items():
            if key.endswith("position_embedding.weight") and vision == "504":
                value = geochat_interpolation(value, IMAGE_SIZE // PATCH)
            weights[GEOCHAT_VISION + key] = value
        positions = (IMAGE_SIZE // PATCH) ** 2 + 1 if vision == "504" else (TOWER_SIZE // PATCH) ** 2 + 1
        weights[GEOCHAT_VISION + "vision_model.embeddings.position_ids"] = torch.arange(positions)[None]
    weights |= extra or {}
    for key in drop:
        del weights[key]
    keys = sorted(weights)
    index = {}
    for shard in range(shards):
        part = {k: weights[k] for k in keys[shard::shards]}
        if fmt == "bin":
            name = f"pytorch_model-{shard + 1:05d}-of-{shards:05d}.bin"
            torch.save(part, folder / name)
        else:
            name = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: v.contiguous() for k, v in part.items()}, folder / name)
        index |= dict.fromkeys(part, name)
    index_file = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
    (folder / index_file).write_text(json.dumps({"metadata": {}, "weight_map": index}))
    return weights


def reference_logits(weights, config, tower, input_ids, image):
    """GeoChat's forward assembled from transformers' CLIPVisionModel, an nn.Sequential projector and
    LlamaForCausalLM: hidden states of mm_vision_select_layer without the class token, projected and spliced in
    place of the placeholder id. Images are preprocessed as GeoChat's scripts do (the tower's processor, shorter side
    and crop set to 504, here 42)."""
    vision_config = CLIPVisionConfig.from_pretrained(tower)
    vision_config.image_size = IMAGE_SIZE
    vision = CLIPVisionModel(vision_config).eval()
    stored = {k[len(GEOCHAT_VISION) :]: v for k, v in weights.items() if k.startswith(GEOCHAT_VISION)}
    if not stored:  # GeoChat's loader: CLIPVisionModel.from_pretrained(mm_vision_tower), then interpolation
        stored = _tower_vision_weights(tower)
    stored.pop("vision_model.embeddings.position_ids", None)
    position = "vision_model.embeddings.position_embedding.weight"
    if stored[position].shape[0] != (IMAGE_SIZE // PATCH) ** 2 + 1:
        stored[position] = geochat_interpolation(stored[position], IMAGE_SIZE // PATCH)
    if "vision_model.embeddings.class_embedding" not in vision.state_dict():  # transformers 5 drops the prefix
        stored = {k.removeprefix("vision_model."): v for k, v in stored.items()}
    vision.load_state_dict(stored)
    hidden = LLAMA["hidden_size"]
    projector = nn.Sequential(nn.Linear(config["mm_hidden_size"], hidden), nn.GELU(), nn.Linear(hidden, hidden))
    projector.load_state_dict(
        {k.removeprefix("model.mm_projector."): v for k, v in weights.items() if k.startswith("model.mm_projector.")}
    )
    llm = LlamaForCausalLM(LlamaConfig(**LLAMA, vocab_size=VOCAB, max_position_embeddings=4096, rms_norm_eps=1e-5))
    multimodal = ("model.mm_projector", "model.vision_tower")
    llm.eval().load_state_dict({
        k: v for k, v in weights.items()
        if k.startswith(("model.", "lm_head.")) and not k.startswith(multimodal) and "rotary_emb" not in k
    })  # fmt: skip
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    pixels = CLIPImageProcessor.from_pretrained(tower).preprocess(
        image, size={"shortest_edge": IMAGE_SIZE}, crop_size=crop, return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        features = vision(pixels, output_hidden_states=True).hidden_states[config["mm_vision_select_layer"]][:, 1:]
        image_embeds = projector(features)[0]
        at = input_ids.index(IMAGE_PLACEHOLDER)
        embed = llm.get_input_embeddings()
        before, after = embed(torch.tensor(input_ids[:at])), embed(torch.tensor(input_ids[at + 1 :]))
        embeds = torch.cat([before, image_embeds, after])
        return llm(inputs_embeds=embeds[None]).logits[0]


def _image(seed=0, size=(50, 40)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _converted_logits(out, messages, image):
    model = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(out)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    ids = inputs["input_ids"][0].tolist()
    image_id = model.config.image_token_id
    first = ids.index(image_id)
    count = ids.count(image_id)
    assert ids[first : first + count] == [image_id] * count  # one run of image tokens
    geochat_ids = ids[:first] + [IMAGE_PLACEHOLDER] + ids[first + count :]
    return logits, geochat_ids, count


MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Classify the image."}]}]


@pytest.mark.parametrize(
    ("vision", "fmt", "reload"),
    [("504", "bin", False), ("336", "bin", False), ("none", "safetensors", False), ("504", "bin", True)],
)
def test_converted_logits_equal_geochats_forward(vision, fmt, reload, tower, sp_model, tmp_path):
    src, out = tmp_path / "geochat", tmp_path / "llava"
    # With --reload_vision_tower the stored tower is replaced by mm_vision_tower's: make the two differ.
    changed = {GEOCHAT_VISION + "vision_model.pre_layrnorm.weight": torch.randn(VISION["hidden_size"])} if reload else {}
    weights = write_geochat(src, tower, sp_model, vision=vision, fmt=fmt, extra=changed)
    assert _convert("--src", src, "--out", out, *["--reload_vision_tower"] * reload) == 0

    report = json.loads((out / REPORT_FILE).read_text())
    assert set(report["renamed"]) | set(report["dropped"]) >= set(weights)  # every key accounted for
    assert not set(report["renamed"]) & set(report["dropped"])
    assert all(report["dropped"].values())
    rotary = {k for k in weights if k.endswith("rotary_emb.inv_freq")}
    assert rotary and rotary <= set(report["dropped"])
    stored_tower = {k for k in weights if k.startswith(GEOCHAT_VISION)}
    if vision == "none" or reload:  # the tower's own weights are renamed, its text tower listed as dropped
        assert any(k.startswith(f"{tower}:") and k.endswith("encoder.layers.0.mlp.fc1.weight") for k in report["renamed"])
        assert any(":text_model." in k for k in report["dropped"])
        replaced = stored_tower - {GEOCHAT_VISION + "vision_model.embeddings.position_ids"}
        assert all("replaced by the weights of" in report["dropped"][k] for k in replaced)
        weights = {k: v for k, v in weights.items() if k not in stored_tower}  # what GeoChat's loader runs
    else:
        assert GEOCHAT_VISION + "vision_model.embeddings.position_ids" in report["dropped"]
    interpolated = vision != "504" or reload
    assert [("interpolated" in c) == interpolated for c in report["changes"] if "position_embedding" in c] == [True]

    config = json.loads((src / "config.json").read_text())
    logits, geochat_ids, image_tokens = _converted_logits(out, MESSAGES, _image())
    assert image_tokens == (IMAGE_SIZE // PATCH) ** 2  # patches only: the class token is dropped
    expected = reference_logits(weights, config, tower, geochat_ids, _image())
    assert logits.shape[0] == expected.shape[0]
    torch.testing.assert_close(logits[:, :VOCAB], expected, atol=2e-5, rtol=1e-4)


def test_config_tokenizer_and_processor_follow_geochat_and_llava_hf(tower, sp_model, tmp_path):
    src, out = tmp_path / "geochat", tmp_path / "llava"
    weights = write_geochat(src, tower, sp_model, vision="504")
    assert _convert("--src", src, "--out", out, "--dtype", "float16") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["image_token_index"] == VOCAB and config["text_config"]["pad_token_id"] == VOCAB + 1
    assert config["text_config"]["vocab_size"] == 384  # VOCAB + 2 rounded up to a multiple of 64, as llava-hf
    assert config["vision_feature_layer"] == -2 and config["vision_feature_select_strategy"] == "default"
    assert config["image_seq_length"] == (IMAGE_SIZE // PATCH) ** 2 and config["vision_config"]["image_size"] == IMAGE_SIZE
    assert config["projector_hidden_act"] == "gelu" and config["text_config"]["tie_word_embeddings"] is False
    assert not list(out.glob("*.bin")) and list(out.glob("*.safetensors"))

    model = LlavaForConditionalGeneration.from_pretrained(out)
    assert model.dtype == torch.float16
    embed = model.get_input_embeddings().weight.float()
    original = weights["model.embed_tokens.weight"]
    torch.testing.assert_close(embed[:VOCAB], original.half().float())
    torch.testing.assert_close(embed[VOCAB:], original.mean(0).half().float().expand(384 - VOCAB, -1))

    processor = AutoProcessor.from_pretrained(out)
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<image>", "<pad>"]) == [0, 1, 2, VOCAB, VOCAB + 1]
    assert tokenizer.pad_token == "<pad>" and len(tokenizer) == VOCAB + 2
    image_processor = processor.image_processor
    assert image_processor.size["shortest_edge"] == IMAGE_SIZE
    assert (image_processor.crop_size["height"], image_processor.crop_size["width"]) == (IMAGE_SIZE, IMAGE_SIZE)
    assert image_processor.resample == 3 and list(image_processor.image_mean) == pytest.approx(OPENAI_CLIP_MEAN)
    assert not getattr(image_processor, "do_pad", False)


def _geochat_prompt(turns):
    """Conversation.get_prompt for SeparatorStyle.TWO, as in GeoChat's conversation.py; the tokenizer's <s> first."""
    prompt = SYSTEM + SEPS[0]
    for i, (role, message) in enumerate(turns):
        prompt += f"{role}: {message}{SEPS[i % 2]}" if message else f"{role}:"
    return "<s>" + prompt


def test_chat_template_renders_geochats_conversation_and_trains_on_answers_with_eos(tower, sp_model, tmp_path):
    src, out = tmp_path / "geochat", tmp_path / "llava"
    write_geochat(src, tower, sp_model, vision="504")
    assert _convert("--src", src, "--out", out) == 0
    processor = AutoProcessor.from_pretrained(out)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A forest."}]},
        {"role": "user", "content": [{"type": "text", "text": "Is there water?"}]},
    ]
    turns = [(ROLES[0], "<image>\nWhat is in the image?"), (ROLES[1], "A forest."), (ROLES[0], "Is there water?")]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == _geochat_prompt([*turns, (ROLES[1], None)])
    answered = [*messages, {"role": "assistant", "content": "No."}]
    assert processor.apply_chat_template(answered) == _geochat_prompt([*turns, (ROLES[1], "No.")])
    own_system = [{"role": "system", "content": "Be brief."}, *messages]
    assert processor.apply_chat_template(own_system, add_generation_prompt=True).startswith("<s>Be brief. USER: <image>\n")

    with_image = [{**answered[0], "content": [{"type": "image", "image": _image()}, answered[0]["content"][1]]}, *answered[1:]]
    tokens = processor.apply_chat_template(with_image, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = tokens["input_ids"][0], tokens["assistant_masks"][0]
    tokenizer = processor.tokenizer
    trained = [t for t, m in zip(ids, mask) if m]
    assert tokenizer.decode(trained) == "A forest.</s> No.</s>"  # the decoder drops the answers' leading space
    assert trained[-1] == tokenizer.eos_token_id and trained.count(tokenizer.eos_token_id) == 2
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_eval_prompt_has_one_bos_and_geochats_text(tower, sp_model, tmp_path):
    src, out = tmp_path / "geochat", tmp_path / "llava"
    write_geochat(src, tower, sp_model, vision="504")
    assert _convert("--src", src, "--out", out) == 0
    model = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(out)
    seen = {}

    def record(**inputs):
        seen.update(inputs)
        return inputs["input_ids"]

    model.generate = record
    LlavaGenerator(model, processor, "Classify the image.", max_new_tokens=1)([_image()])
    ids = seen["input_ids"][0].tolist()
    tokenizer = processor.tokenizer
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    text = tokenizer.decode([i for i in ids if i != model.config.image_token_id])
    assert text == _geochat_prompt([(ROLES[0], "\nClassify the image."), (ROLES[1], None)])


def test_eval_classify_runs_on_the_converted_model(tower, sp_model, sample_world, tmp_path):
    src, out = tmp_path / "geochat", tmp_path / "llava"
    write_geochat(src, tower, sp_model, vision="336")
    assert _convert("--src", src, "--out", out) == 0
    results_file = tmp_path / "scenes.json"
    assert cli([
        "eval", "classify", "--model", str(out), "--dataset", str(sample_world.scenes), "--num_workers", "0",
        "--max_samples", "3", "--max_new_tokens", "3", "--out", str(results_file),
    ]) == 0  # fmt: skip
    results = read_results(results_file)
    assert results["model"]["family"] == "vlm" and results["dataset"]["num_samples"] == 3
    rows = [json.loads(line) for line in predictions_path(results_file).read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(row["answer"], str) for row in rows)
    names = results["settings"]["class_names"]
    hits = sum(row["predicted"] == row["label"] for row in rows)
    assert results["metrics"]["geochat"]["acc1"] == pytest.approx(hits / 3)
    assert all(row["predicted"] is None or names[row["predicted"]] for row in rows)


def _one_error_line(stderr):
    """earthvl's message is the last line of stderr and the only one of its kind (transformers may warn before)."""
    lines = stderr.splitlines()
    return [line for line in lines if line.startswith("earthvl convert geochat: error:")] == lines[-1:]


def _error_of(capsys, *options):
    code = _convert(*options)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "model.layers.1.mlp.up_proj.weight"),
        ("shape", "model.mm_projector.2.weight"),
        ("unknown", "model.extra_head.weight"),
        ("pickle", "holds Python objects besides tensors"),
        ("not_geochat", "not 'geochat'"),
        ("no_weights", "has no weights"),
    ],
)
def test_bad_checkpoints_are_refused_with_one_line(case, needle, tower, sp_model, tmp_path, capsys):
    src = tmp_path / "geochat"
    options = {
        "missing": dict(drop=["model.layers.1.mlp.up_proj.weight"]),
        "shape": dict(extra={"model.mm_projector.2.weight": torch.zeros(3, 3)}),
        "unknown": dict(extra={"model.extra_head.weight": torch.zeros(2)}),
    }.get(case, {})
    write_geochat(src, tower, sp_model, **options)
    if case == "pickle":
        shard = {"model.norm.weight": torch.ones(2), "args": argparse.Namespace(lr=1)}
        torch.save(shard, src / "pytorch_model-00001-of-00002.bin")
    elif case == "not_geochat":
        (src / "config.json").write_text(json.dumps({**_geochat_config(tower), "model_type": "llava"}))
    elif case == "no_weights":
        for path in src.glob("*.bin"):
            path.unlink()
    code, err = _error_of(capsys, "--src", src, "--out", tmp_path / "out")
    assert code == 2
    assert needle in err.splitlines()[-1] and _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_refuses_to_write_into_a_non_empty_folder(tower, sp_model, tmp_path, capsys):
    src, out = tmp_path / "geochat", tmp_path / "llava"
    write_geochat(src, tower, sp_model)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _error_of(capsys, "--src", src, "--out", out)
    assert code == 2 and _one_error_line(err) and "--overwrite" in err and (out / "keep.txt").read_text() == "mine"
