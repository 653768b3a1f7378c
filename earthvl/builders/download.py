"""Downloads from the source websites: a polite parallel image fetcher (GAIA) and resumable, verified files (Zenodo).

Only http(s) is spoken. Failures that another attempt may cure (HTTP 408/429/5xx, timeouts, dropped connections,
truncated bodies) are retried with exponential backoff; a host that cannot be reached at all (no DNS answer,
connection refused, network unreachable) is reported at once instead of being retried for minutes.
"""

from __future__ import annotations

import email.utils
import errno
import hashlib
import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from tqdm.auto import tqdm

from earthvl import __version__, atomic
from earthvl.errors import EarthvlError

ZENODO_API = "https://zenodo.org/api/records/{record}"
ZENODO_RECORD_PAGE = "https://zenodo.org/records/{record}"
MANIFEST = "fetch_manifest.json"
MANIFEST_INTERVAL = 10.0
"""Seconds between saves of the manifest while fetching; it is also saved at the end and when interrupted."""
CHUNK = 2**20
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
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
_URL_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
"""Characters left as they are when a URL is re-quoted: the reserved ones and `%` of existing escapes."""
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", re.IGNORECASE)
_T = TypeVar("_T")


@dataclass
class FetchPolicy:
    """How politely and how persistently to download."""

    max_per_host: int = 2
    """Concurrent requests to one host name (`fetch_all`)."""
    max_workers: int = 16
    """Concurrent requests in total (`fetch_all`)."""
    retries: int = 4
    """Extra attempts after the first on HTTP 408/429/5xx, timeouts, dropped connections and truncated bodies."""
    backoff: float = 1.0
    """Delay in seconds before the first retry; it doubles with each further failure, with jitter."""
    max_backoff: float = 60.0
    """Longest delay before a retry; also caps a server's Retry-After."""
    timeout: float = 30.0
    """Socket timeout in seconds, for connecting and for each read."""
    respect_opt_out: bool = True
    """Skip images served with `X-Robots-Tag: noai` or `noimageai` (`fetch_all`)."""
    max_bytes: int = 64 * 2**20
    """Refuse bodies larger than this (`fetch_all`; `download_file` has no limit)."""
    user_agent: str = f"earthvl/{__version__} (+https://github.com/earthvl/earthvl)"
    """User-Agent of every request, so that site owners can tell who is downloading."""

    def __post_init__(self) -> None:
        if self.max_per_host < 1 or self.max_workers < 1 or self.retries < 0:
            raise EarthvlError(
                f"FetchPolicy needs max_per_host >= 1, max_workers >= 1 and retries >= 0, got {self.max_per_host}, "
                f"{self.max_workers} and {self.retries}"
            )


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


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record."""

    name: str
    url: str
    size: int | None
    md5: str | None


class _Problem(Exception):
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
        super().__init__(reason)
        self.retry = retry
        self.http_status = http_status
        self.retry_after = retry_after
        self.unreachable = unreachable


# --- HTTP plumbing -----------------------------------------------------------------------------------------------


def _opener() -> urllib.request.OpenerDirector:
    """An opener that speaks only http(s): redirects to ftp: or file: fail instead of being followed."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _url_problem(url: str) -> str | None:
    """Why `url` is not downloaded, or None if it is an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as err:
        return f"malformed URL {url!r} ({err})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"only http(s) URLs are downloaded, not {url!r}"
    if not host:
        return f"no host name in {url!r}"
    return None


def _requote(url: str) -> str:
    """`url` with spaces, control and non-ASCII characters in its path and query percent-encoded, as browsers do."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=quote(parts.path, _URL_SAFE), query=quote(parts.query, _URL_SAFE)))


