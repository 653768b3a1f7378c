"""Downloads from the source websites: a polite parallel image fetcher (GAIA) and resumable, verified files (Zenodo).

Only http(s) is spoken. Failures that another attempt may cure (HTTP 408/429/5xx, timeouts, dropped connections,
truncated bodies) are retried with exponential backoff; a host that cannot be reached at all (no DNS answer,
connection refused, network unreachable) is reported at once instead of being retried for minutes.

Every connection, for the first URL and for each redirect, goes only to an address checked beforehand: loopback,
private, link-local and other non-public addresses are refused unless `FetchPolicy.allow_networks` names them (a
URL handed to `download_file` or the Zenodo API URL is the caller's own choice: its host is trusted by name).
"""

from __future__ import annotations

import email.utils
import errno
import hashlib
import http.client
import ipaddress
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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from tqdm.auto import tqdm

from earthvl import __version__, atomic
from earthvl.errors import EarthvlError

ZENODO_API = "https://zenodo.org/api/records/{record}"
ZENODO_RECORD_PAGE = "https://zenodo.org/records/{record}"
MANIFEST = "fetch_manifest.json"
JOURNAL = "fetch_manifest.journal"
"""One JSON line per result since the manifest was last saved: a run killed outright loses none of its results."""
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
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", re.IGNORECASE | re.ASCII)
_DIGITS = re.compile(r"[0-9]+")
"""A header's decimal number: ASCII digits only (`str.isdigit` also accepts "²", which `int` refuses)."""
MAX_KEY_BYTES = 200
"""Longest key of `fetch_all` in UTF-8 bytes: with its extension and `.part` it stays a valid file name."""
_ADDRESS_KINDS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
)
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
    deadline: float = 300.0
    """Longest time in seconds one request may take, redirects included, from connecting to the last byte of the
    body (`fetch_all`, API calls); `timeout` alone bounds each read, not a body that trickles in. For
    `download_file` it bounds the wait for the answer's headers: its bodies may take hours and resume if cut."""
    allow_networks: tuple[str, ...] = ()
    """Non-public networks (CIDR, e.g. `10.0.0.0/8`, `127.0.0.1/32`) that requests may reach. Every other loopback,
    private, link-local or reserved address is refused before connecting, for the first URL and every redirect."""
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
        if not self.deadline > 0 or not self.timeout > 0:
            raise EarthvlError(
                f"FetchPolicy needs timeout > 0 and deadline > 0, got {self.timeout} and {self.deadline}"
            )
        self.allow_networks = tuple(self.allow_networks)
        for network in self.allow_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise EarthvlError(f"allow_networks: {network!r} is not a network such as 10.0.0.0/8") from None

    def refusal(self, address: str) -> str | None:
        """Why a connection to the IP `address` is refused, or None when it is public or in `allow_networks`."""
        ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) is no part of the address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in ipaddress.ip_network(network, strict=False) for network in self.allow_networks):
            return None
        if ip.is_global and not ip.is_multicast:
            return None
        kind = next((word for test, word in _ADDRESS_KINDS if getattr(ip, test)), "reserved")
        return f"{address} is a{'n' if kind[0] in 'aeiou' else ''} {kind} address"


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


class _OptedOut(Exception):
    """A redirect answered with an AI opt-out (X-Robots-Tag) on the way to the image."""

    def __init__(self, http_status: int) -> None:
        super().__init__(f"HTTP {http_status} redirect with an AI opt-out")
        self.http_status = http_status


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
        super().__init__(" ".join(reason.split()))  # one line, even for urllib's multi-line redirect messages
        self.retry = retry
        self.http_status = http_status
        self.retry_after = retry_after
        self.unreachable = unreachable


# --- HTTP plumbing -----------------------------------------------------------------------------------------------


