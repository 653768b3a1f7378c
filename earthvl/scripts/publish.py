"""Upload a built dataset folder or a trained model folder to the Hugging Face Hub: `earthvl publish`.

    earthvl publish hub/gaia --repo my-org/gaia [--private]
    earthvl publish runs/clip --repo my-org/clip-rs --results eval/eurosat.json eval/gaia-retrieval.json
    earthvl publish runs/blip2 --repo my-org/blip2-rs --merged     # the merged model instead of the adapter
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.errors import EarthvlError
from earthvl.hub import folder_kind, publish_dataset, publish_model


@dataclass
class PublishArguments:
    """Options of `earthvl publish`."""

    repo: str = field(metadata={"help": "Hub repository, ORG/NAME (created if it does not exist)."})
    folder: str | None = field(
        default=None,
        metadata={"help": "Built dataset folder or trained model folder (also accepted as the first argument)."},
    )
    repo_type: str | None = field(
        default=None,
        metadata={
            "help": "What the folder holds (default: detected: a built dataset has build_report.json and data/, a "
            "trained model config.json or adapter_config.json).",
            "choices": ["dataset", "model"],
        },
    )
    results: list[str] | None = field(
        default=None,
        metadata={
            "help": "Model only: `earthvl eval` results files, pushed under eval/ (instead of the folder's eval/); the "
            "card is rendered from them when the folder has no earthvl card, else checked against them."
        },
    )
    merged: bool = field(
        default=False,
        metadata={"help": "Model only: publish merged/ (from --merge_adapter) as the model instead of the adapter."},
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (default: names the folder)."})


def make_parser(prog: str = "earthvl publish") -> TrlParser:
    parser = TrlParser(PublishArguments, prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", nargs="?", default=argparse.SUPPRESS, help="Built dataset folder or trained model folder."
    )
    return parser


def main(args: PublishArguments) -> int:
    if args.folder is None:
        raise EarthvlError("name the folder to publish, e.g. earthvl publish hub/gaia --repo my-org/gaia")
    kind = args.repo_type or folder_kind(args.folder)
    if kind == "dataset":
        if args.results or args.merged:
            raise EarthvlError("--results and --merged apply to models; the folder is published as a dataset")
        url = publish_dataset(args.folder, args.repo, private=args.private, commit_message=args.commit_message)
        where = f"https://huggingface.co/datasets/{args.repo}"
    else:
        url = publish_model(
            args.folder,
            args.repo,
            private=args.private,
            commit_message=args.commit_message,
            results=args.results or (),
            merged=args.merged,
        )
        where = f"https://huggingface.co/{args.repo}"
    print(f"published {args.folder} to {where}: {url}")
    return 0
