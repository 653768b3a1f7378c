"""Instruction-tune a LLaVA-style VLM with TRL's SFTTrainer (QLoRA by default): `earthvl train vlm`.

    earthvl train vlm --config vlm/tiny --datasets hub/chatearthnet:gpt35 --output_dir runs/tiny
    earthvl train vlm --config vlm/geochat --model_name_or_path llava-hf/llava-1.5-7b-hf --datasets hub/gaia hub/chatearthnet:gpt35
"""

from __future__ import annotations

from trl import SFTConfig, TrlParser

from earthvl.train.foundation import report
from earthvl.train.vlm import VlmModelArguments, VlmScriptArguments
from earthvl.train.vlm import train_vlm


def make_parser(prog: str = "earthvl train vlm") -> TrlParser:
    return TrlParser((VlmScriptArguments, SFTConfig, VlmModelArguments), prog=prog, description=__doc__.splitlines()[0])


def main(script_args: VlmScriptArguments, training_args: SFTConfig, model_args: VlmModelArguments) -> int:
    trainer = train_vlm(script_args, training_args, model_args)
    report(trainer, f"{'adapter' if model_args.use_peft else 'model'} and processor")
    return 0
