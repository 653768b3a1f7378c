"""Fine-tune a BLIP-2 captioner with LoRA (the GAIA recipe): `earthvl train blip2`.

    earthvl train blip2 --config blip2/tiny --datasets hub/gaia:default --output_dir runs/blip2-tiny
    earthvl train blip2 --config blip2/gaia --datasets hub/gaia:default --output_dir runs/blip2 --merge_adapter
"""

from __future__ import annotations

from transformers import TrainingArguments
from trl import TrlParser

from earthvl.train.blip2 import Blip2ModelArguments, Blip2ScriptArguments
from earthvl.train.blip2 import train_blip2
from earthvl.train.foundation import report


def make_parser(prog: str = "earthvl train blip2") -> TrlParser:
    return TrlParser((Blip2ScriptArguments, TrainingArguments, Blip2ModelArguments), prog=prog, description=__doc__.splitlines()[0])


def main(script_args: Blip2ScriptArguments, training_args: TrainingArguments, model_args: Blip2ModelArguments) -> int:
    report(train_blip2(script_args, training_args, model_args), f"{'adapter' if model_args.use_peft else 'model'}, processor and generation settings")
    return 0
