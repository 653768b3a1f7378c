"""`Problem`: why one request failed, and whether another attempt may cure it."""

from __future__ import annotations

import httpcore


class Problem(Exception):
    """Why one request failed; `retry` says whether another attempt may succeed, `unreachable` that no connection
    could be made at all (DNS failure, connection refused, no route, connect timeout)."""

    def __init__(
        self,
        reason: str,
        *,
        retry: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(" ".join(reason.split()))  # one line, whatever the server or the parser put in it
        self.retry = retry
        self.http_status = http_status
        self.retry_after = retry_after
        self.unreachable = unreachable


def describe(error: BaseException) -> str:
    """A short reason for a network error."""
    if isinstance(error, (TimeoutError, httpcore.TimeoutException)):
        return "timed out"
    return str(error) or type(error).__name__


def cause(error: BaseException) -> BaseException:
    """The error that an httpcore error wraps (the OSError or SSLError of the socket), else `error` itself."""
    return error.__cause__ or error.__context__ or error