def _describe(err: BaseException) -> str:
    return "timed out" if isinstance(err, TimeoutError) else str(err) or type(err).__name__


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay in seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _delay(policy: FetchPolicy, failures: int, retry_after: float | None) -> float:
    """Seconds to sleep after the `failures`-th failure in a row."""
    if retry_after is not None:
        return min(retry_after, policy.max_backoff)
    base = min(policy.max_backoff, policy.backoff * 2.0 ** min(failures - 1, 60))
    return base * random.uniform(0.5, 1.0)


def _request(
    opener: urllib.request.OpenerDirector,
    url: str,
    policy: FetchPolicy,
    headers: dict[str, str] | None = None,
    accept: tuple[int, ...] = (),
) -> Any:
    """The response to a GET of `url` (an HTTP error response if its status is in `accept`); raises a `_Problem`."""
    request = urllib.request.Request(_requote(url), headers={"User-Agent": policy.user_agent, **(headers or {})})
    try:
        return opener.open(request, timeout=policy.timeout)
    except ValueError as err:  # http.client refuses what it cannot put in a request line
        raise _Problem(f"invalid URL ({err})", retry=False) from None
    except urllib.error.HTTPError as err:
        if err.code in accept:
            return err
        err.close()
        retry = err.code in (408, 429) or err.code >= 500
        raise _Problem(
            f"HTTP {err.code} {err.reason}",
            retry=retry,
            http_status=err.code,
            retry_after=_retry_after(err.headers.get("Retry-After")) if retry and err.headers else None,
        ) from None
    except urllib.error.URLError as err:
        # urllib wraps only what fails while connecting and sending the request.
        reason = err.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise _Problem(_describe(reason), retry=False) from None
        if isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError)) or (
            isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS
        ):
            host = urlsplit(url).hostname
            raise _Problem(f"cannot reach {host} ({_describe(reason)})", retry=True, unreachable=True) from None
        if isinstance(reason, OSError):  # e.g. a reset while sending the request
            raise _Problem(_describe(reason), retry=True) from None
        raise _Problem(str(reason), retry=False) from None  # e.g. a redirect to an unsupported scheme
    except (http.client.HTTPException, OSError) as err:  # connected, then no valid answer came
        raise _Problem(_describe(err), retry=True) from None


def _content_length(headers: Any) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header, each None when absent or `*`."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _stream(
    response: Any, sink: Callable[[bytes], object], stop: threading.Event | None = None, limit: int | None = None
) -> int:
    """Feed the body of `response` to `sink` chunk by chunk and return its size; network failures become retryable."""
    size = 0
    while True:
        if stop is not None and stop.is_set():
            raise _Problem("interrupted", retry=False, http_status=response.status)
        try:
            chunk = response.read(CHUNK)
        except (http.client.HTTPException, OSError) as err:
            raise _Problem(
                f"connection lost after {size} bytes ({_describe(err)})", retry=True, http_status=response.status
            ) from None
        if not chunk:
            return size
        size += len(chunk)
        if limit is not None and size > limit:
            raise _Problem(f"body larger than max_bytes={limit}", retry=False, http_status=response.status)
        sink(chunk)


def _retrying(
    url: str, policy: FetchPolicy, attempt: Callable[[], _T], progressed: Callable[[], bool], hint: str = ""
) -> _T:
    """Call `attempt` until it succeeds, sleeping with backoff between retryable failures.

    An unreachable host before any answer came re-raises its `_Problem`; other failures not worth retrying, or more
    than `policy.retries` in a row (a run restarts whenever `progressed()`), raise EarthvlError; `hint` ends the
    message of the latter.
    """
    failures = 0
    answered = False
    while True:
        try:
            return attempt()
        except _Problem as problem:
            if problem.unreachable and not answered:
                raise
            answered = answered or not problem.unreachable
            if not problem.retry:
                raise EarthvlError(f"cannot download {url}: {problem}") from None
            failures = 1 if progressed() else failures + 1
            if failures > policy.retries:
                raise EarthvlError(f"cannot download {url}: {problem} ({failures} failures in a row){hint}") from None
            time.sleep(_delay(policy, failures, problem.retry_after))


