"""Run the whole job end to end: `earthvl quickstart`.

    earthvl quickstart --out quickstart                   # offline: sample world, tiny models, CPU, a few minutes
    earthvl quickstart --out run --gaia_dataset earthvl/gaia --chatearthnet_dataset earthvl/chatearthnet \\
        --classify_dataset eurosat --vlm_model llava-hf/llava-1.5-7b-hf --clip_model openai/clip-vit-base-patch32 \\
        --blip2_model Salesforce/blip2-opt-2.7b               # the real thing, one GPU

Builds both datasets, evaluates the three base models, trains them (QLoRA VLM, CLIP, BLIP-2 LoRA), evaluates them
again (with the sample world's ChatEarthNet, also the faithfulness of the VLM's captions to the land-cover maps), writes
their model cards and a ready-to-push Space folder, and prints the before/after table (also written to
OUT/summary.json). A re-run reuses the steps an earlier run finished.
"""

from __future__ import annotations

from pathlib import Path

from trl import TrlParser

from earthvl.atomic import check_writable
from earthvl.cli import main as cli
from earthvl.errors import EarthvlError
from earthvl.quickstart import StepRunner, format_table, summary_rows, write_summary
from earthvl.quickstart_plan import QuickstartArguments, plan
from earthvl.space.app import require_gradio


def make_parser(prog: str = "earthvl quickstart") -> TrlParser:
    return TrlParser(QuickstartArguments, prog=prog, description=__doc__.splitlines()[0])


def run_command(argv: list[str]) -> None:
    """Run one `earthvl` subcommand in this process; an EarthvlError if it fails (its message is already printed)."""
    status = cli(argv)
    if status:
        raise EarthvlError(f"`earthvl {' '.join(argv)}` failed (exit status {status})")


def main(args: QuickstartArguments) -> int:
    out = check_writable(Path(args.out).resolve(), "quickstart folder", folder=True)
    work = plan(args)
    require_gradio()  # the last step pins Gradio in the Space folder: say so now rather than after the training
    print(f"earthvl quickstart: {len(work.steps)} steps into {out}")
    for reason in work.skipped:
        print(f"skipped: {reason}")
    outcome = StepRunner(out, run_command, force=args.force).run(work.steps)
    rows = summary_rows(out, work.evaluations)
    write_summary(out, rows)
    reused = sum(value == "reused" for value in outcome.values())
    print(f"\nearthvl quickstart finished ({len(outcome) - reused} steps ran, {reused} reused)\n")
    print(format_table(rows))
    print()
    width = max(len(what) for what, _ in work.places)
    for what, where in work.places:
        print(f"{what.ljust(width)}  {where.format(out=out)}")
    for reason in work.skipped:
        print(f"skipped: {reason}")
    if not rows:
        raise EarthvlError("the run produced no summary rows")
    return 0
