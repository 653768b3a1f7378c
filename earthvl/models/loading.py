"""Loading a checkpoint for training, optionally quantised with bitsandbytes, for every earthvl model family.

Each family names the modules that must stay unquantised by their full paths: in transformers 5 short names
silently match nothing (LLaVA's `vision_tower` lives at `model.vision_tower`), and the module then gets quantised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

import torch
from peft import PeftModel
from transformers import AutoProcessor, BitsAndBytesConfig, PreTrainedModel, ProcessorMixin

from earthvl.errors import EarthvlError

_ModelT = TypeVar("_ModelT", bound=PreTrainedModel)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Files with these suffixes are pickles, which run code when loaded: earthvl loads and publishes safetensors only."""


def check_safetensors(folder: Path, weights: str = "model") -> None:
    """An error for a local model or adapter folder without `<weights>.safetensors` (or its sharded index), naming
    the pickled weights it holds instead; from_pretrained would load those, and a pickle can run code."""
    if any((folder / f"{weights}.safetensors{index}").is_file() for index in ("", ".index.json")):
        return
    suffixes = PICKLE_SUFFIXES + (".bin.index.json",)
    pickled = sorted(path.name for path in folder.iterdir() if path.name.endswith(suffixes))
    held = f"; its weights are pickled ({', '.join(pickled)}), which earthvl does not load" if pickled else ""
    raise EarthvlError(
        f"{folder} has no safetensors weights ({weights}.safetensors){held}: convert them to safetensors in a session "
        "you trust (from_pretrained, then save_pretrained)"
    )


def quantization_config(
    compute_dtype: torch.dtype = torch.bfloat16,
    *,
    skip_modules: Sequence[str],
    bits: int = 4,
    quant_type: str = "nf4",
    double_quant: bool = True,
    quant_storage: torch.dtype | str | None = None,
) -> BitsAndBytesConfig:
    """NF4 with double quantisation and `compute_dtype` compute (or 8-bit), leaving `skip_modules` unquantised.

    `quant_storage` set to the compute dtype is what FSDP and ZeRO-3 need to shard the 4-bit weights with the rest."""
    if bits not in (4, 8):
        raise EarthvlError(f"bits={bits}: bitsandbytes quantises to 4 or 8 bits")
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=quant_storage or torch.uint8,
        llm_int8_skip_modules=list(skip_modules),
    )


def load_pretrained(
    model_class: type[_ModelT],
    name_or_path: str,
    *,
    skip_modules: Sequence[str] = (),
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    quantization: dict[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> tuple[_ModelT, ProcessorMixin]:
    """`model_class.from_pretrained` of a Hub id or local folder (a tiny model name is resolved at the entry, by
    `earthvl.model_names.resolve_model`), and its processor.

    With `load_in_4bit` (or `load_in_8bit`) everything but `skip_modules` is quantised as in `quantization_config`
    (compute in `dtype`, default bf16; `quantization` holds its other arguments). Only safetensors weights are
    loaded: a folder (or Hub repo) with pickled weights only is an error."""
    if Path(name_or_path).is_dir():
        check_safetensors(Path(name_or_path))
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if load_in_4bit and load_in_8bit:
        raise EarthvlError("load_in_4bit and load_in_8bit are both set: choose one")
    if load_in_4bit or load_in_8bit:
        compute = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
        kwargs["quantization_config"] = quantization_config(
            compute, skip_modules=skip_modules, bits=4 if load_in_4bit else 8, **(quantization or {})
        )
        dtype = dtype or compute
    try:
        model = model_class.from_pretrained(
            name_or_path,
            revision=revision,
            dtype=dtype or "auto",
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **kwargs,
        )
    except OSError as error:  # e.g. a Hub repo without safetensors weights
        raise EarthvlError(f"cannot load {name_or_path}: {' '.join(str(error).split())}") from error
    processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    return model, processor


def save_merged(model: PeftModel, processor: ProcessorMixin, out: str | Path) -> Path:
    """Fold the LoRA weights of `model` into its base and save it with `processor` as a plain transformers model
    (safetensors) in `out`."""
    model.merge_and_unload().save_pretrained(out)
    processor.save_pretrained(out)
    return Path(out)


def lora_targets(target_modules: str | list[str] | None, default: str) -> str | list[str]:
    """LoRA's `target_modules`: `default` (a regular expression over module paths) when none are given; a single
    entry with regular-expression characters is taken as one (PEFT matches a list by name suffix, which cannot tell
    the language model's `fc1` from the vision tower's)."""
    if not target_modules:
        return default
    if isinstance(target_modules, list) and len(target_modules) == 1 and any(c in target_modules[0] for c in "*|()\\[]^$"):
        return target_modules[0]
    return target_modules


def loading_options(model_args: Any) -> dict[str, Any]:
    """`load_pretrained`'s keyword arguments from TRL's `ModelConfig` options (quantisation, dtype, revision,
    attention)."""
    return dict(
        load_in_4bit=model_args.load_in_4bit,
        load_in_8bit=model_args.load_in_8bit,
        quantization=dict(
            quant_type=model_args.bnb_4bit_quant_type,
            double_quant=model_args.use_bnb_nested_quant,
            quant_storage=model_args.bnb_4bit_quant_storage,
        ),
        dtype=model_args.dtype,
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
    )


def lora_options(model_args: Any) -> dict[str, Any]:
    """The LoRA keyword arguments of earthvl's `lora_config` functions from TRL's `ModelConfig` options."""
    return dict(
        r=model_args.lora_r,
        alpha=model_args.lora_alpha,
        dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        modules_to_save=model_args.lora_modules_to_save,
        target_parameters=model_args.lora_target_parameters,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )


def stop_token_ids(model: PreTrainedModel, tokenizer: Any) -> list[int]:
    """The ids generation stops at: the model's generation config, else the tokenizer's eos. Every trained answer
    must end with the first of them, or the model never learns to stop (`</s>` for LLaVA-1.5; the newline for
    Salesforce's BLIP-2 OPT checkpoints, whose generation config stops there as LAVIS trained them)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos)


def weights_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of a model's floating-point weights (what its inputs must be cast to; quantised layers aside)."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())
