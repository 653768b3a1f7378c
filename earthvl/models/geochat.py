"""GeoChat checkpoints converted into plain transformers LLaVA folders that load without GeoChat's code.

GeoChat (`MBZUAI/geochat-7B`) is LLaVA-1.5-7B fine-tuned on remote-sensing instructions and released as a
`GeoChatLlamaForCausalLM` checkpoint for transformers 4.31 (config `model_type: "geochat"`, `.bin` shards). Its
layout, as GeoChat's model code builds it:

- the Llama decoder at `model.embed_tokens`, `model.layers.*`, `model.norm` and `lm_head`;
- the projector `model.mm_projector`, `Sequential(Linear(mm_hidden_size, hidden), GELU, Linear(hidden, hidden))`
  (`mm_projector_type: mlp2x_gelu`), hence its keys `.0.` and `.2.`;
- the CLIP vision tower named by `mm_vision_tower` (CLIP ViT-L/14-336) at
  `model.vision_tower.vision_tower.vision_model.*`, run at 504 px: whenever GeoChat builds the tower it interpolates
  the 24x24 patch position embeddings to 36x36 (bicubic, corners aligned, class token kept), and its loader builds
  the tower afresh from `mm_vision_tower` after reading the checkpoint, so a checkpoint may hold the tower at 336 px,
  at 504 px, or not at all;
- image features: the hidden states of layer `mm_vision_select_layer` (-2) without the class token
  (`mm_vision_select_feature: patch`), 1296 per image, put in place of the prompt's image placeholder (id -200,
  outside the vocabulary).

`convert_geochat` maps every weight to `LlavaForConditionalGeneration`'s names (or lists it as dropped, with the
reason), adds `<image>` and `<pad>` to the tokenizer after the last token (32000 and 32001 for GeoChat-7B, as
llava-hf does), and saves safetensors with a `LlavaProcessor` that reproduces GeoChat's evaluation inputs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import (
    AutoTokenizer,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
)

from earthvl.atomic import staged_dir
from earthvl.errors import EarthvlError
from earthvl.models.chat_templates import GEOCHAT_CHAT_TEMPLATE
from earthvl.models.llava import llava15_config, llava15_processor
from earthvl.models.vision import interpolate_positions

logger = logging.getLogger(__name__)

GEOCHAT_IMAGE_SIZE = 504
"""GeoChat's input size in pixels (hard-coded in its vision tower and evaluation scripts)."""
IMAGE_TOKEN, PAD_TOKEN = "<image>", "<pad>"
VOCAB_MULTIPLE = 64
"""llava-hf pads the embedding matrices to a multiple of 64 rows (32000 + 2 -> 32064)."""
REPORT_FILE = "geochat_conversion.json"

GEOCHAT_VISION = "model.vision_tower.vision_tower.vision_model."
GEOCHAT_PROJECTOR = {"model.mm_projector.0.": "linear_1.", "model.mm_projector.2.": "linear_2."}
SELECT_STRATEGY = {"patch": "default", "cls_patch": "full"}
"""GeoChat's `mm_vision_select_feature` -> LLaVA's `vision_feature_select_strategy`."""
LLAMA_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "rope_theta", "rope_scaling", "attention_bias", "attention_dropout", "mlp_bias", "pretraining_tp",
    "tie_word_embeddings", "bos_token_id", "eos_token_id",
)  # fmt: skip
"""The fields of GeoChat's config that describe its Llama decoder (the vocabulary grows, see `convert_geochat`); the
others (`mm_*`, training flags) are GeoChat's."""


@dataclass
class GeochatConversion:
    """What `convert_geochat` did: every source weight is either renamed or dropped with a reason."""

    out: Path
    vision_source: str
    renamed: dict[str, str] = field(default_factory=dict)
    """Source key -> key in the LLaVA folder."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Source key -> why it is not in the LLaVA folder."""
    changes: list[str] = field(default_factory=list)
    """Weights that were not copied as they were (interpolated, grown), and why."""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "out": str(self.out)}, indent=2)


