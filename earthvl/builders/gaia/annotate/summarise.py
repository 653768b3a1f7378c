"""Step 3, summarise: articles above a token threshold are condensed by the backend (the GAIA notebook's summary
step), and the summary is what the annotation reads."""

from __future__ import annotations

from earthvl.builders.gaia.annotate.clean import estimated_tokens
from earthvl.builders.gaia.annotate.prompts import Prompt
from earthvl.builders.gaia.annotate.records import Record
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.builders.gaia.annotate.schema import Summary, json_schema
from earthvl.builders.gaia.annotate.structured import run_structured
from earthvl.llm.backends import Backend, ChatRequest
from earthvl.llm.cache import ResultCache, cache_key, content_hash
from earthvl.llm.options import BackendArguments
from earthvl.llm.runner import Job

STEP = "summarise"
MAX_TOKENS = 600
"""Default length limit of a summary."""


def summarise(
    records: list[Record],
    threshold: int,
    backend: Backend,
    cache: ResultCache,
    options: BackendArguments,
    prompt: Prompt,
    retries: int,
    report: AnnotationReport,
    progress: bool = True,
) -> list[Record]:
    """Summaries for the records whose article exceeds `threshold` tokens; those whose summary failed are dropped,
    those not asked (the run stopped) are left out for a re-run."""
    long = [record for record in records if estimated_tokens(record.text) > threshold]
    schema = json_schema(Summary)
    jobs = []
    for record in long:
        request = ChatRequest(
            messages=prompt.messages(article=record.text),
            max_tokens=options.max_tokens or MAX_TOKENS,
            temperature=options.temperature or 0.0,
            seed=options.seed,
            json_schema=schema,
            schema_name="Summary",
        )
        key = cache_key({
            "step": STEP, "text": content_hash(record.text.encode("utf-8")), "prompt": prompt.key(),
            "backend": backend.settings(), "sampling": request.sampling(),
        })
        jobs.append(Job(str(record.id), key, request))
    run = run_structured(STEP, backend, jobs, cache, options, Summary, retries, report, progress)
    report.count(STEP, "in", len(records))
    report.count(STEP, "long", len(long))
    long_ids = {str(record.id) for record in long}
    kept = []
    for record in records:
        answer = run.answers.get(str(record.id))
        if str(record.id) in run.pending:
            continue
        if str(record.id) in long_ids and answer is None:
            report.drop(STEP, record.id, f"summary failed: {run.failures[str(record.id)]}")
            continue
        if answer is not None:
            record.summary = answer["summary"]
        kept.append(record)
    report.count(STEP, "summarised", sum(record.summary is not None for record in kept))
    return kept
