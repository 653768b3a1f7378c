"""The whole job end to end: the runner of `earthvl quickstart`'s steps (its plan is `earthvl.quickstart_plan`),
which reuses finished steps, and the before/after summary.

Every step but the Space folder runs an `earthvl` subcommand through the command the runner is given (the
quickstart script runs them in this process, with the same scripts, options and messages as on the command line).
A finished step leaves `DIR/.quickstart/<step>.json` holding its key: its command with DIR written as `{out}` (so a
moved folder is still reused) and the records of the steps whose outputs it reads.
A re-run reuses a step whose key is unchanged and whose outputs are all there, and redoes it - and with it every step
that reads it - otherwise.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earthvl.atomic import write_bytes
from earthvl.errors import EarthvlError

SAMPLE = "sample"
"""Dataset option value meaning "built from the offline sample world"."""
SUMMARY_METRICS = {
    "caption": ("coco", ("bleu_4", "meteor", "rouge_l")),
    "classify": ("clip_benchmark", ("acc1", "mean_per_class_recall")),
    "retrieve": ("clip_benchmark", ("text_to_image_R@5", "image_to_text_R@5", "mean_recall")),
    "faithfulness": ("faithfulness", ("precision", "recall", "dominant_first")),
}
"""Task -> (protocol, metrics) that go into the summary table. CIDEr is left out: on test sets of a few dozen
images its document frequencies are too sparse to compare runs (the coco results files still hold it).
`faithfulness` is `earthvl eval faithfulness` of the caption predictions against the test patches' land-cover maps
(its own results file; a metric no caption defines, e.g. precision when none names a class, is null: n/a)."""
STATE_DIR = ".quickstart"
SUMMARY_FILE = "summary.json"


@dataclass
class Step:
    """One unit of the plan: an `earthvl` command (or a Python action) and the paths it writes."""

    name: str
    """Unique; also the file name of its record."""
    describe: str
    command: list[str] | None
    """`earthvl` CLI arguments, with `{out}` for the quickstart folder."""
    outputs: tuple[str, ...]
    """Paths it writes, with `{out}`: removed before the step is redone."""
    reads: tuple[str, ...] = ()
    """Names of earlier steps whose outputs it reads."""
    action: Callable[[Path], None] | None = field(default=None, repr=False)
    """Instead of `command`: called with the quickstart folder."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What an `action` depends on, for its key."""


@dataclass(frozen=True)
class Evaluation:
    """A before/after pair of `earthvl eval` runs that becomes rows of the summary."""

    task: str
    model: str
    dataset: str
    before: str
    after: str
    """Results files, relative to the quickstart folder."""


class StepRunner:
    """Runs a plan in order, reusing steps finished by an earlier run with the same key; `command` runs one step's
    `earthvl` arguments (the quickstart script gives the CLI's)."""

    def __init__(self, out: Path, command: Callable[[list[str]], None], *, force: bool = False) -> None:
        self.out, self.force, self.command = out, force, command
        self.records: dict[str, dict[str, Any]] = {}
        self.state = out / STATE_DIR

    def run(self, steps: Sequence[Step]) -> dict[str, str]:
        """Step name -> "ran" or "reused", after running the steps in order."""
        outcome = {}
        for number, step in enumerate(steps, 1):
            print(f"\n[{number}/{len(steps)}] {step.describe}", flush=True)
            key = self._key(step)
            record = self._record(step.name)
            if not self.force and record.get("key") == key and all(self._path(p).exists() for p in step.outputs):
                self.records[step.name] = record
                outcome[step.name] = "reused"
                print(f"      reused (finished in {record['seconds']:.1f} s by an earlier run)", flush=True)
                continue
            self.records[step.name] = self._execute(step, key)
            outcome[step.name] = "ran"
            print(f"      done in {self.records[step.name]['seconds']:.1f} s", flush=True)
        return outcome

    def _key(self, step: Step) -> dict[str, Any]:
        return {
            "command": step.command,
            "settings": step.settings,
            "reads": {name: self.records[name]["id"] for name in step.reads},
        }

    def _record(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self._record_path(name).read_text())
        except (OSError, ValueError):
            return {}

    def _record_path(self, name: str) -> Path:
        return self.state / f"{name.replace(' ', '-')}.json"

    def _path(self, template: str) -> Path:
        return Path(template.format(out=self.out))

    def _execute(self, step: Step, key: dict[str, Any]) -> dict[str, Any]:
        for template in step.outputs:
            path = self._path(template)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        started = time.perf_counter()
        if step.action is not None:
            step.action(self.out)
        else:
            self.command([arg.format(out=self.out) for arg in step.command])
        record = {"key": key, "id": uuid.uuid4().hex, "seconds": time.perf_counter() - started}
        write_bytes(self._record_path(step.name), json.dumps(record, indent=1).encode())
        return record


def summary_rows(out: Path, evaluations: Sequence[Evaluation]) -> list[dict[str, Any]]:
    """The `{task, model, dataset, metric, before, after}` rows of the summary, from the results files."""
    rows = []
    for evaluation in evaluations:
        protocol, metrics = SUMMARY_METRICS[evaluation.task]
        before = _metrics(out / evaluation.before, evaluation.task, protocol)
        after = _metrics(out / evaluation.after, evaluation.task, protocol)
        for metric in metrics:
            rows.append(
                {
                    "task": evaluation.task,
                    "model": evaluation.model,
                    "dataset": evaluation.dataset,
                    "metric": metric,
                    "before": before[metric],
                    "after": after[metric],
                }
            )
    return rows


def _metrics(path: Path, task: str, protocol: str) -> dict[str, float | None]:
    from earthvl.eval.faithfulness import read_faithfulness
    from earthvl.eval_results import read_results

    if task == "faithfulness":
        return read_faithfulness(path)
    metrics = read_results(path)["metrics"]
    if protocol not in metrics:
        raise EarthvlError(f"{path} has no {protocol} metrics (it has {', '.join(metrics) or 'none'})")
    return metrics[protocol]


def write_summary(out: Path, rows: list[dict[str, Any]]) -> Path:
    return write_bytes(out / SUMMARY_FILE, (json.dumps(rows, indent=1) + "\n").encode())


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary as an aligned text table (task, model, dataset, metric, before, after; n/a for a null value)."""
    header = ("task", "model", "dataset", "metric", "before", "after")
    shown = lambda value: "n/a" if value is None else f"{value:.3f}"  # noqa: E731
    cells = [header] + [
        (r["task"], r["model"], r["dataset"], r["metric"], shown(r["before"]), shown(r["after"])) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        lines.append(
            "  ".join(cell.rjust(width) if i >= 4 else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths)))
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)

