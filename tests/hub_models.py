"""Offline replicas of the Hub checkpoints earthvl names (see tests/hub/README.md).

`tests/hub/<org>--<name>/` holds the real repositories' JSON files (configs, processor settings, chat template,
tokenizer settings) with only the hidden sizes and layer counts shrunk. `hub_model` copies such a folder and adds
what would be too large to keep in git: a tokenizer with the real special-token layout (the special tokens at their
real ids, a small BPE learned on the sample corpus, filler tokens up to the real vocabulary size) and seeded random
safetensors weights built from the checked-in config. The JSON files are copied unchanged, so every code path reads
them exactly as it would read the real repository.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, Blip2ForConditionalGeneration, CLIPModel, LlavaForConditionalGeneration

HUB = Path(__file__).parent / "hub"
LLAVA, CLIP_B32, CLIP_L336, BLIP2 = (
    "llava-hf/llava-1.5-7b-hf",
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-large-patch14-336",
    "Salesforce/blip2-opt-2.7b",
)
HUB_MODELS = (LLAVA, CLIP_B32, CLIP_L336, BLIP2)
SEED = 0
LEARNED_VOCAB = 1200
"""Tokens the fixture BPE learns on the sample corpus; the rest of the real vocabulary is filler."""

_MODEL_CLASSES = {
    "LlavaForConditionalGeneration": LlavaForConditionalGeneration,
    "CLIPModel": CLIPModel,
    "Blip2ForConditionalGeneration": Blip2ForConditionalGeneration,
}
_LLAMA_TEXT_VOCAB = 32000  # Vicuna's sentencepiece vocabulary: <unk>, <s>, </s>, 256 byte tokens, pieces
_CLIP_VOCAB = 49408  # 256 bytes, 256 bytes + </w>, merges, <|startoftext|> 49406, <|endoftext|> 49407
_OPT_VOCAB = 50265  # <s> 0, <pad> 1, </s> 2, <unk> 3, GPT-2 BPE reordered; "\n" (Ċ) at 50118
_OPT_NEWLINE = 50118


def folder_name(name: str) -> str:
    return name.replace("/", "--")


def hub_model(name: str, out: str | Path, corpus: list[str] | None = None) -> Path:
    """Write the replica of the Hub repository `name` into `out` (created) and return it."""
    source = HUB / folder_name(name)
    if not source.is_dir():
        raise ValueError(f"no Hub fixture for {name}: have {', '.join(HUB_MODELS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.json"):
        shutil.copy(path, out / path.name)
    corpus = corpus if corpus is not None else _default_corpus()
    config = json.loads((source / "config.json").read_text())
    if config["model_type"] == "llava":
        _llama_tokenizer(corpus).save(str(out / "tokenizer.json"))
    elif config["model_type"] == "clip":
        _write_bpe_files(_clip_tokenizer(corpus), out)
    else:
        _write_bpe_files(_opt_tokenizer(corpus), out)
    _write_weights(out, config)
    return out


def hub_id(replica: Callable[[str], Path], name: str) -> str:
    """`name`, once `replica` (the `hub_replica` fixture) has built it and made the id resolve offline."""
    replica(name)
    return name


def install_in_cache(folder: str | Path, name: str, cache: str | Path) -> Path:
    """Lay `folder` out in the Hugging Face cache `cache` as the snapshot of the model repo `name`, so that with
    `HF_HUB_OFFLINE=1` `from_pretrained(name)` (and everything else that resolves Hub ids) finds it there."""
    repo = Path(cache) / f"models--{folder_name(name)}"
    commit = hashlib.sha1(name.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        shutil.copytree(folder, snapshot)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return snapshot


def _default_corpus() -> list[str]:
    from earthvl.sample import sample_corpus

    return sample_corpus()


# --- tokenizers ---------------------------------------------------------------------------------------------------


def _learn(corpus: list[str], backend: Tokenizer, trainer: trainers.BpeTrainer) -> tuple[list[str], list[tuple[str, str]]]:
    """The tokens (in learned order) and merges a BPE learns on `corpus` with `backend`'s normalizer and pre-tokenizer."""
    backend.train_from_iterator(corpus, trainer)
    learned = json.loads(backend.to_str())["model"]
    tokens = [token for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1])]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in learned["merges"]]
    return tokens, merges


def _fill(vocab: dict[str, int], size: int) -> None:
    """Filler tokens (never produced: no merge builds them) up to `size` entries."""
    index = 0
    while len(vocab) < size:
        token = f"<filler_{index}>"
        index += 1
        if token not in vocab:
            vocab[token] = len(vocab)