def convert_geochat(
    src: str | Path,
    out: str | Path,
    *,
    vision_tower: str | None = None,
    reload_vision_tower: bool = False,
    image_size: int = GEOCHAT_IMAGE_SIZE,
    pad_to_square: bool = False,
    dtype: str = "float16",
    overwrite: bool = False,
) -> GeochatConversion:
    """Convert the GeoChat checkpoint `src` (folder or Hub id) into a `LlavaForConditionalGeneration` folder `out`.

    The vision tower's config and image processor come from `vision_tower` (default: the config's
    `mm_vision_tower`, as in GeoChat), and so do its weights when the checkpoint has none or `reload_vision_tower`
    asks for what GeoChat's own loader does. Position embeddings at the tower's size are interpolated to
    `image_size` as GeoChat does; ones already at `image_size` are kept. With `pad_to_square` the processor pads
    images to a square of the mean colour first, as GeoChat's training and demo do (its evaluation scripts do not).
    The report, also written to `out/geochat_conversion.json`, lists every weight renamed or dropped."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise EarthvlError(f"{out} exists and is not an empty folder: choose another --out or pass --overwrite")
    target_dtype = getattr(torch, dtype, None)
    if not isinstance(target_dtype, torch.dtype) or not target_dtype.is_floating_point:
        raise EarthvlError(f"dtype={dtype!r}: give a floating-point dtype such as float16, bfloat16 or float32")
    folder = _local_folder(src)
    config = read_geochat_config(folder)
    weights = load_state_dict(folder)
    tower = vision_tower or config["mm_vision_tower"]
    tower_config = _tower_config(tower)
    patch = tower_config.patch_size
    if image_size < patch or image_size % patch:
        raise EarthvlError(f"image_size={image_size} is not a positive multiple of the vision tower's patch size {patch}")
    if config["mm_hidden_size"] != tower_config.hidden_size:
        raise EarthvlError(
            f"{folder}/config.json: mm_hidden_size={config['mm_hidden_size']} but the vision tower {tower} has "
            f"hidden_size={tower_config.hidden_size}"
        )
    tokenizer = _tokenizer(folder)
    rows = _embedding_rows(weights, folder)
    if len(tokenizer) != rows:
        raise EarthvlError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but model.embed_tokens.weight has {rows} rows"
        )
    image_token_id, pad_token_id = _add_tokens(tokenizer, folder)
    vocab_size = math.ceil((rows + 2) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    llava_config = _llava_config(config, tower_config, image_size, vocab_size, image_token_id, pad_token_id)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava_config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    names = _Names(expected)

    use_tower_weights = reload_vision_tower or not any(key.startswith(GEOCHAT_VISION) for key in weights)
    report = GeochatConversion(out, f"{tower} (weights too)" if use_tower_weights else f"{folder} (config: {tower})")
    state = _renamed(weights, names, tower if use_tower_weights else None, report, folder)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise EarthvlError(
            f"{folder}: {len(missing)} weights missing, e.g. {names.source(missing[0])}: not a complete GeoChat checkpoint"
        )
    _fit_positions(state, names.vision + "embeddings.position_embedding.weight", tower_config, image_size, report)
    for key in (names.language + "embed_tokens.weight", "lm_head.weight"):
        if state[key].shape[0] != rows:
            raise EarthvlError(f"{folder}: {names.source(key)} has {state[key].shape[0]} rows, embed_tokens {rows}")
        state[key] = _grow_rows(state[key], vocab_size)
    report.changes.append(
        f"embed_tokens and lm_head: rows {rows} ({IMAGE_TOKEN}) and {rows + 1} ({PAD_TOKEN}) added and the matrices "
        f"padded to {vocab_size} rows, each new row the mean of the {rows} trained ones"
    )
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise EarthvlError(
                f"{folder}: {names.source(key)} has shape {tuple(state[key].shape)}, but the config makes it {tuple(shape)}"
            )
    state = {key: t.to(target_dtype) if t.is_floating_point() else t for key, t in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.config.dtype = target_dtype
    model.generation_config = GenerationConfig(
        bos_token_id=llava_config.text_config.bos_token_id,
        eos_token_id=llava_config.text_config.eos_token_id,
        pad_token_id=pad_token_id,
    )

    processor = llava15_processor(_image_processor(tower, image_size, pad_to_square), tokenizer, patch)
    processor.vision_feature_select_strategy = llava_config.vision_feature_select_strategy
    processor.chat_template = tokenizer.chat_template = GEOCHAT_CHAT_TEMPLATE
    with staged_dir(out, replace=True) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / REPORT_FILE).write_text(report.to_json())
    logger.info("converted %s into %s (%d weights renamed, %d dropped)", src, out, len(report.renamed), len(report.dropped))
    return report


def _llava_config(
    config: dict[str, Any],
    tower_config: CLIPVisionConfig,
    image_size: int,
    vocab_size: int,
    image_token_id: int,
    pad_token_id: int,
) -> LlavaConfig:
    """LLaVA-1.5's config over GeoChat's decoder and the tower at `image_size`, with GeoChat's feature selection."""
    strategy = SELECT_STRATEGY[config.get("mm_vision_select_feature", "patch")]
    vision_config = copy.deepcopy(tower_config)
    vision_config.image_size = image_size
    text_config = LlamaConfig(
        **{key: config[key] for key in LLAMA_FIELDS if config.get(key) is not None},
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
    )
    llava_config = llava15_config(vision_config, text_config, image_token_id)
    llava_config.vision_feature_layer = config["mm_vision_select_layer"]
    llava_config.vision_feature_select_strategy = strategy
    llava_config.image_seq_length = (image_size // tower_config.patch_size) ** 2 + int(strategy == "full")
    return llava_config


def _renamed(
    weights: dict[str, torch.Tensor], names: _Names, tower: str | None, report: GeochatConversion, folder: Path
) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under LLaVA's names, and with `tower` the vision weights taken from it instead;
    every source key goes into the report as renamed or dropped, and an unknown key stops the conversion."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        reason = _drop_reason(key, tower)
        if reason:
            report.dropped[key] = reason
            continue
        target = names.target(key)
        if target not in names.expected:
            raise EarthvlError(f"{folder}: unexpected weight {key}: not a key of GeoChat's layout")
        report.renamed[key] = target
        state[target] = tensor
    if tower is not None:
        for key, tensor in _tower_weights(tower, report).items():
            report.renamed[f"{tower}:{key}"] = names.vision + key
            state[names.vision + key] = tensor
    return state


def read_geochat_config(folder: Path) -> dict[str, Any]:
    """GeoChat's `config.json`, checked to describe a model this converter handles."""
    path = folder / "config.json"
    if not path.is_file():
        raise EarthvlError(f"{folder} is not a GeoChat checkpoint: it has no config.json")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise EarthvlError(f"{path} is not valid JSON: {error}") from error
    if config.get("model_type") != "geochat":
        raise EarthvlError(
            f"{path}: model_type is {config.get('model_type')!r}, not 'geochat': not a GeoChat checkpoint "
            "(a transformers LLaVA folder needs no conversion)"
        )
    for key in ("mm_vision_tower", "mm_hidden_size", "mm_vision_select_layer"):
        if key not in config:
            raise EarthvlError(f"{path} has no {key}: not a GeoChat checkpoint")
    if config.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise EarthvlError(
            f"{path}: mm_projector_type is {config.get('mm_projector_type', 'linear')!r}; LLaVA's projector is "
            "GeoChat's 'mlp2x_gelu' (two linear layers around a GELU)"
        )
    if config.get("mm_use_im_start_end"):
        raise EarthvlError(f"{path}: mm_use_im_start_end is set; GeoChat-7B's prompt format (without <im_start>) only")
    if config.get("mm_vision_select_feature", "patch") not in SELECT_STRATEGY:
        raise EarthvlError(f"{path}: mm_vision_select_feature must be one of {sorted(SELECT_STRATEGY)}")
    return config


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder: its `*.safetensors` files, else its `pytorch_model*.bin` shards read with
    `torch.load(weights_only=True)`, which restores tensors and plain containers and refuses any other object (no
    code runs); a shard holding anything else is refused."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise EarthvlError(f"{folder} has no weights: no *.safetensors and no pytorch_model*.bin files")
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        shard = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pickle(path)
        for key, value in shard.items():
            if not isinstance(value, torch.Tensor):
                raise EarthvlError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
            if key in weights:
                raise EarthvlError(f"{path}: {key} is also in another shard")
            weights[key] = value
    return weights


class _Names:
    """GeoChat key <-> key of the LLaVA model; the LLaVA prefixes are read off the model (`expected` keys), so the
    mapping follows the installed transformers' module layout."""

    def __init__(self, expected: dict[str, Any]) -> None:
        self.expected = expected
        self.vision = _prefix(expected, "embeddings.patch_embedding.weight")
        self.language = _prefix(expected, "embed_tokens.weight")
        self.projector = _prefix(expected, "linear_1.weight")
        self.pairs = [
            ("lm_head.", "lm_head."),
            (GEOCHAT_VISION, self.vision),
            *((source, self.projector + target) for source, target in GEOCHAT_PROJECTOR.items()),
            ("model.", self.language),  # the decoder: embed_tokens, layers.*, norm
        ]

    def target(self, key: str) -> str | None:
        return next((new + key[len(old) :] for old, new in self.pairs if key.startswith(old)), None)

    def source(self, key: str) -> str:
        """The GeoChat key that maps to `key` (the longest matching LLaVA prefix wins)."""
        old, new = max(((o, n) for o, n in self.pairs if key.startswith(n)), key=lambda pair: len(pair[1]))
        return old + key[len(new) :]


def _prefix(expected: dict[str, Any], suffix: str) -> str:
    return next(key[: -len(suffix)] for key in expected if key.endswith(suffix))


def _drop_reason(key: str, tower: str | None) -> str | None:
    if key.endswith(".rotary_emb.inv_freq"):
        return "rotary frequencies: a buffer transformers computes from rope_theta"
    if key == GEOCHAT_VISION + "embeddings.position_ids":
        return "position indices: a buffer transformers computes"
    if tower is not None and key.startswith(GEOCHAT_VISION):
        return f"replaced by the weights of {tower}, which GeoChat's loader puts in after reading the checkpoint"
    return None


def _local_folder(src: str | Path) -> Path:
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists() or str(src).count("/") != 1:
        raise EarthvlError(f"{src} is neither a checkpoint folder nor a Hub model id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(src), allow_patterns=["*.json", "*.model", "*.safetensors", "*.bin"]))
    except Exception as error:  # offline, unknown, gated: the Hub client's own message says which
        raise EarthvlError(f"cannot download {src}: {_first_line(error)}") from error


def _tower_config(tower: str) -> CLIPVisionConfig:
    try:
        return CLIPVisionConfig.from_pretrained(tower)
    except (OSError, ValueError) as error:
        raise EarthvlError(
            f"cannot read the CLIP config of the vision tower {tower} (mm_vision_tower; --vision_tower names another "
            f"copy): {_first_line(error)}"
        ) from error


def _tower_weights(tower: str, report: GeochatConversion) -> dict[str, torch.Tensor]:
    """The vision tower's weights as GeoChat's loader takes them, `CLIPVisionModel.from_pretrained(tower)` in
    float32, keyed relative to the tower; what the tower's checkpoint holds besides (a CLIP text tower) is reported."""
    try:
        model, info = CLIPVisionModel.from_pretrained(tower, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise EarthvlError(f"cannot load the vision tower {tower}: {_first_line(error)}") from error
    if info["missing_keys"]:
        raise EarthvlError(f"the vision tower {tower} lacks weights, e.g. {sorted(info['missing_keys'])[0]}")
    for key in info["unexpected_keys"]:
        report.dropped[f"{tower}:{key}"] = "not part of a CLIP vision tower (LLaVA uses the vision tower alone)"
    return {key.removeprefix("vision_model."): tensor for key, tensor in model.state_dict().items()}


def _tokenizer(folder: Path) -> Any:
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, ImportError) as error:
        needs_sentencepiece = (folder / "tokenizer.model").is_file()
        hint = " (GeoChat's tokenizer.model needs `pip install sentencepiece protobuf`)" if needs_sentencepiece else ""
        raise EarthvlError(f"cannot load the tokenizer of {folder}{hint}: {_first_line(error)}") from error


def _add_tokens(tokenizer: Any, folder: Path) -> tuple[int, int]:
    """Add `<image>` then `<pad>` after the last token, as llava-hf does; their ids."""
    vocab = tokenizer.get_vocab()
    for token in (IMAGE_TOKEN, PAD_TOKEN):
        if token in vocab:
            raise EarthvlError(f"the tokenizer of {folder} already has {token}: not GeoChat's tokenizer")
    size = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, PAD_TOKEN])
    if ids != [size, size + 1]:
        raise EarthvlError(f"the tokenizer of {folder} gave {IMAGE_TOKEN} and {PAD_TOKEN} ids {ids}, not {size}, {size + 1}")
    return size, size + 1