class _Guard:
    """What every connection of one request (its redirects included) goes through: the address check before
    connecting, the opt-out check on redirects, and a watchdog that shuts the request's sockets once its deadline has
    passed (a blocked read then returns at once). `host` is the host contacted last."""

    def __init__(self, policy: FetchPolicy, url: str, *, trusted: Iterable[str] = (), opt_out: bool = False) -> None:
        self.policy = policy
        self.opt_out = opt_out
        self.first_host = _host(url)
        self.host = self.first_host
        self.expired = False
        self._trusted = {host.lower() for host in trusted}
        self._proxy: str | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(policy.deadline, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def close(self) -> None:
        """Stop the watchdog: the request is over, or its body is exempt from the deadline."""
        self._timer.cancel()
        with self._lock:
            self._sockets.clear()

    def where(self) -> str:
        """" from HOST" when a redirect led to another host than the URL's, else nothing."""
        return f" from {self.host}" if self.host != self.first_host else ""

    def visit(self, request: urllib.request.Request) -> None:
        """Note the host of a request about to be sent. Through a proxy (which resolves the name itself), the host is
        checked here as far as this machine can resolve it, and the proxy, the user's own setting, is trusted."""
        self.host = _host(request.full_url)
        connect_to = _host("//" + request.host)
        self._proxy = connect_to if connect_to != self.host else None
        if self._proxy is not None and self.host not in self._trusted:
            try:
                infos = socket.getaddrinfo(self.host, None, type=socket.SOCK_STREAM)
            except OSError:
                return
            self._allowed(self.host, infos)

    def _allowed(self, host: str, infos: list[Any]) -> list[Any]:
        """The addresses of `host` that may be contacted; a `_Problem` when there are none."""
        allowed = [info for info in infos if self.policy.refusal(info[4][0]) is None]
        if not allowed:
            reasons = "; ".join(dict.fromkeys(str(self.policy.refusal(info[4][0])) for info in infos))
            raise _Problem(
                f"refusing to connect to {host} ({reasons}): only public addresses are fetched unless "
                "allow_networks (--allow_networks) names the network",
                retry=False,
            )
        return allowed

    def connect(self, address: tuple[str, int], timeout: float, source_address: Any = None) -> socket.socket:
        """`socket.create_connection`, to checked addresses only; the sockets are watched."""
        host, port = address
        if not 0 < port < 2**16:  # getaddrinfo would wrap it around to another port
            raise _Problem(f"invalid port {port} of {host}", retry=False)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if host.lower() not in self._trusted and host.lower() != self._proxy:
            infos = self._allowed(host, infos)
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            self.watch(sock)
            try:
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as err:
                error = err
                sock.close()
        assert error is not None  # getaddrinfo answers with at least one address or raises
        raise error


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already, or never connected
        pass


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, guard: _Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = guard.connect


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, guard: _Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = guard.connect
        self._guard = guard

    def connect(self) -> None:
        super().connect()
        self._guard.watch(self.sock)  # the TLS socket that replaced the plain one


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, guard: _Guard) -> None:
        super().__init__()
        self.guard = guard

    def http_open(self, req: urllib.request.Request) -> Any:
        self.guard.visit(req)
        return self.do_open(_HTTPConnection, req, guard=self.guard)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, guard: _Guard) -> None:
        super().__init__()
        self.guard = guard

    def https_open(self, req: urllib.request.Request) -> Any:
        self.guard.visit(req)
        return self.do_open(_HTTPSConnection, req, context=self._context, guard=self.guard)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    def __init__(self, guard: _Guard) -> None:
        self.guard = guard

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if self.guard.opt_out and _opted_out(headers.get_all("X-Robots-Tag") or []):
            fp.close()
            raise _OptedOut(code)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(guard: _Guard) -> urllib.request.OpenerDirector:
    """An opener that speaks only http(s) (redirects to ftp: or file: fail instead of being followed), through
    `guard`."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HTTPHandler(guard),
        _HTTPSHandler(guard),
        urllib.request.HTTPDefaultErrorHandler(),
        _RedirectHandler(guard),
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


def _host(url: str) -> str:
    """The host name of `url`, or "" when it has none or is malformed."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _describe(err: BaseException) -> str:
    return "timed out" if isinstance(err, TimeoutError) else str(err) or type(err).__name__


def _retry_after(value: str | None) -> float | None:
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


def _delay(policy: FetchPolicy, failures: int, retry_after: float | None) -> float:
    """Seconds to sleep after the `failures`-th failure in a row."""
    if retry_after is not None:
        return min(retry_after, policy.max_backoff)
    base = min(policy.max_backoff, policy.backoff * 2.0 ** min(failures - 1, 60))
    return base * random.uniform(0.5, 1.0)


