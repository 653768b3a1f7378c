"""Run many chat requests through a backend: cached answers reused, bounded concurrency, clean stops at
`--max_requests` or `--budget`, token and cost accounting, and a progress bar showing requests/s, tokens and cost."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from earthvl.llm.backends import Backend, BackendUnusable, ChatRequest, ChatResult, RequestFailed
from earthvl.llm.cache import ResultCache
from earthvl.llm.options import BackendArguments


@dataclass(frozen=True)
class Job:
    """One request for one record."""

    record: str
    """The record's name in reports (e.g. a file name)."""
    key: str
    """Its cache key (`earthvl.llm.cache.cache_key`)."""
    request: ChatRequest


@dataclass
class Accounting:
    """What a run did and spent; `as_dict()` goes into the command's report."""

    jobs: int = 0
    cached: int = 0
    requests: int = 0
    answered: int = 0
    failed: int = 0
    not_run: int = 0
    """Jobs left for a later run because the run stopped (max_requests, budget, or an unusable backend)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    stopped_by: str | None = None
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["requests_per_second"] = round(self.requests / self.seconds, 3) if self.seconds else None
        out["cost"] = round(self.cost, 6)
        out["seconds"] = round(self.seconds, 3)
        return out


Parse = Callable[[ChatResult], Any]
"""Turns an answer into the JSON-able value kept for its record; a ValueError makes it a failure with that reason."""


def _keep_text(result: ChatResult) -> str:
    return result.text


_NOT_CACHED = object()


def _from_cache(answer: dict[str, Any] | None, parse: Parse) -> Any:
    """The value of a cached answer, parsed again so that it is held to the same checks as a new one; `_NOT_CACHED`
    when there is none, or one that is not (or no longer) usable, which is then asked again."""
    if answer is None:
        return _NOT_CACHED
    try:
        return parse(ChatResult(**answer["result"]))
    except (TypeError, ValueError, KeyError):
        return _NOT_CACHED


def run_jobs(
    backend: Backend,
    jobs: Iterable[Job],
    cache: ResultCache,
    options: BackendArguments,
    *,
    parse: Parse = _keep_text,
    progress: bool = True,
    desc: str = "requests",
) -> tuple[dict[str, Any], Accounting]:
    """Values of the jobs answered now or before (by cache key) and the run's accounting.

    Jobs whose key has a cached answer cost nothing; the others are sent, at most `options.concurrency` at a time
    (or in batches of `options.batch_size` for a backend with `chat_batch`), until they are done or the run stops
    at `max_requests` or `budget` (requests already in flight still finish and count). A BackendUnusable stops the
    run and is raised once what was answered is in the cache."""
    accounting = Accounting()
    values: dict[str, Any] = {}
    todo: list[Job] = []
    for job in jobs:
        accounting.jobs += 1
        value = _from_cache(cache.get(job.key), parse)
        if value is _NOT_CACHED:
            todo.append(job)
        else:
            values[job.key] = value
            accounting.cached += 1
    bar = tqdm(total=len(todo), desc=desc, unit="req", disable=not progress)
    start = time.monotonic()

    def record(job: Job, outcome: ChatResult | BaseException) -> None:
        accounting.requests += 1
        if isinstance(outcome, ChatResult):
            accounting.prompt_tokens += outcome.prompt_tokens
            accounting.completion_tokens += outcome.completion_tokens
            accounting.cost += options.cost(outcome.prompt_tokens, outcome.completion_tokens)
            try:
                value = parse(outcome)
            except ValueError as error:
                outcome = RequestFailed(f"unusable answer: {error}")
            else:
                values[job.key] = value
                cache.put(job.key, job.record, {"result": asdict(outcome)})
                accounting.answered += 1
        if isinstance(outcome, BaseException):
            reason = str(outcome) or type(outcome).__name__
            cache.fail(job.key, job.record, reason)
            accounting.failed += 1
            accounting.failures.append({"record": job.record, "reason": reason})
        elapsed = time.monotonic() - start
        bar.set_postfix(
            req_s=f"{accounting.requests / elapsed:.2f}" if elapsed else "-",
            tokens=accounting.prompt_tokens + accounting.completion_tokens,
            cost=f"{accounting.cost:.4f}",
            failed=accounting.failed,
        )
        bar.update(1)

    def stop_reason() -> str | None:
        if options.max_requests is not None and accounting.requests + in_flight() >= options.max_requests:
            return "max_requests"
        if options.budget is not None and accounting.cost >= options.budget:
            return "budget"
        return None

    pending: set[Future] = set()

    def in_flight() -> int:
        return len(pending)

    unusable: BackendUnusable | None = None
    queue = iter(todo)
    try:
        if hasattr(backend, "chat_batch"):
            unusable = _run_batches(backend, queue, options, record, stop_reason, accounting)
        else:
            with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
                futures: dict[Future, Job] = {}
                exhausted = False
                while True:
                    while not exhausted and unusable is None and len(pending) < options.concurrency:
                        reason = stop_reason()
                        if reason:
                            accounting.stopped_by = reason
                            break
                        job = next(queue, None)
                        if job is None:
                            exhausted = True
                            break
                        future = pool.submit(backend.chat, job.request)
                        futures[future] = job
                        pending.add(future)
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        pending.discard(future)
                        error = future.exception()
                        if isinstance(error, BackendUnusable):
                            unusable = error
                            continue
                        record(futures.pop(future), error if error is not None else future.result())
                    if unusable is not None or accounting.stopped_by:
                        exhausted = True
    finally:
        accounting.seconds = time.monotonic() - start
        bar.close()
    accounting.not_run = accounting.jobs - accounting.cached - accounting.answered - accounting.failed
    if unusable is not None:
        accounting.stopped_by = "backend unusable"
        raise unusable
    return values, accounting


def _run_batches(
    backend: Any,
    queue: Iterable[Job],
    options: BackendArguments,
    record: Callable[[Job, ChatResult | BaseException], None],
    stop_reason: Callable[[], str | None],
    accounting: Accounting,
) -> BackendUnusable | None:
    """Send jobs in batches of `options.batch_size` (fewer when max_requests is near)."""
    jobs = list(queue)
    i = 0
    while i < len(jobs):
        reason = stop_reason()
        if reason:
            accounting.stopped_by = reason
            break
        size = options.batch_size
        if options.max_requests is not None:
            size = min(size, options.max_requests - accounting.requests)
        chunk = jobs[i : i + size]
        try:
            outcomes = backend.chat_batch([job.request for job in chunk])
        except BackendUnusable as error:
            return error
        for job, outcome in zip(chunk, outcomes):
            record(job, outcome)
        i += len(chunk)
    return None