# --- fetch_all -----------------------------------------------------------------------------------------------------


def _opted_out(values: list[str]) -> bool:
    """Whether X-Robots-Tag header values carry noai/noimageai, for any user agent."""
    tokens = re.split(r"[\s,:;]+", ",".join(values).lower())
    return not OPT_OUT_DIRECTIVES.isdisjoint(tokens)


def _extension(content_type: str, url: str) -> str:
    """File extension from the Content-Type, else from the URL path, else `.bin`."""
    if content_type in CONTENT_TYPE_EXTENSIONS:
        return CONTENT_TYPE_EXTENSIONS[content_type]
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return suffix if _URL_SUFFIX.fullmatch(suffix) else ".bin"


def _unique_items(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """key -> url, refusing keys that are not plain file names and keys given twice with different URLs."""
    urls: dict[str, str] = {}
    for key, url in items:
        if not key or key in (".", "..") or any(c in key for c in "/\\\0"):
            raise EarthvlError(f"fetch key {key!r} (for {url}) is not a plain file name")
        if urls.setdefault(key, url) != url:
            raise EarthvlError(f"fetch key {key!r} is given twice, for {urls[key]} and {url}")
    return urls


def _load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))["results"]
    except (ValueError, KeyError, TypeError) as err:
        raise EarthvlError(f"{path} is not a fetch manifest ({err}); delete it to fetch everything again") from None
    if not isinstance(results, dict):
        raise EarthvlError(f"{path} is not a fetch manifest; delete it to fetch everything again")
    return results


def _save_manifest(path: Path, manifest: dict[str, dict[str, Any]]) -> None:
    atomic.write_bytes(path, json.dumps({"results": manifest}, indent=1).encode("utf-8"))


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
    key: str, url: str, dest: Path, policy: FetchPolicy, opener: urllib.request.OpenerDirector, stop: threading.Event
) -> tuple[str, str | None, str | None, int]:
    """One request for `url`: (status, file name, sha256, HTTP status), or a `_Problem`."""
    with _request(opener, url, policy) as response:
        status = response.status
        if policy.respect_opt_out and _opted_out(response.headers.get_all("X-Robots-Tag") or []):
            return "opted_out", None, None, status
        length = _content_length(response.headers)
        if length is not None and length > policy.max_bytes:
            raise _Problem(f"{length} bytes is more than max_bytes={policy.max_bytes}", retry=False, http_status=status)
        name = key + _extension(response.headers.get_content_type(), url)
        part = dest / f"{name}.part"
        sha256 = hashlib.sha256()
        try:
            with open(part, "wb") as out:

                def sink(chunk: bytes) -> None:
                    sha256.update(chunk)
                    out.write(chunk)

                size = _stream(response, sink, stop, policy.max_bytes)
            if length is not None and size != length:
                raise _Problem(f"truncated body: {size} of {length} bytes", retry=True, http_status=status)
            os.replace(part, dest / name)
        except OSError as err:
            raise EarthvlError(f"cannot write {part}: {err}") from err
        finally:
            part.unlink(missing_ok=True)
    return "ok", name, sha256.hexdigest(), status


def _fetch_one(
    key: str, url: str, dest: Path, policy: FetchPolicy, opener: urllib.request.OpenerDirector, stop: threading.Event
) -> FetchResult:
    """Fetch one item with retries; every outcome but a local write error is a result."""
    attempts = 0
    while True:
        attempts += 1
        try:
            status, path, sha256, http_status = _fetch_once(key, url, dest, policy, opener, stop)
            return FetchResult(key, url, status, path, sha256, http_status, None, attempts)
        except _Problem as problem:
            # In a crawl of many hosts, an unreachable one is not worth waiting for: a later run retries it.
            if not problem.retry or problem.unreachable or attempts > policy.retries or stop.is_set():
                error = str(problem) if attempts == 1 else f"{problem} (after {attempts} attempts)"
                return FetchResult(key, url, "failed", None, None, problem.http_status, error, attempts)
            stop.wait(_delay(policy, attempts, problem.retry_after))


