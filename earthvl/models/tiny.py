"""Tiny but real Hugging Face vision-language models, built offline in seconds.

Each builder writes an ordinary model folder (safetensors weights, config, processor, tokenizer) that the usual
``*.from_pretrained`` classes and ``AutoProcessor`` reload. The weights are random, yet the architectures are the
real ones (LLaVA-1.5, CLIP, BLIP-2) at a size that trains on a CPU, so tests, the quickstart and demos can run
without the Hub and fine-tuning visibly moves them.

All three models share one byte-level BPE tokenizer trained on a corpus the caller hands in (the sample world's
texts, `earthvl.sample.sample_corpus`); `earthvl.model_names.resolve_model` turns the names in ``TINY_MODELS`` into
cached builds.
"""

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    BlipImageProcessorPil,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaForConditionalGeneration,
    OPTConfig,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from earthvl.models.families import BLIP2, CLIP, VLM
from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE
from earthvl.models.llava import llava15_config, llava15_processor

# Part of the cache folder name: bump it whenever a builder, a size below or the default corpus changes, so that
# `resolve_model` stops serving folders built by older code.
TINY_MODELS_VERSION = 2
SEED = 0

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN = "<pad>", "<unk>", "<s>", "</s>", "<image>"
# The order fixes the ids (0..4). Keep eos away from id 2: CLIP's text tower treats `eos_token_id == 2` as a legacy
# config and then pools at the highest token id instead of at the eos token.
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN)

IMAGE_SIZE = 64
PATCH_SIZE = 8
VISION: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH_SIZE,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
# LLaVA reads the penultimate vision layer (vision_feature_layer=-2), so its tower gets one layer more than VISION
# to keep two layers in use.
LLAVA_VISION_LAYERS = VISION["num_hidden_layers"] + 1
LLAMA: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}
CLIP_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
}
CLIP_PROJECTION_DIM = 64
QFORMER: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
OPT: dict[str, Any] = {
    "hidden_size": 128,
    "ffn_dim": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
    # Real checkpoints have trained embeddings. At the usual std of 0.02, OPT's tied, frozen word embeddings would cap
    # every logit near 2.5 and leave LoRA on the attention (the GAIA placement) unable to learn a caption.
    "init_std": 0.15,
}
NUM_QUERY_TOKENS = 8
INITIALIZER_RANGE = 0.02

_ConfigT = TypeVar("_ConfigT", bound=PreTrainedConfig)
_ModelT = TypeVar("_ModelT", bound=PreTrainedModel)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus``; it encodes any text without ``<unk>``.

    The result prepends ``<s>``, knows ``<pad>``, ``</s>``, ``<unk>`` and the ``<image>`` placeholder
    (``tokenizer.image_token``) and carries the LLaVA-1.5 chat template. The same corpus always gives the same
    tokenizer. ``vocab_size`` is an upper bound: a small corpus yields fewer merges.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} cannot hold the {len(alphabet)} bytes and {len(SPECIAL_TOKENS)} special tokens"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    return _wrap_tokenizer(backend, chat_template=LLAVA_CHAT_TEMPLATE)


