"""One GET over httpx: only http(s), redirects followed hop by hop, every connection made by the request's `Guard`.

Failures become a `Problem` that says whether another attempt may cure it (HTTP 408/429/5xx, timeouts, dropped
connections, truncated bodies) and whether the host could not be reached at all (no DNS answer, connection refused,
network unreachable), which callers report at once instead of retrying for minutes.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import threading
import urllib.request
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import httpcore
import httpx

from earthvl.builders.download.guard import Guard
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.download.problem import Problem, cause, describe
from earthvl.http_headers import retry_after

MAX_REDIRECTS = 10
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
"""Characters left as they are when a URL is re-quoted: the reserved ones and `%` of existing escapes."""
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", re.IGNORECASE | re.ASCII)
TRANSPORT_ERRORS = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError)
"""What sending a request or reading an answer raises when the connection or the answer goes wrong."""


def url_problem(url: str) -> str | None:
    """Why `url` is not downloaded, or None if it is an http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as err:
        return f"malformed URL {url!r} ({err})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"only http(s) URLs are downloaded, not {url!r}"
    if not host:
        return f"no host name in {url!r}"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # out of range, or 0
        return f"invalid port {parts.netloc.rpartition(':')[2]} of {host}"
    return None


def host(url: str) -> str:
    """The host name of `url`, or "" when it has none or is malformed."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _requote(url: str) -> str:
    """`url` with spaces, control and non-ASCII characters in its path and query percent-encoded, as browsers do."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=quote(parts.path, _URL_SAFE), query=quote(parts.query, _URL_SAFE)))


def _ssl_context() -> ssl.SSLContext:
    """httpx's TLS settings: certifi's CAs, or those `SSL_CERT_FILE` or `SSL_CERT_DIR` name."""
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _ssl_context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """Made once per setting of the environment (loading the CAs takes a while), which httpx reads itself."""
    return httpx.create_ssl_context()


def _proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for `url` (`http_proxy`, `no_proxy`, ...), read as urllib reads it."""
    netloc = url.netloc.decode("ascii")
    proxy = urllib.request.getproxies().get(url.scheme)
    return None if proxy is None or urllib.request.proxy_bypass(netloc) else proxy


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        return self._response.iter_stream()

    def close(self) -> None:
        self._response.close()


class _Transport(httpx.BaseTransport):
    """httpcore connection pools whose every connection `guard` makes, one per proxy; no connection is reused."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._pools: dict[str | None, httpcore.ConnectionPool] = {}

    def _pool(self, proxy: str | None) -> httpcore.ConnectionPool:
        if proxy not in self._pools:
            options = dict(ssl_context=_ssl_context(), max_keepalive_connections=0, network_backend=self._guard)
            if proxy is None:
                self._pools[proxy] = httpcore.ConnectionPool(**options)
            else:
                settings = httpx.Proxy(proxy)
                url = httpcore.URL(
                    scheme=settings.url.raw_scheme,
                    host=settings.url.raw_host,
                    port=settings.url.port,
                    target=settings.url.raw_path,
                )
                self._pools[proxy] = httpcore.HTTPProxy(url, settings.raw_auth, settings.headers.raw, **options)
        return self._pools[proxy]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        proxy = _proxy(url)
        self._guard.visit(url.host, None if proxy is None else httpx.URL(proxy).host)
        target = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
        answer = self._pool(proxy).handle_request(
            httpcore.Request(request.method, target, headers=request.headers.raw, extensions=request.extensions)
        )
        return httpx.Response(answer.status, headers=answer.headers, stream=_Body(answer), extensions=answer.extensions)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


def _send_problem(error: Exception, guard: Guard) -> Problem:
    """What went wrong while sending a request and waiting for the answer's head."""
    if guard.expired:
        return guard.past_deadline()
    if isinstance(error, httpx.InvalidURL):  # what httpx cannot put in a request
        return Problem(f"invalid URL{guard.where()} ({error})", retry=False)
    if isinstance(cause(error), ssl.SSLCertVerificationError):
        return Problem(f"{describe(cause(error))}{guard.where()}", retry=False)
    if isinstance(error, httpcore.RemoteProtocolError) and "Content-Length" in str(error):
        return Problem(f"malformed Content-Length {guard.header('Content-Length')!r}", retry=False)
    return Problem(f"{describe(error)}{guard.where()}", retry=True)