def fetch_all(
    items: Iterable[tuple[str, str]],
    dest: str | Path,
    policy: FetchPolicy | None = None,
    progress: bool = True,
) -> dict[str, FetchResult]:
    """Download each (key, url) to `dest/<key><ext>`, politely (see `FetchPolicy`) and resumably.

    `dest/fetch_manifest.json` records every key's result, so a later run requests only what failed or is missing.
    Returns the results in the order of `items`.
    """
    policy = policy or FetchPolicy()
    dest = Path(dest)
    urls = _unique_items(items)
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST
    manifest = _load_manifest(manifest_path)
    results: dict[str, FetchResult] = {}
    counts: Counter[str] = Counter()
    queues: dict[str, deque[tuple[str, str]]] = {}
    bar = tqdm(total=len(urls), desc="fetching", unit="file", disable=not progress)

    def record(result: FetchResult) -> None:
        results[result.key] = result
        if result.status != "cached":
            manifest[result.key] = {
                "status": result.status,
                "url": result.url,
                "path": result.path,
                "sha256": result.sha256,
                "http_status": result.http_status,
                "error": result.error,
            }
        counts[result.status] += 1
        bar.set_postfix(
            ok=counts["ok"] + counts["cached"], opted_out=counts["opted_out"], failed=counts["failed"], refresh=False
        )
        bar.update()

    for key, url in urls.items():
        earlier = _earlier(key, url, manifest.get(key), dest, policy)
        problem = _url_problem(url)
        if earlier is not None:
            record(earlier)
        elif problem is not None:
            record(FetchResult(key, url, "failed", None, None, None, problem, 0))
        else:
            queues.setdefault(urlsplit(url).hostname or "", deque()).append((key, url))

    # Items are handed to the pool only while their host has a free slot, so that no worker sits blocked on a busy
    # host while others wait in the queue.
    in_flight: Counter[str] = Counter()
    running: dict[Future[FetchResult], str] = {}
    stop = threading.Event()
    opener = _opener()
    pool = ThreadPoolExecutor(max_workers=policy.max_workers, thread_name_prefix="earthvl-fetch")
    saved = time.monotonic()
    try:
        while queues or running:
            submitted = True
            while submitted and len(running) < policy.max_workers:
                submitted = False
                for host in list(queues):  # one item per host per pass: hosts take turns
                    if len(running) >= policy.max_workers:
                        break
                    if in_flight[host] < policy.max_per_host:
                        key, url = queues[host].popleft()
                        if not queues[host]:
                            del queues[host]
                        running[pool.submit(_fetch_one, key, url, dest, policy, opener, stop)] = host
                        in_flight[host] += 1
                        submitted = True
            # The timeout keeps Ctrl-C responsive: a blocked wait would not see it until a request ends.
            done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                in_flight[running.pop(future)] -= 1
                record(future.result())
            if time.monotonic() - saved > MANIFEST_INTERVAL:
                _save_manifest(manifest_path, manifest)
                saved = time.monotonic()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        _save_manifest(manifest_path, manifest)
        bar.close()
    return {key: results[key] for key in urls}


# --- download_file -------------------------------------------------------------------------------------------------


def _hash_file(path: Path, hasher: Any) -> int:
    """Feed the file at `path` to `hasher`; returns its size."""
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return size


class _Part:
    """The `.part` file of a download, with the md5 of what it holds so far (when one is to be checked)."""

    def __init__(self, path: Path, with_md5: bool) -> None:
        self.path = path
        self.md5 = hashlib.md5() if with_md5 else None
        self.size = 0
        if path.is_file():
            self.size = path.stat().st_size if self.md5 is None else _hash_file(path, self.md5)
        self.best = self.size

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.md5 = None if self.md5 is None else hashlib.md5()
        self.size = 0

    def progressed(self) -> bool:
        """Whether the part grew beyond its largest size so far."""
        grew = self.size > self.best
        self.best = max(self.best, self.size)
        return grew


