"""Reading HTTP response headers that both of earthvl's HTTP users (the polite fetcher and the LLM backends) obey."""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timezone

_DIGITS = re.compile(r"[0-9]+")
"""A header's decimal number: ASCII digits only (`str.isdigit` also accepts "²", which `int` refuses)."""


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay in seconds or an HTTP date), or None (also when unreadable)."""
    if not value:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