@contextmanager
def _request(
    url: str,
    policy: FetchPolicy,
    headers: dict[str, str] | None = None,
    accept: tuple[int, ...] = (),
    *,
    trusted: Iterable[str] = (),
    opt_out: bool = False,
) -> Iterator[tuple[Any, _Guard]]:
    """The response to a GET of `url` (an HTTP error response if its status is in `accept`) and the request's
    guard, closed on exit. Raises a `_Problem`, or `_OptedOut` for an opt-out on a redirect when `opt_out`. Hosts
    in `trusted` may be contacted whatever their address."""
    guard = _Guard(policy, url, trusted=trusted, opt_out=opt_out)
    try:
        with _open(_opener(guard), guard, url, policy, headers, accept) as response:
            yield response, guard
    finally:
        guard.close()


def _open(
    opener: urllib.request.OpenerDirector,
    guard: _Guard,
    url: str,
    policy: FetchPolicy,
    headers: dict[str, str] | None,
    accept: tuple[int, ...],
) -> Any:
    request = urllib.request.Request(_requote(url), headers={"User-Agent": policy.user_agent, **(headers or {})})
    try:
        return opener.open(request, timeout=policy.timeout)
    except ValueError as err:  # http.client refuses what it cannot put in a request line
        raise _Problem(f"invalid URL{guard.where()} ({err})", retry=False) from None
    except urllib.error.HTTPError as err:
        if err.code in accept:
            return err
        err.close()
        retry = err.code in (408, 429) or err.code >= 500
        raise _Problem(
            f"HTTP {err.code} {err.reason}{guard.where()}",
            retry=retry,
            http_status=err.code,
            retry_after=_retry_after(err.headers.get("Retry-After")) if retry and err.headers else None,
        ) from None
    except urllib.error.URLError as err:
        # urllib wraps only what fails while connecting and sending the request.
        reason = err.reason
        if guard.expired:
            raise _past_deadline(policy, guard, None) from None
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise _Problem(f"{_describe(reason)}{guard.where()}", retry=False) from None
        if isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError)) or (
            isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS
        ):
            raise _Problem(f"cannot reach {guard.host} ({_describe(reason)})", retry=True, unreachable=True) from None
        if isinstance(reason, OSError):  # e.g. a reset while sending the request
            raise _Problem(f"{_describe(reason)}{guard.where()}", retry=True) from None
        raise _Problem(f"{reason}{guard.where()}", retry=False) from None  # e.g. a redirect to an unsupported scheme
    except (http.client.HTTPException, OSError) as err:  # connected, then no valid answer came
        if guard.expired:
            raise _past_deadline(policy, guard, None) from None
        raise _Problem(f"{_describe(err)}{guard.where()}", retry=True) from None


def _past_deadline(policy: FetchPolicy, guard: _Guard, http_status: int | None) -> _Problem:
    # Not retried: a server that trickled once will likely trickle again; a later run tries again.
    return _Problem(
        f"no complete answer within deadline={policy.deadline:g} s{guard.where()}", retry=False, http_status=http_status
    )


def _content_length(headers: Any, http_status: int) -> int | None:
    """The Content-Length of an answer, None when absent; a `_Problem` when it is not a decimal number."""
    value = headers.get("Content-Length")
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise _Problem(f"malformed Content-Length {value!r}", retry=False, http_status=http_status)
    return int(value)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header, each None when absent or `*`."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _stream(
    response: Any,
    guard: _Guard,
    sink: Callable[[bytes], object],
    stop: threading.Event | None = None,
    limit: int | None = None,
) -> int:
    """Feed the body of `response` to `sink` chunk by chunk and return its size; network failures become retryable."""
    size = 0
    while True:
        if stop is not None and stop.is_set():
            raise _Problem("interrupted", retry=False, http_status=response.status)
        try:
            chunk = response.read(CHUNK)
        except (http.client.HTTPException, OSError) as err:
            if guard.expired:
                raise _past_deadline(guard.policy, guard, response.status) from None
            raise _Problem(
                f"connection lost after {size} bytes{guard.where()} ({_describe(err)})",
                retry=True,
                http_status=response.status,
            ) from None
        if guard.expired:  # the watchdog's shutdown may look like the end of the body
            raise _past_deadline(guard.policy, guard, response.status)
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


