"""What the `earthvl eval caption|classify|retrieve` scripts share: a parser from the shared and the task's
dataclasses, and a main that runs the task and prints its results. Private (the leading underscore): CLI glue for
those scripts, not a command of its own."""

from __future__ import annotations

from typing import Any, Callable

from trl import TrlParser

from earthvl.eval.arguments import TASK_ARGUMENTS, EvalArguments
from earthvl.eval.run import evaluate, summary


def task_script(task: str, description: str) -> tuple[Callable[..., TrlParser], Callable[..., int]]:
    """`make_parser(prog)` and `main(args, task_args)` of `earthvl eval <task>`."""

    def make_parser(prog: str = f"earthvl eval {task}") -> TrlParser:
        return TrlParser((EvalArguments, TASK_ARGUMENTS[task]), prog=prog, description=description)

    def main(args: EvalArguments, task_args: Any) -> int:
        results = evaluate(task, args, task_args)
        print(summary(results))
        print(f"results: {args.out}")
        return 0

    return make_parser, main
