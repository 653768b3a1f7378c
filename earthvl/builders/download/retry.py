"""Which failed requests are tried again and after how long: tenacity, driven by each `Problem` and `FetchPolicy`.

The delay doubles with each failure in a row (with jitter) up to `max_backoff`; a server's Retry-After replaces it,
capped by `max_backoff` too.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, TypeVar

import tenacity

from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.download.problem import Problem
from earthvl.errors import EarthvlError

_T = TypeVar("_T")


class Persistence:
    """How attempts at one request go on: retryable `Problem`s are tried again up to `policy.retries` failures in
    a row (a run of failures restarts whenever `progressed()`). An unreachable host is given up at once, unless
    `retry_unreachable` and an earlier attempt got an answer (a host that served part of a file may be back soon).
    `stop` ends the waiting and the retrying."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        progressed: Callable[[], bool] = lambda: False,
        retry_unreachable: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        self.policy = policy
        self.progressed = progressed
        self.retry_unreachable = retry_unreachable
        self.stop = stop
        self.attempts = 0
        self.failures = 0
        """Failures in a row so far."""
        self.answered = False
        """Whether some failed attempt got as far as a connection."""

    def _retryable(self, error: BaseException) -> bool:
        if not isinstance(error, Problem):
            return False
        if error.unreachable and not (self.retry_unreachable and self.answered):
            return False
        self.answered = self.answered or not error.unreachable
        return error.retry

    def _count(self, state: tenacity.RetryCallState) -> None:
        self.failures = 1 if self.progressed() else self.failures + 1

    def _wait(self, state: tenacity.RetryCallState) -> float:
        problem = state.outcome.exception() if state.outcome else None
        after = problem.retry_after if isinstance(problem, Problem) else None
        if after is not None:
            return min(after, self.policy.max_backoff)
        base = min(self.policy.max_backoff, self.policy.backoff * 2.0 ** min(self.failures - 1, 60))
        return base * random.uniform(0.5, 1.0)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        return self.failures > self.policy.retries or (self.stop is not None and self.stop.is_set())

    def call(self, attempt: Callable[[], _T]) -> _T:
        """What `attempt()` returns once it succeeds; else the error of the last attempt."""

        def counted() -> _T:
            self.attempts += 1
            return attempt()

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._retryable),
            after=self._count,
            wait=self._wait,
            stop=self._stop,
            sleep=time.sleep if self.stop is None else self.stop.wait,
            reraise=True,
        )(counted)


def retrying(
    url: str,
    policy: FetchPolicy,
    attempt: Callable[[], _T],
    progressed: Callable[[], bool] = lambda: False,
    hint: str = "",
) -> _T:
    """Call `attempt` until it succeeds, sleeping with backoff between retryable failures (see `Persistence`).

    An unreachable host before any answer came re-raises its `Problem`; other failures not worth retrying, or more
    than `policy.retries` in a row, raise EarthvlError; `hint` ends the message of the latter.
    """
    persistence = Persistence(policy, progressed=progressed)
    try:
        return persistence.call(attempt)
    except Problem as problem:
        if problem.unreachable and not persistence.answered:
            raise
        if not problem.retry:
            raise EarthvlError(f"cannot download {url}: {problem}") from None
        failures = f"{persistence.failures} failures in a row"
        raise EarthvlError(f"cannot download {url}: {problem} ({failures}){hint}") from None