def _load_manifest(path: Path, journal: Path) -> dict[str, dict[str, Any]]:
    """The results of earlier runs: the manifest, updated by the journal of a run that was killed."""
    results: Any = {}
    if path.is_file():
        try:
            results = json.loads(path.read_text(encoding="utf-8"))["results"]
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise EarthvlError(f"{path} is not a fetch manifest ({err}); delete it to fetch everything again") from None
        if not isinstance(results, dict):
            raise EarthvlError(f"{path} is not a fetch manifest; delete it to fetch everything again")
    if journal.is_file():
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                key, entry = json.loads(line)
            except (ValueError, TypeError, RecursionError):
                continue  # the last line of a run killed while writing it
            if isinstance(key, str) and isinstance(entry, dict):
                results[key] = entry
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
    key: str, url: str, dest: Path, policy: FetchPolicy, stop: threading.Event
) -> tuple[str, str | None, str | None, int]:
    """One request for `url`: (status, file name, sha256, HTTP status), or a `_Problem`."""
    try:
        with _request(url, policy, opt_out=policy.respect_opt_out) as (response, guard):
            status = response.status
            if policy.respect_opt_out and _opted_out(response.headers.get_all("X-Robots-Tag") or []):
                return "opted_out", None, None, status
            length = _content_length(response.headers, status)
            if length is not None and length > policy.max_bytes:
                reason = f"{length} bytes is more than max_bytes={policy.max_bytes}"
                raise _Problem(reason, retry=False, http_status=status)
            name = key + _extension(response.headers.get_content_type(), url)
            part = dest / f"{name}.part"
            sha256 = hashlib.sha256()
            try:
                with open(part, "wb") as out:

                    def sink(chunk: bytes) -> None:
                        sha256.update(chunk)
                        out.write(chunk)

                    size = _stream(response, guard, sink, stop, policy.max_bytes)
                if length is not None and size != length:
                    raise _Problem(f"truncated body: {size} of {length} bytes", retry=True, http_status=status)
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
    attempts = 0
    while True:
        attempts += 1
        try:
            status, path, sha256, http_status = _fetch_once(key, url, dest, policy, stop)
            return FetchResult(key, url, status, path, sha256, http_status, None, attempts)
        except EarthvlError:
            raise
        except _Problem as problem:
            # In a crawl of many hosts, an unreachable one is not worth waiting for: a later run retries it.
            if not problem.retry or problem.unreachable or attempts > policy.retries or stop.is_set():
                error = str(problem) if attempts == 1 else f"{problem} (after {attempts} attempts)"
                return FetchResult(key, url, "failed", None, None, problem.http_status, error, attempts)
            stop.wait(_delay(policy, attempts, problem.retry_after))
        except Exception as error:  # whatever else a hostile answer breaks fails this URL only, never the crawl
            reason = f"unreadable answer ({type(error).__name__}: {error})"
            return FetchResult(key, url, "failed", None, None, None, reason, attempts)


def fetch_all(
    items: Iterable[tuple[str, str]],
    dest: str | Path,
    policy: FetchPolicy | None = None,
    progress: bool = True,
) -> dict[str, FetchResult]:
    """Download each (key, url) to `dest/<key><ext>`, politely (see `FetchPolicy`) and resumably.

    `dest/fetch_manifest.json` records every key's result, so a later run requests only what failed or is missing;
    while a run goes on, `dest/fetch_manifest.journal` keeps each new result at once, so that a run killed outright
    (no chance to save the manifest) loses none. Returns the results in the order of `items`.
    """
    policy = policy or FetchPolicy()
    dest = Path(dest)
    urls = _unique_items(items)
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST
    journal_path = dest / JOURNAL
    manifest = _load_manifest(manifest_path, journal_path)
    _save_manifest(manifest_path, manifest)
    journal = open(journal_path, "w", encoding="utf-8")
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
            journal.write(json.dumps([result.key, manifest[result.key]]) + "\n")
            journal.flush()
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
    saved = time.monotonic()
    try:
        for key, url in urls.items():
            earlier = _earlier(key, url, manifest.get(key), dest, policy)
            problem = _url_problem(url)
            if earlier is not None:
                record(earlier)
            elif problem is not None:
                record(FetchResult(key, url, "failed", None, None, None, problem, 0))
            else:
                queues.setdefault(urlsplit(url).hostname or "", deque()).append((key, url))
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
                        running[pool.submit(_fetch_one, key, url, dest, policy, stop)] = host
                        in_flight[host] += 1
                        submitted = True
            # The timeout keeps Ctrl-C responsive: a blocked wait would not see it until a request ends.
            done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                in_flight[running.pop(future)] -= 1
                record(future.result())
            if time.monotonic() - saved > MANIFEST_INTERVAL:
                _save_manifest(manifest_path, manifest)
                journal.seek(0)
                journal.truncate()
                saved = time.monotonic()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        _save_manifest(manifest_path, manifest)
        journal.close()
        journal_path.unlink()
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