def _embedding_rows(weights: dict[str, torch.Tensor], folder: Path) -> int:
    embed = weights.get("model.embed_tokens.weight")
    if embed is None or embed.ndim != 2:
        raise EarthvlError(f"{folder}: no 2-D model.embed_tokens.weight: not a GeoChat checkpoint")
    return embed.shape[0]


def _fit_positions(
    state: dict[str, torch.Tensor], key: str, tower_config: CLIPVisionConfig, image_size: int, report: GeochatConversion
) -> None:
    """Keep position embeddings already at `image_size`; interpolate ones at the tower's own size."""
    patch = tower_config.patch_size
    positions = state[key].shape[0]
    grid, tower_grid = image_size // patch, tower_config.image_size // patch
    if positions == grid * grid + 1:
        report.changes.append(f"{key}: kept, already {positions} positions ({image_size} px)")
    elif positions == tower_grid * tower_grid + 1:
        state[key] = interpolate_positions(state[key], grid)
        report.changes.append(
            f"{key}: {tower_grid}x{tower_grid} patch positions interpolated to {grid}x{grid} ({image_size} px) as "
            "GeoChat does (bicubic, corners aligned, class token kept)"
        )
    else:
        raise EarthvlError(
            f"the vision tower's position embeddings have {positions} rows: expected {tower_grid**2 + 1} "
            f"({tower_config.image_size} px) or {grid**2 + 1} ({image_size} px)"
        )


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """`weight` with rows appended up to `rows`, each the mean of the existing rows (LLaVA's rule for new tokens)."""
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(rows - weight.shape[0], -1)])


def _image_processor(tower: str, image_size: int, pad_to_square: bool) -> Any:
    """The tower's CLIP image processor resized and cropped to `image_size`, as GeoChat's scripts call it."""
    try:
        settings = CLIPImageProcessorPil.from_pretrained(tower).to_dict()
    except (OSError, ValueError) as error:
        raise EarthvlError(f"cannot read the image processor of the vision tower {tower}: {_first_line(error)}") from error
    settings = {key: value for key, value in settings.items() if key not in ("image_processor_type", "processor_class")}
    settings.update(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return LlavaImageProcessorPil(**settings, do_pad=True) if pad_to_square else CLIPImageProcessorPil(**settings)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for truncated or malformed files
        raise EarthvlError(f"cannot read {path}: {_first_line(error)}") from error


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise EarthvlError(
            f"{path} holds Python objects besides tensors; earthvl reads .bin weights with torch.load(weights_only=True) "
            "only and refuses it"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise EarthvlError(f"cannot read {path}: {_first_line(error)}") from error
    if not isinstance(shard, dict):
        raise EarthvlError(f"{path} holds a {type(shard).__name__}, not a dict of weights")
    return shard


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
