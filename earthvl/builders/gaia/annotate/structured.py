"""Schema-bound requests for the model steps: answers parsed with the pydantic model, an answer that violates the
schema asked again (up to `retries` times), then reported; tokens and cost summed per step."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.builders.gaia.annotate.schema import parse_answer
from earthvl.llm.backends import Backend, ChatResult
from earthvl.llm.cache import ResultCache
from earthvl.llm.options import BackendArguments
from earthvl.llm.runner import Accounting, Job, run_jobs

UNUSABLE = "unusable answer"
"""How the runner opens the reason of an answer that `parse` refused (here: a schema violation)."""


@dataclass
class StepRun:
    """The answers of one model step by record id, and why the others have none."""

    answers: dict[str, dict[str, Any]]
    failures: dict[str, str]
    pending: set[str]
    """Records not asked because the run stopped (`--max_requests`, `--budget`): a re-run asks them."""
    stopped_by: str | None


def run_structured(
    step: str,
    backend: Backend,
    jobs: list[Job],
    cache: ResultCache,
    options: BackendArguments,
    model: type[BaseModel],
    retries: int,
    report: AnnotationReport,
    progress: bool,
) -> StepRun:
    """Run `jobs` (one per record, `Job.record` its id) through `backend` with `model` as the answer's schema.
    `--max_requests` and `--budget` hold for the whole command: what earlier steps (in `report.usage`) spent counts."""

    def parse(result: ChatResult) -> dict[str, Any]:
        return parse_answer(result.text, model).model_dump(mode="json")

    answers: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    runs: list[Accounting] = []
    todo = jobs
    for _ in range(retries + 1):
        left = _left(options, report, runs)
        if isinstance(left, str):
            runs.append(Accounting(jobs=len(todo), stopped_by=left))
            break
        values, accounting = run_jobs(backend, todo, cache, left, parse=parse, progress=progress, desc=step)
        runs.append(accounting)
        failed_now = {failure["record"]: failure["reason"] for failure in accounting.failures}
        for job in todo:
            if job.key in values:
                answers[job.record] = values[job.key]
                failures.pop(job.record, None)
            elif job.record in failed_now:
                failures[job.record] = failed_now[job.record]
        todo = [job for job in todo if failures.get(job.record, "").startswith(UNUSABLE)]
        if not todo or accounting.stopped_by:
            break
    stopped_by = runs[-1].stopped_by
    pending = {job.record for job in jobs if job.record not in answers and job.record not in failures}
    report.usage[step] = {
        "records": len(jobs),
        "cached": runs[0].cached,
        "requests": sum(run.requests for run in runs),
        "schema_retries": sum(run.requests for run in runs[1:]),
        "answered": len(answers),
        "failed": len(failures),
        "prompt_tokens": sum(run.prompt_tokens for run in runs),
        "completion_tokens": sum(run.completion_tokens for run in runs),
        "cost": round(sum(run.cost for run in runs), 6),
        "seconds": round(sum(run.seconds for run in runs), 3),
        "pending": len(pending),
        "stopped_by": stopped_by,
    }
    return StepRun(answers, failures, pending, stopped_by)


def _left(options: BackendArguments, report: AnnotationReport, runs: list[Accounting]) -> BackendArguments | str:
    """`options` with the requests and budget left after what this command spent so far, or why nothing is left."""
    requests = sum(usage["requests"] for usage in report.usage.values()) + sum(run.requests for run in runs)
    cost = sum(usage["cost"] for usage in report.usage.values()) + sum(run.cost for run in runs)
    if options.max_requests is not None and requests >= options.max_requests:
        return "max_requests"
    if options.budget is not None and cost >= options.budget:
        return "budget"
    return replace(
        options,
        max_requests=None if options.max_requests is None else options.max_requests - requests,
        budget=None if options.budget is None else options.budget - cost,
    )