def _wrap_tokenizer(
    backend: Tokenizer,
    *,
    add_eos_token: bool = False,
    model_max_length: int | None = None,
    chat_template: str | None = None,
    name_image_token: bool = True,
) -> PreTrainedTokenizerFast:
    """A transformers tokenizer over (a copy of) ``backend`` with earthvl's special tokens and options.

    ``name_image_token`` exposes ``<image>`` as ``tokenizer.image_token``/``image_token_id``, which the LLaVA
    processor reads; otherwise ``<image>`` stays an unnamed special token.
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN} if name_image_token else [IMAGE_TOKEN],
        add_bos_token=True,
        add_eos_token=add_eos_token,
    )
    # Set afterwards rather than passed in: init arguments are echoed into tokenizer_config.json, even when None.
    tokenizer.chat_template = chat_template
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    return tokenizer


def build_tiny_llava(out_dir: str | os.PathLike, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Build a LLaVA-1.5-style model (CLIP vision tower, GELU projector, Llama decoder) into ``out_dir``."""
    tokenizer = _wrap_tokenizer(
        tokenizer.backend_tokenizer,
        model_max_length=LLAMA["max_position_embeddings"],
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    config = llava15_config(
        CLIPVisionConfig(**{**VISION, "num_hidden_layers": LLAVA_VISION_LAYERS}),
        LlamaConfig(**LLAMA, vocab_size=len(tokenizer), **_special_token_ids(tokenizer)),
        tokenizer.image_token_id,
    )
    processor = llava15_processor(_clip_image_processor(), tokenizer, PATCH_SIZE)
    return _save(_seeded(LlavaForConditionalGeneration, config), processor, out_dir)


def build_tiny_clip(out_dir: str | os.PathLike, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Build a CLIP dual encoder into ``out_dir``; its tokenizer wraps every text as ``<s> ... </s>``.

    The text tower pools at the first ``eos_token_id`` of each sequence, so the trailing ``</s>`` is what the
    text embedding reads.
    """
    tokenizer = _wrap_tokenizer(
        tokenizer.backend_tokenizer,
        add_eos_token=True,
        model_max_length=CLIP_TEXT["max_position_embeddings"],
    )
    config = CLIPConfig(
        text_config=CLIPTextConfig(**CLIP_TEXT, vocab_size=len(tokenizer), **_special_token_ids(tokenizer)),
        vision_config=CLIPVisionConfig(**VISION),
        projection_dim=CLIP_PROJECTION_DIM,
    )
    processor = CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tokenizer)
    return _save(_seeded(CLIPModel, config), processor, out_dir)


def build_tiny_blip2(out_dir: str | os.PathLike, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Build a BLIP-2 model (ViT, Q-Former with ``NUM_QUERY_TOKENS`` queries, OPT decoder) into ``out_dir``."""
    # Blip2Processor takes a named `tokenizer.image_token` for an AddedToken and calls `.content` on it, but named
    # tokens come back as str; without one it registers `<image>` (already in the vocabulary) itself.
    tokenizer = _wrap_tokenizer(
        tokenizer.backend_tokenizer,
        model_max_length=OPT["max_position_embeddings"],
        name_image_token=False,
    )
    image_token_id = tokenizer.added_tokens_encoder[IMAGE_TOKEN]
    config = Blip2Config(
        # Blip2VisionConfig defaults to initializer_range=1e-10, which would start the tower at all-zero weights.
        vision_config=Blip2VisionConfig(**VISION, initializer_range=INITIALIZER_RANGE),
        qformer_config=Blip2QFormerConfig(**QFORMER, encoder_hidden_size=VISION["hidden_size"]),
        text_config=OPTConfig(
            **OPT,
            word_embed_proj_dim=OPT["hidden_size"],
            vocab_size=len(tokenizer),
            **_special_token_ids(tokenizer),
        ),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=image_token_id,
        initializer_range=INITIALIZER_RANGE,
    )
    image_processor = BlipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    return _save(_seeded(_blip2_with_distinct_queries, config), processor, out_dir)


def _blip2_with_distinct_queries(config: Blip2Config) -> Blip2ForConditionalGeneration:
    """BLIP-2 with its query tokens drawn at random, as in the original BLIP-2 initialisation.

    transformers initialises them to zeros (real checkpoints overwrite them); identical queries get identical
    gradients and so would never tell apart, leaving the Q-Former a single effective query.
    """
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_(mean=0.0, std=config.initializer_range)
    return model


def _special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _clip_image_processor() -> CLIPImageProcessorPil:
    # The PIL backend (what `CLIPImageProcessor` falls back to without torchvision) preprocesses identically on
    # every machine, with or without torchvision.
    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


def _seeded(factory: Callable[[_ConfigT], _ModelT], config: _ConfigT) -> _ModelT:
    """``factory(config)`` with weights drawn from a fixed seed, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return factory(config)


def _save(model: PreTrainedModel, processor: ProcessorMixin, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


_BUILDERS: dict[str, Callable[[str | os.PathLike, PreTrainedTokenizerFast], Path]] = {
    VLM.tiny_model: build_tiny_llava,
    CLIP.tiny_model: build_tiny_clip,
    BLIP2.tiny_model: build_tiny_blip2,
}
TINY_MODELS = tuple(_BUILDERS)  # ("tiny-llava", "tiny-clip", "tiny-blip2")


def build_all(out_dir: str | os.PathLike, corpus: Iterable[str]) -> dict[str, Path]:
    """Build every tiny model into ``out_dir/<name>`` with one tokenizer trained on ``corpus``."""
    tokenizer = build_tokenizer(corpus)
    return {name: build(Path(out_dir) / name, tokenizer) for name, build in _BUILDERS.items()}


def build_tiny(name: str, out_dir: str | os.PathLike, corpus: Iterable[str]) -> Path:
    """Build the tiny model ``name`` (one of ``TINY_MODELS``) into ``out_dir`` with a tokenizer trained on ``corpus``."""
    return _BUILDERS[name](out_dir, build_tokenizer(corpus))