def _download_attempt(url: str, part: _Part, policy: FetchPolicy, bar: Any, trusted: str) -> None:
    """One request for the rest of `url` after what `part` holds; returns once the part is complete."""
    headers = {"Range": f"bytes={part.size}-"} if part.size else {}
    with _request(url, policy, headers, accept=(416,) if part.size else (), trusted=[trusted]) as (response, guard):
        guard.close()  # the body may take hours: only `timeout` bounds it, and a cut one resumes
        status = response.status
        if status == 416:  # nothing left after the bytes we have: complete, unless the remote file is shorter
            total = _content_range(response.headers.get("Content-Range"))[1]
            if total is None or total == part.size:
                return
            reason = f"the remote file has {total} bytes, fewer than the {part.size} downloaded; starting again"
            part.restart()
            raise _Problem(reason, retry=True, http_status=status)
        length = _content_length(response.headers, status)
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

                _stream(response, guard, sink)
        except OSError as err:
            raise EarthvlError(f"cannot write {part.path}: {err}") from err
        if end is not None and part.size < end:
            raise _Problem(f"connection closed {end - part.size} bytes before the end", retry=True, http_status=status)


def _file_md5(path: Path) -> str:
    hasher = hashlib.md5()
    _hash_file(path, hasher)
    return hasher.hexdigest()


def _download(url: str, dest: Path, md5: str | None, policy: FetchPolicy, progress: bool, trusted: str) -> Path:
    """`download_file`, raising the `_Problem` of a host that cannot be reached at all; the host `trusted` may be
    contacted whatever its address."""
    md5 = md5.lower() if md5 else None
    if dest.is_file() and (md5 is None or _file_md5(dest) == md5):
        return dest
    problem = _url_problem(url)
    if problem is not None:
        raise EarthvlError(f"cannot download {dest.name}: {problem}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(dest.with_name(dest.name + ".part"), md5 is not None)
    hint = f"; run again to resume from the bytes in {part.path}"
    bar = tqdm(initial=part.size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress)
    with bar:
        _retrying(url, policy, lambda: _download_attempt(url, part, policy, bar, trusted), part.progressed, hint)
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

    Returns at once, without a request, when `dest` exists and matches `md5` (or no md5 is given). The host of `url`
    is the caller's choice and may be anywhere; where it redirects must be public (see `FetchPolicy.allow_networks`).
    """
    try:
        return _download(url, Path(dest), md5, policy or FetchPolicy(), progress, _host(url))
    except _Problem as problem:
        raise EarthvlError(f"{problem}: no network? Could not download {url}") from None


# --- Zenodo --------------------------------------------------------------------------------------------------------


def _get_json(url: str, policy: FetchPolicy) -> Any:
    """The JSON answer of `url`, whose host is the caller's choice (trusted)."""

    def attempt() -> bytes:
        body = bytearray()
        headers = {"Accept": "application/json"}
        with _request(url, policy, headers, trusted=[_host(url)]) as (response, guard):
            length = _content_length(response.headers, response.status)
            _stream(response, guard, body.extend, limit=policy.max_bytes)
            if length is not None and len(body) != length:
                reason = f"truncated body: {len(body)} of {length} bytes"
                raise _Problem(reason, retry=True, http_status=response.status)
        return bytes(body)

    body = _retrying(url, policy, attempt, lambda: False)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise EarthvlError(f"{url} did not answer with JSON ({type(err).__name__}: {err})") from None


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
        # Links to the API's own host are trusted like the API URL; others must lead to public addresses.
        return [_download(file.url, dest / file.name, file.md5, policy, progress, _host(api_url)) for file in files]
    except _Problem as problem:
        raise _unreachable(record, problem, dest) from None
