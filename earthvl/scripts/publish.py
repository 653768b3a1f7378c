"""Upload a built dataset folder, a trained model folder or a Space folder to the Hugging Face Hub: `earthvl publish`.

    earthvl publish hub/gaia --repo my-org/gaia [--private]
    earthvl publish runs/clip --repo my-org/clip-rs --results eval/eurosat.json eval/gaia-retrieval.json
    earthvl publish runs/blip2 --repo my-org/blip2-rs --merged     # the merged model instead of the adapter
    earthvl publish space --space my-org/earthvl-demo             # a Gradio Space folder (earthvl quickstart's)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.errors import EarthvlError
from earthvl.hub import check_repo_id, check_space_folder, folder_kind, publish_dataset, publish_model, publish_space


@dataclass
class PublishArguments:
    """Options of `earthvl publish`."""

    repo: str | None = field(default=None, metadata={"help": "Hub repository, ORG/NAME (created if it does not exist)."})
    space: str | None = field(
        default=None,
        metadata={"help": "Hub Space, ORG/NAME, for a Space folder: the same as --repo ORG/NAME --repo_type space."},
    )
    folder: str | None = field(
        default=None,
        metadata={
            "help": "Built dataset folder, trained model folder or Space folder (also accepted as the first argument)."
        },
    )
    repo_type: str | None = field(
        default=None,
        metadata={
            "help": "What the folder holds (default: detected: a built dataset has build_report.json and data/, a "
            "trained model config.json or adapter_config.json; a Space folder is never guessed: name it).",
            "choices": ["dataset", "model", "space"],
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

    def __post_init__(self) -> None:
        for option in ("repo", "space"):
            if getattr(self, option) is not None:
                check_repo_id(getattr(self, option), f"--{option}")


def make_parser(prog: str = "earthvl publish") -> TrlParser:
    parser = TrlParser(PublishArguments, prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", nargs="?", default=argparse.SUPPRESS, help="Built dataset folder, trained model folder or Space folder."
    )
    return parser


def _target(args: PublishArguments) -> tuple[str, str]:
    """The repository and what is published: --space, or --repo with --repo_type or what the folder holds (a Space
    folder is never guessed)."""
    if args.space:
        if args.repo or args.repo_type not in (None, "space"):
            raise EarthvlError("--space ORG/NAME names the repository and its type: leave out --repo and --repo_type")
        return args.space, "space"
    if not args.repo:
        raise EarthvlError("name the repository: --repo ORG/NAME (or --space ORG/NAME for a Space folder)")
    if args.repo_type:
        return args.repo, args.repo_type
    try:
        return args.repo, folder_kind(args.folder)
    except EarthvlError:
        if _is_space(args.folder):
            raise EarthvlError(f"{args.folder} is a Space folder: publish it with --space {args.repo}") from None
        raise


def _is_space(folder: str) -> bool:
    try:
        check_space_folder(folder)
    except EarthvlError:
        return False
    return True


def main(args: PublishArguments) -> int:
    if args.folder is None:
        raise EarthvlError("name the folder to publish, e.g. earthvl publish hub/gaia --repo my-org/gaia")
    repo, kind = _target(args)
    if kind != "model" and (args.results or args.merged):
        raise EarthvlError(f"--results and --merged apply to models; the folder is published as a {kind}")
    if kind == "space":
        url = publish_space(args.folder, repo, private=args.private, commit_message=args.commit_message)
        where = f"https://huggingface.co/spaces/{repo}"
    elif kind == "dataset":
        url = publish_dataset(args.folder, repo, private=args.private, commit_message=args.commit_message)
        where = f"https://huggingface.co/datasets/{repo}"
    else:
        url = publish_model(
            args.folder,
            repo,
            private=args.private,
            commit_message=args.commit_message,
            results=args.results or (),
            merged=args.merged,
        )
        where = f"https://huggingface.co/{repo}"
    print(f"published {args.folder} to {where}: {url}")
    return 0