def _llama_tokenizer(corpus: list[str]) -> Tokenizer:
    """Vicuna's layout: <unk> 0, <s> 1, </s> 2, byte-fallback tokens <0x00>..<0xFF> 3-258, sentencepiece-style
    pieces, 32000 entries; <image> 32000 and <pad> 32001 added as llava-hf's conversion added them (transformers 5
    loads llava-hf's tokenizer.json as is, as a `TokenizersBackend`)."""
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokens, merges = _learn(corpus, learner, trainers.BpeTrainer(vocab_size=LEARNED_VOCAB, show_progress=False))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    _fill(vocab, _LLAMA_TEXT_VOCAB)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    # The pipeline transformers' LlamaConverter wrote into llava-hf's tokenizer.json (which transformers 5 loads as
    # is for model type llava): every text segment between special tokens gets a leading "▁".
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>", "<image>", "<pad>")])
    return backend


def _clip_tokenizer(corpus: list[str]) -> Tokenizer:
    """OpenAI CLIP's layout: the 256 byte symbols, the same with </w>, merges, <|startoftext|> 49406 and
    <|endoftext|> 49407 last (the text tower pools at the highest id)."""
    learner = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    learner.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=LEARNED_VOCAB, end_of_word_suffix="</w>", initial_alphabet=alphabet, show_progress=False
    )
    tokens, merges = _learn(corpus, learner, trainer)
    symbols = sorted(alphabet, key=_byte_order)
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab.update({symbol + "</w>": 256 + index for index, symbol in enumerate(symbols)})
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    _fill(vocab, _CLIP_VOCAB - 2)
    vocab["<|startoftext|>"] = _CLIP_VOCAB - 2
    vocab["<|endoftext|>"] = _CLIP_VOCAB - 1
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=True) for t in ("<|startoftext|>", "<|endoftext|>")])
    return backend


def _byte_order(symbol: str) -> int:
    """Position of a byte-level symbol in GPT-2/CLIP's `bytes_to_unicode` order (printable bytes first)."""
    code = ord(symbol)
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    return printable.index(code) if code in printable else len(printable) + code - 256


def _opt_tokenizer(corpus: list[str]) -> Tokenizer:
    """OPT's layout: <s> 0, <pad> 1, </s> 2, <unk> 3, byte-level BPE with "\\n" (Ċ) at 50118, 50265 entries;
    BLIP-2's <image> 50265 added."""
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=LEARNED_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokens, merges = _learn(corpus, learner, trainer)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token in tokens:
        if token != "Ċ":
            vocab.setdefault(token, len(vocab))
    _fill(vocab, _OPT_NEWLINE)
    vocab["Ċ"] = _OPT_NEWLINE
    _fill(vocab, _OPT_VOCAB)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", 2)])
    backend.add_special_tokens([AddedToken("<pad>", special=True), AddedToken("</s>", special=True)])
    backend.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    return backend


def _write_bpe_files(backend: Tokenizer, out: Path) -> None:
    """tokenizer.json, and the vocab.json / merges.txt pair that GPT-2-style repositories also carry."""
    backend.save(str(out / "tokenizer.json"))
    model = json.loads(backend.to_str())["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


# --- weights ------------------------------------------------------------------------------------------------------


def _write_weights(out: Path, config_json: dict) -> None:
    """Seeded random weights of the architecture `config.json` names, in its dtype, as `model.safetensors` only (no
    other file of the folder is rewritten)."""
    config = AutoConfig.from_pretrained(out)
    model_class = _MODEL_CLASSES[config_json["architectures"][0]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class._from_config(config, dtype=torch.float32)
        _trained_looking(model)
    dtype = config_json.get("torch_dtype")
    if dtype:
        model = model.to(getattr(torch, dtype))
    with tempfile.TemporaryDirectory() as staging:
        model.save_pretrained(staging, safe_serialization=True)
        for path in Path(staging).glob("*.safetensors"):
            shutil.move(str(path), out / path.name)
        index = Path(staging) / "model.safetensors.index.json"
        if index.is_file():
            shutil.move(str(index), out / index.name)


def _trained_looking(model: torch.nn.Module) -> None:
    """Weights that no real checkpoint leaves at their init-time constants: BLIP-2's query tokens (zeros) and vision
    tower (initializer_range 1e-10) drawn like every other weight."""
    with torch.no_grad():
        if isinstance(model, Blip2ForConditionalGeneration):
            model.query_tokens.normal_(std=0.02)
            for module in model.vision_model.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                    module.weight.normal_(std=0.02)
            model.vision_model.embeddings.class_embedding.normal_(std=0.02)
            model.vision_model.embeddings.position_embedding.normal_(std=0.02)
