"""Render a model card with `model-index` metrics from `earthvl eval` results files: `earthvl card`.

    earthvl card --results eval/eurosat.json eval/gaia-retrieval.json --model_dir runs/clip --model_id my-org/clip-rs
    earthvl card --results results/blip2-gaia.json --out card.md
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.atomic import check_writable
from earthvl.cards.model import write_model_card
from earthvl.errors import EarthvlError
from earthvl.hub import check_repo_id


@dataclass
class CardArguments:
    """Options of `earthvl card`."""

    results: list[str] | None = field(
        default=None,
        metadata={"help": "Results files of `earthvl eval`, all of one model (none: a card without scores)."},
    )
    model_dir: str | None = field(
        default=None,
        metadata={"help": "The model's training output folder (its loading code, recipe and hardware go in the card)."},
    )
    out: str | None = field(
        default=None,
        metadata={
            "help": "Card to write (default: MODEL_DIR/README.md, with the results files copied to MODEL_DIR/eval/ "
            "for `earthvl publish`)."
        },
    )
    model_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub id the card is for, ORG/NAME: names the model in the model-index and the loading code "
            "(default: the results' model id)."
        },
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Base checkpoint (default: what the results or the adapter record)."}
    )
    datasets: list[str] | None = field(
        default=None,
        metadata={"help": "Training datasets, Hub ids optionally with :CONFIG (default: those MODEL_DIR/run.json records)."},
    )
    license: str | None = field(default=None, metadata={"help": "License id for the metadata, e.g. mit or apache-2.0."})
    merged: bool = field(
        default=False,
        metadata={"help": "Describe MODEL_DIR/merged (the adapter folded into its base) instead of the adapter."},
    )

    def __post_init__(self) -> None:
        if self.model_id is not None:
            check_repo_id(self.model_id, "--model_id")


def make_parser(prog: str = "earthvl card") -> TrlParser:
    return TrlParser(CardArguments, prog=prog, description=__doc__.splitlines()[0])


def main(args: CardArguments) -> int:
    if not args.results and args.model_dir is None:
        raise EarthvlError("give results files (--results) and/or the model folder (--model_dir)")
    if args.out is not None:
        check_writable(args.out, "model card")
    path = write_model_card(
        args.results or (),
        args.out,
        model_dir=args.model_dir,
        model_id=args.model_id,
        base_model=args.base_model,
        datasets=args.datasets or (),
        license=args.license,
        merged=args.merged,
    )
    print(f"wrote the model card {path} from {len(args.results or ())} results files")
    return 0
