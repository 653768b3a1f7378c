"""Fine-tune CLIP contrastively on captioned remote-sensing images (the GAIA recipe): `earthvl train clip`.

    earthvl train clip --config clip/tiny --datasets hub/chatearthnet:gpt35 --output_dir runs/clip-tiny
    earthvl train clip --config clip/gaia --model_name_or_path openai/clip-vit-large-patch14 --datasets hub/gaia:default
"""

from __future__ import annotations

from transformers import TrainingArguments
from trl import TrlParser

from earthvl.train.clip import ClipModelArguments, ClipScriptArguments
from earthvl.train.clip import train_clip
from earthvl.train.foundation import report


def make_parser(prog: str = "earthvl train clip") -> TrlParser:
    return TrlParser((ClipScriptArguments, TrainingArguments, ClipModelArguments), prog=prog, description=__doc__.splitlines()[0])


def main(script_args: ClipScriptArguments, training_args: TrainingArguments, model_args: ClipModelArguments) -> int:
    report(train_clip(script_args, training_args, model_args), "model and processor")
    return 0