def _follow(
    client: httpx.Client,
    guard: Guard,
    url: str,
    accept: tuple[int, ...],
    on_redirect: Callable[[httpx.Response], None] | None,
) -> httpx.Response:
    """The answer to a GET of `url`, after its redirects; a `Problem` unless it is 2xx or its status in `accept`."""
    for _ in range(MAX_REDIRECTS + 1):
        problem = url_problem(url)
        if problem is not None:
            raise Problem(f"{problem}{guard.where()}", retry=False)
        try:
            response = client.send(client.build_request("GET", _requote(url)), stream=True)
        except Problem:
            raise
        except httpx.RemoteProtocolError as err:  # httpx could not read the Location of a redirect
            raise Problem(f"{err}{guard.where()}", retry=False) from None
        except (httpx.InvalidURL, *TRANSPORT_ERRORS) as err:
            raise _send_problem(err, guard) from None
        status = response.status_code
        if 200 <= status < 300 or status in accept:
            return response
        if response.next_request is None:  # not a redirect (301, 302, 303, 307, 308 with a Location)
            response.close()
            retry = status in (408, 429) or status >= 500
            raise Problem(
                f"HTTP {status} {response.reason_phrase}{guard.where()}",
                retry=retry,
                http_status=status,
                retry_after=retry_after(response.headers.get("Retry-After")) if retry else None,
            )
        try:
            if on_redirect is not None:
                on_redirect(response)
        finally:
            response.close()
        url = str(response.next_request.url)  # the Location, resolved against the URL by httpx
    raise Problem(f"more than {MAX_REDIRECTS} redirects{guard.where()}", retry=False)


@contextmanager
def request(
    url: str,
    policy: FetchPolicy,
    headers: dict[str, str] | None = None,
    accept: tuple[int, ...] = (),
    *,
    trusted: Iterable[str] = (),
    on_redirect: Callable[[httpx.Response], None] | None = None,
) -> Iterator[tuple[httpx.Response, Guard]]:
    """The answer to a GET of `url` (an HTTP error answer if its status is in `accept`), its body not read yet, and
    the request's guard; both are closed on exit. Raises a `Problem`. Hosts in `trusted` may be contacted whatever
    their address; `on_redirect` sees each redirect before it is followed and may raise to stop there."""
    guard = Guard(policy, host(url), trusted=trusted)
    # Bodies are kept as sent (identity): sizes, ranges and hashes are those of the bytes the server stores.
    headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity", "Connection": "close", **(headers or {})}
    transport = _Transport(guard)
    try:
        with httpx.Client(transport=transport, headers=headers, timeout=policy.timeout, trust_env=False) as client:
            response = _follow(client, guard, url, accept, on_redirect)
            try:
                yield response, guard
            finally:
                response.close()
    finally:
        guard.close()


def content_length(response: httpx.Response) -> int | None:
    """The Content-Length of an answer (the HTTP parser has checked it is a number), None when absent."""
    value = response.headers.get("Content-Length")
    return None if value is None else int(value)


def content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header, each None when absent or `*`."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def stream(
    response: httpx.Response,
    guard: Guard,
    sink: Callable[[bytes], object],
    stop: threading.Event | None = None,
    limit: int | None = None,
) -> int:
    """Feed the body of `response` to `sink` chunk by chunk and return its size; network failures become retryable."""
    size = 0
    chunks = response.iter_raw()
    while True:
        if stop is not None and stop.is_set():
            raise Problem("interrupted", retry=False, http_status=response.status_code)
        try:
            chunk = next(chunks, b"")
        except TRANSPORT_ERRORS as err:
            if guard.expired:
                raise guard.past_deadline(response.status_code) from None
            raise Problem(
                f"connection lost after {size} bytes{guard.where()} ({describe(err)})",
                retry=True,
                http_status=response.status_code,
            ) from None
        if guard.expired:  # the watchdog's shutdown may look like the end of the body
            raise guard.past_deadline(response.status_code)
        if not chunk:
            return size
        size += len(chunk)
        if limit is not None and size > limit:
            raise Problem(f"body larger than max_bytes={limit}", retry=False, http_status=response.status_code)
        sink(chunk)
