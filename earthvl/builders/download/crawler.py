"""`fetch_all`: a polite, resumable, parallel image fetcher for URLs taken from untrusted metadata (GAIA).

Polite: at most `max_per_host` requests per host at a time, hosts taking turns, backoff on 429/5xx honouring
Retry-After, a User-Agent that names earthvl, and images whose server sends `X-Robots-Tag: noai`/`noimageai`, on
the image or on a redirect to it, are not fetched. Resumable: the folder's manifest (see `manifest`) records each
key's result with the sha256 of its bytes, so a later run requests only what failed or is missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable
from urllib.parse import urlsplit

import httpx
from tqdm.auto import tqdm

from earthvl.builders.download.client import content_length, host, request, stream, url_problem
from earthvl.builders.download.manifest import Manifest
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.download.problem import Problem
from earthvl.builders.download.retry import Persistence
from earthvl.errors import EarthvlError

CONTENT_TYPE_EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/tiff": ".tif",
}
OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai"})
"""X-Robots-Tag directives by which a site asks that its images not be used for AI."""
MAX_KEY_BYTES = 200
"""Longest key of `fetch_all` in UTF-8 bytes: with its extension and `.part` it stays a valid file name."""
_URL_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")
_WAIT_POLL = 0.5
"""Seconds the scheduler waits for a request at a time: a blocked wait would not see Ctrl-C until a request ends."""


@dataclass
class FetchResult:
    """What became of one (key, url) item of `fetch_all`."""

    key: str
    url: str
    status: str
    """"ok" (downloaded now), "cached" (by an earlier run), "opted_out" or "failed"."""
    path: str | None
    """File name inside the destination folder, when ok or cached."""
    sha256: str | None
    http_status: int | None
    error: str | None
    attempts: int
    """Requests made for it by this run (0 when cached, skipped or rejected)."""

    def entry(self) -> dict[str, Any]:
        """Its manifest entry."""
        fields = ("status", "url", "path", "sha256", "http_status", "error")
        return {name: getattr(self, name) for name in fields}


class _OptedOut(Exception):
    """A redirect answered with an AI opt-out (X-Robots-Tag) on the way to the image."""

    def __init__(self, http_status: int) -> None:
        super().__init__(f"HTTP {http_status} redirect with an AI opt-out")
        self.http_status = http_status


def _opted_out(response: httpx.Response) -> bool:
    """Whether the X-Robots-Tag headers of `response` carry noai/noimageai, for any user agent."""
    tokens = re.split(r"[\s,:;]+", ",".join(response.headers.get_list("X-Robots-Tag")).lower())
    return not OPT_OUT_DIRECTIVES.isdisjoint(tokens)


def _refuse_opted_out(response: httpx.Response) -> None:
    if _opted_out(response):
        raise _OptedOut(response.status_code)


def _extension(content_type: str | None, url: str) -> str:
    """File extension from the Content-Type, else from the URL path, else `.bin`."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type in CONTENT_TYPE_EXTENSIONS:
        return CONTENT_TYPE_EXTENSIONS[media_type]
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return suffix if _URL_SUFFIX.fullmatch(suffix) else ".bin"


def key_problem(key: str) -> str | None:
    """Why `key` cannot name a file of `fetch_all`, or None."""
    if not key or key in (".", "..") or any(c in key for c in "/\\\0"):
        return "is not a plain file name"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return f"is longer than {MAX_KEY_BYTES} bytes" if size > MAX_KEY_BYTES else None