def _download_attempt(
    url: str, part: _Part, policy: FetchPolicy, opener: urllib.request.OpenerDirector, bar: Any
) -> None:
    """One request for the rest of `url` after what `part` holds; returns once the part is complete."""
    headers = {"Range": f"bytes={part.size}-"} if part.size else {}
    with _request(opener, url, policy, headers, accept=(416,) if part.size else ()) as response:
        status = response.status
        if status == 416:  # nothing left after the bytes we have: complete, unless the remote file is shorter
            total = _content_range(response.headers.get("Content-Range"))[1]
            if total is None or total == part.size:
                return
            reason = f"the remote file has {total} bytes, fewer than the {part.size} downloaded; starting again"
            part.restart()
            raise _Problem(reason, retry=True, http_status=status)
        length = _content_length(response.headers)
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != part.size:
                reason = f"asked for the bytes from {part.size}, got a range from {start}; starting again"
                part.restart()
                raise _Problem(reason, retry=True, http_status=status)
        else:
            if part.size:  # the server ignored the Range header and sends the whole file
                part.restart()
            total = length
        end = None if length is None else part.size + length
        bar.reset(total=total)
        bar.update(part.size)
        try:
            with open(part.path, "ab") as out:

                def sink(chunk: bytes) -> None:
                    out.write(chunk)
                    if part.md5 is not None:
                        part.md5.update(chunk)
                    part.size += len(chunk)
                    bar.update(len(chunk))

                _stream(response, sink)
        except OSError as err:
            raise EarthvlError(f"cannot write {part.path}: {err}") from err
        if end is not None and part.size < end:
            raise _Problem(f"connection closed {end - part.size} bytes before the end", retry=True, http_status=status)


def _file_md5(path: Path) -> str:
    hasher = hashlib.md5()
    _hash_file(path, hasher)
    return hasher.hexdigest()


