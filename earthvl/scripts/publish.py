"""Upload a built dataset folder to the Hugging Face Hub: `earthvl publish`.

    earthvl publish hub/gaia --repo my-org/gaia [--private]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.errors import EarthvlError
from earthvl.hub import publish_dataset


@dataclass
class PublishArguments:
    """Options of `earthvl publish`."""

    repo: str = field(metadata={"help": "Hub dataset repository, ORG/NAME (created if it does not exist)."})
    folder: str | None = field(
        default=None, metadata={"help": "Built dataset folder (also accepted as the first, positional argument)."}
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (default: names the folder)."})


def make_parser(prog: str = "earthvl publish") -> TrlParser:
    parser = TrlParser(PublishArguments, prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=argparse.SUPPRESS, help="Built dataset folder.")
    return parser


def main(args: PublishArguments) -> int:
    if args.folder is None:
        raise EarthvlError("name the built folder to publish, e.g. earthvl publish hub/gaia --repo my-org/gaia")
    url = publish_dataset(args.folder, args.repo, private=args.private, commit_message=args.commit_message)
    print(f"published {args.folder} to https://huggingface.co/datasets/{args.repo}: {url}")
    return 0
