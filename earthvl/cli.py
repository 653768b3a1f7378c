"""The `earthvl` command: one subcommand per script module, in the style of TRL's CLI."""

from __future__ import annotations

import importlib
import sys
from argparse import ArgumentParser

from earthvl import __version__
from earthvl.errors import EarthvlError

COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("earthvl.scripts.sample", "Write the offline sample world (GAIA and ChatEarthNet formats) and tiny models."),
}
"""Subcommand -> (script module exposing `make_parser(prog)` and `main(*dataclasses)`, help)."""


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="earthvl", description="Remote-sensing vision-language work on the Hugging Face stack.")
    parser.add_argument("--version", action="version", version=f"earthvl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the earthvl CLI; returns the exit code (2 for a problem with the user's input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args, _ = parser.parse_known_args(argv[:1])
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    script_parser = module.make_parser(prog=f"earthvl {args.command}")
    try:
        script_args = script_parser.parse_args_and_config(argv[1:])
        return module.main(*script_args) or 0
    except EarthvlError as error:
        print(f"earthvl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
