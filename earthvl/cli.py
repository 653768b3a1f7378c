"""The `earthvl` command: one subcommand per script module, in the style of TRL's CLI."""

from __future__ import annotations

import importlib
import logging
import sys
from argparse import ArgumentParser

from earthvl import __version__
from earthvl.errors import EarthvlError
from earthvl.recipes import check_recipe_keys, recipe_path

COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("earthvl.scripts.quickstart", "The whole job end to end: datasets, training, evaluation, cards, Space."),
    "sample": ("earthvl.scripts.sample", "Write the offline sample world (GAIA and ChatEarthNet formats) and tiny models."),
    "build chatearthnet": ("earthvl.scripts.build_chatearthnet", "Build ChatEarthNet into a Hub-ready dataset folder."),
    "generate chatearthnet": ("earthvl.scripts.generate_chatearthnet", "Caption Sentinel-2 patches from land-cover maps (ChatEarthNet's method)."),
    "eval faithfulness": ("earthvl.scripts.eval_faithfulness", "Score captions against land-cover maps: classes, regions, sizes."),
    "build gaia": ("earthvl.scripts.build_gaia", "Build GAIA into a Hub-ready dataset folder."),
    "annotate gaia": ("earthvl.scripts.annotate_gaia", "Annotate scraped image-text records into a GAIA-format dataset (GAIA's framework)."),
    "convert geochat": ("earthvl.scripts.convert_geochat", "Convert a GeoChat checkpoint into a plain transformers LLaVA folder."),
    "publish": ("earthvl.scripts.publish", "Upload a built dataset folder or a trained model to the Hugging Face Hub."),
    "train vlm": ("earthvl.scripts.train_vlm", "Instruction-tune a LLaVA-style VLM with TRL (QLoRA by default)."),
    "train clip": ("earthvl.scripts.train_clip", "Fine-tune CLIP contrastively (the GAIA recipe)."),
    "train blip2": ("earthvl.scripts.train_blip2", "Fine-tune a BLIP-2 captioner with LoRA (the GAIA recipe)."),
    "eval caption": ("earthvl.scripts.eval_caption", "Caption a test split and score it (COCO and HF protocols)."),
    "eval classify": ("earthvl.scripts.eval_classify", "Zero-shot scene classification (CLIP prompts or a VLM's answer)."),
    "eval retrieve": ("earthvl.scripts.eval_retrieve", "Image-text retrieval recall with a CLIP model."),
    "card": ("earthvl.scripts.card", "Render a model card (with model-index metrics) from results files."),
    "demo": ("earthvl.scripts.demo", "Run the Gradio demo (caption, zero-shot classification, retrieval) locally."),
}
"""Subcommand (one word, or a group and a name) -> (script module exposing `make_parser(prog)` and
`main(*dataclasses)`, help)."""


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (test runners and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_info_logs() -> None:
    """earthvl's INFO messages (what a run changed or measured, e.g. the share of captions cut) go to stderr."""
    log = logging.getLogger("earthvl")
    if not any(isinstance(handler, _StderrHandler) for handler in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("earthvl: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="earthvl", description="Remote-sensing vision-language work on the Hugging Face stack.")
    parser.add_argument("--version", action="version", version=f"earthvl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        if " " not in name:
            subparsers.add_parser(name, help=help_text, add_help=False)
    for group, members in _groups().items():
        subparsers.add_parser(group, help=f"{group} {'|'.join(members)}", add_help=False)
    return parser


def _groups() -> dict[str, list[str]]:
    """Two-word commands by their first word, e.g. {"build": ["chatearthnet"]}."""
    groups: dict[str, list[str]] = {}
    for name in COMMANDS:
        group, _, member = name.partition(" ")
        if member:
            groups.setdefault(group, []).append(member)
    return groups


def _split_command(argv: list[str]) -> tuple[str | None, list[str]]:
    """The command named at the start of `argv` (one or two words) and the arguments after it."""
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    return None, argv


def _with_recipe_paths(args: list[str]) -> list[str]:
    """`--config NAME` (or `--config=NAME`) of a shipped recipe (e.g. `vlm/geochat`) becomes `--config PATH`, the
    two-token form TRL's parser reads."""
    out: list[str] = []
    for arg in args:
        out += ["--config", arg.split("=", 1)[1]] if arg.startswith("--config=") else [arg]
    return [recipe_path(arg) if i and out[i - 1] == "--config" else arg for i, arg in enumerate(out)]


def main(argv: list[str] | None = None) -> int:
    """Run the earthvl CLI; returns the exit code (2 for a problem with the user's input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = _split_command(argv)
    if command is None:
        parser = _build_parser()
        if argv and not argv[0].startswith("-"):
            members = _groups().get(argv[0])
            if members:
                parser.error(f"'{argv[0]}' needs one of: {', '.join(members)}")
            parser.error(f"unknown command {argv[0]!r}; known commands: {', '.join(COMMANDS)}")
        parser.parse_args(argv)
        parser.print_help()
        return 0
    rest = _with_recipe_paths(rest)
    _show_info_logs()
    module = importlib.import_module(COMMANDS[command][0])
    script_parser = module.make_parser(prog=f"earthvl {command}")
    try:
        try:
            if "--config" in rest:
                check_recipe_keys(script_parser, rest[rest.index("--config") + 1])
            script_args = script_parser.parse_args_and_config(rest)
        except ValueError as error:  # what the dataclasses' checks raise on bad option values
            raise EarthvlError(str(error)) from error
        return module.main(*script_args) or 0
    except EarthvlError as error:
        print(f"earthvl {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