def _download(url: str, dest: Path, md5: str | None, policy: FetchPolicy, progress: bool) -> Path:
    """`download_file`, raising the `_Problem` of a host that cannot be reached at all."""
    md5 = md5.lower() if md5 else None
    if dest.is_file() and (md5 is None or _file_md5(dest) == md5):
        return dest
    problem = _url_problem(url)
    if problem is not None:
        raise EarthvlError(f"cannot download {dest.name}: {problem}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(dest.with_name(dest.name + ".part"), md5 is not None)
    opener = _opener()
    hint = f"; run again to resume from the bytes in {part.path}"
    bar = tqdm(initial=part.size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress)
    with bar:
        _retrying(url, policy, lambda: _download_attempt(url, part, policy, opener, bar), part.progressed, hint)
    if part.md5 is not None and (actual := part.md5.hexdigest()) != md5:
        part.path.unlink()
        raise EarthvlError(
            f"{dest}: md5 {actual} does not match the expected {md5}; the download was deleted, run again to fetch it"
        )
    os.replace(part.path, dest)
    return dest


def download_file(
    url: str, dest: str | Path, *, md5: str | None = None, policy: FetchPolicy | None = None, progress: bool = True
) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming an earlier partial download, and check its md5.

    Returns at once, without a request, when `dest` exists and matches `md5` (or no md5 is given).
    """
    try:
        return _download(url, Path(dest), md5, policy or FetchPolicy(), progress)
    except _Problem as problem:
        raise EarthvlError(f"{problem}: no network? Could not download {url}") from None


# --- Zenodo --------------------------------------------------------------------------------------------------------


def _get_json(url: str, policy: FetchPolicy) -> Any:
    opener = _opener()

    def attempt() -> bytes:
        body = bytearray()
        with _request(opener, url, policy, {"Accept": "application/json"}) as response:
            length = _content_length(response.headers)
            _stream(response, body.extend, limit=policy.max_bytes)
            if length is not None and len(body) != length:
                reason = f"truncated body: {len(body)} of {length} bytes"
                raise _Problem(reason, retry=True, http_status=response.status)
        return bytes(body)

    body = _retrying(url, policy, attempt, lambda: False)
    try:
        return json.loads(body)
    except ValueError as err:
        raise EarthvlError(f"{url} did not answer with JSON ({err})") from None


def _remote_file(entry: Any, url: str) -> RemoteFile:
    """A file entry of the Zenodo API; both the legacy (`filename`) and the current (`key`) shapes are read."""
    if not isinstance(entry, dict):
        raise EarthvlError(f"{url}: unexpected file entry {entry!r}")
    name = entry.get("key") or entry.get("filename")
    links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
    # In file listings `self` is the metadata and `content` the bytes; in a record's JSON `self` ends in /content.
    link = links.get("content") or links.get("download") or links.get("self")
    if not isinstance(name, str) or not isinstance(link, str):
        raise EarthvlError(f"{url}: a file entry without a name or a download link: {entry!r}")
    if PurePosixPath(name).name != name or name in (".", ".."):
        raise EarthvlError(f"{url}: refusing the file name {name!r}")
    algorithm, _, digest = str(entry.get("checksum") or "").rpartition(":")
    md5 = digest.lower() if algorithm.lower() in ("md5", "") and re.fullmatch(r"[0-9a-fA-F]{32}", digest) else None
    size = entry.get("size", entry.get("filesize"))
    return RemoteFile(name, link, int(size) if isinstance(size, (int, float)) else None, md5)


def _zenodo_files(record: str, api_url: str, policy: FetchPolicy) -> list[RemoteFile]:
    url = api_url.format(record=record)
    data = _get_json(url, policy)
    entries = data.get("files") if isinstance(data, dict) else None
    if isinstance(entries, dict):
        entries = entries.get("entries")
    if isinstance(entries, dict):
        entries = list(entries.values())
    if not isinstance(entries, list):
        raise EarthvlError(f"{url} did not answer with the file list of a Zenodo record")
    return [_remote_file(entry, url) for entry in entries]


def _unreachable(record: str, problem: _Problem, dest: Path | None) -> EarthvlError:
    into = "" if dest is None else f" into {dest}"
    return EarthvlError(
        f"{problem}: no network? Download the files of {ZENODO_RECORD_PAGE.format(record=record)} by hand{into} "
        "and pass that folder as --source"
    )


def zenodo_files(record: str, *, api_url: str = ZENODO_API, policy: FetchPolicy | None = None) -> list[RemoteFile]:
    """The files of a Zenodo record (name, download URL, size, md5), from its REST API at `api_url`."""
    try:
        return _zenodo_files(record, api_url, policy or FetchPolicy())
    except _Problem as problem:
        raise _unreachable(record, problem, None) from None


def download_zenodo_record(
    record: str,
    dest: str | Path,
    names: Iterable[str] | None = None,
    *,
    api_url: str = ZENODO_API,
    policy: FetchPolicy | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download the files of a Zenodo record (all, or those in `names`) into the folder `dest`, md5-verified.

    Files already there and verified are not downloaded again; interrupted downloads resume.
    """
    policy = policy or FetchPolicy()
    dest = Path(dest)
    try:
        files = _zenodo_files(record, api_url, policy)
        if names is not None:
            by_name = {file.name: file for file in files}
            wanted = list(dict.fromkeys(names))
            unknown = [name for name in wanted if name not in by_name]
            if unknown:
                have = ", ".join(sorted(by_name)) or "no files"
                raise EarthvlError(f"Zenodo record {record} has no {', '.join(unknown)}; it has {have}")
            files = [by_name[name] for name in wanted]
        return [_download(file.url, dest / file.name, file.md5, policy, progress) for file in files]
    except _Problem as problem:
        raise _unreachable(record, problem, dest) from None