def _unique_items(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """key -> url, refusing keys that cannot name a file and keys given twice with different URLs."""
    urls: dict[str, str] = {}
    for key, url in items:
        problem = key_problem(key)
        if problem is not None:
            raise EarthvlError(f"fetch key {key!r:.80} (for {url:.200}) {problem}")
        if urls.setdefault(key, url) != url:
            raise EarthvlError(f"fetch key {key!r} is given twice, for {urls[key]} and {url}")
    return urls


def _earlier(key: str, url: str, entry: dict[str, Any] | None, dest: Path, policy: FetchPolicy) -> FetchResult | None:
    """The result of an earlier run that makes a request for (key, url) unnecessary, if there is one."""
    if not isinstance(entry, dict) or entry.get("url") != url:
        return None
    path = entry.get("path")
    if entry.get("status") == "ok" and isinstance(path, str) and (dest / path).is_file():
        return FetchResult(key, url, "cached", path, entry.get("sha256"), entry.get("http_status"), None, 0)
    if entry.get("status") == "opted_out" and policy.respect_opt_out:
        return FetchResult(key, url, "opted_out", None, None, entry.get("http_status"), None, 0)
    return None


def _fetch_once(
    key: str, url: str, dest: Path, policy: FetchPolicy, stop: threading.Event
) -> tuple[str, str | None, str | None, int]:
    """One request for `url`: (status, file name, sha256, HTTP status), or a `Problem`."""
    on_redirect = _refuse_opted_out if policy.respect_opt_out else None
    try:
        with request(url, policy, on_redirect=on_redirect) as (response, guard):
            status = response.status_code
            if policy.respect_opt_out and _opted_out(response):
                return "opted_out", None, None, status
            length = content_length(response)
            if length is not None and length > policy.max_bytes:
                reason = f"{length} bytes is more than max_bytes={policy.max_bytes}"
                raise Problem(reason, retry=False, http_status=status)
            name = key + _extension(response.headers.get("Content-Type"), url)
            part = dest / f"{name}.part"
            sha256 = hashlib.sha256()
            try:
                with open(part, "wb") as out:

                    def sink(chunk: bytes) -> None:
                        sha256.update(chunk)
                        out.write(chunk)

                    size = stream(response, guard, sink, stop, policy.max_bytes)
                if length is not None and size != length:
                    raise Problem(f"truncated body: {size} of {length} bytes", retry=True, http_status=status)
                os.replace(part, dest / name)
            except OSError as err:
                raise EarthvlError(f"cannot write {part}: {err}") from err
            finally:
                part.unlink(missing_ok=True)
    except _OptedOut as opted_out:
        return "opted_out", None, None, opted_out.http_status
    return "ok", name, sha256.hexdigest(), status


def _fetch_one(key: str, url: str, dest: Path, policy: FetchPolicy, stop: threading.Event) -> FetchResult:
    """Fetch one item with retries; every outcome but a local write error is a result."""
    # In a crawl of many hosts, an unreachable one is not worth waiting for: a later run retries it.
    persistence = Persistence(policy, retry_unreachable=False, stop=stop)
    try:
        status, path, sha256, http_status = persistence.call(lambda: _fetch_once(key, url, dest, policy, stop))
        return FetchResult(key, url, status, path, sha256, http_status, None, persistence.attempts)
    except EarthvlError:
        raise
    except Problem as problem:
        attempts = persistence.attempts
        error = str(problem) if attempts == 1 else f"{problem} (after {attempts} attempts)"
        return FetchResult(key, url, "failed", None, None, problem.http_status, error, attempts)
    except Exception as error:  # whatever else a hostile answer breaks fails this URL only, never the crawl
        reason = f"unreadable answer ({type(error).__name__}: {error})"
        return FetchResult(key, url, "failed", None, None, None, reason, persistence.attempts)


def fetch_all(
    items: Iterable[tuple[str, str]],
    dest: str | Path,
    policy: FetchPolicy | None = None,
    progress: bool = True,
) -> dict[str, FetchResult]:
    """Download each (key, url) to `dest/<key><ext>`, politely (see `FetchPolicy`) and resumably.

    `dest/fetch_manifest.json` records every key's result (with the sha256 of the file's bytes), so a later run
    requests only what failed or is missing; while a run goes on, `dest/fetch_manifest.journal` keeps each new
    result at once, so that a run killed outright (no chance to save the manifest) loses none. Returns the results
    in the order of `items`.
    """
    policy = policy or FetchPolicy()
    dest = Path(dest)
    urls = _unique_items(items)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(dest)
    results: dict[str, FetchResult] = {}
    counts: Counter[str] = Counter()
    queues: dict[str, deque[tuple[str, str]]] = {}
    bar = tqdm(total=len(urls), desc="fetching", unit="file", disable=not progress)

    def record(result: FetchResult) -> None:
        results[result.key] = result
        if result.status != "cached":
            manifest.record(result.key, result.entry())
        counts[result.status] += 1
        bar.set_postfix(
            ok=counts["ok"] + counts["cached"], opted_out=counts["opted_out"], failed=counts["failed"], refresh=False
        )
        bar.update()

    # Items are handed to the pool only while their host has a free slot, so that no worker sits blocked on a busy
    # host while others wait in the queue.
    in_flight: Counter[str] = Counter()
    running: dict[Future[FetchResult], str] = {}
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=policy.max_workers, thread_name_prefix="earthvl-fetch")
    try:
        for key, url in urls.items():
            earlier = _earlier(key, url, manifest.entries.get(key), dest, policy)
            problem = url_problem(url)
            if earlier is not None:
                record(earlier)
            elif problem is not None:
                record(FetchResult(key, url, "failed", None, None, None, problem, 0))
            else:
                queues.setdefault(host(url), deque()).append((key, url))
        while queues or running:
            submitted = True
            while submitted and len(running) < policy.max_workers:
                submitted = False
                for name in list(queues):  # one item per host per pass: hosts take turns
                    if len(running) >= policy.max_workers:
                        break
                    if in_flight[name] < policy.max_per_host:
                        key, url = queues[name].popleft()
                        if not queues[name]:
                            del queues[name]
                        running[pool.submit(_fetch_one, key, url, dest, policy, stop)] = name
                        in_flight[name] += 1
                        submitted = True
            done, _ = wait(running, timeout=_WAIT_POLL, return_when=FIRST_COMPLETED)
            for future in done:
                in_flight[running.pop(future)] -= 1
                record(future.result())
            manifest.save_when_due()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        manifest.close()
        bar.close()
    return {key: results[key] for key in urls}
