"""Where the connections of one request are made: the address guard and the request's deadline.

Every connection, for the first URL and for each redirect, goes only to an address checked beforehand: loopback,
private, link-local and other non-public addresses are refused unless `FetchPolicy.allow_networks` names them.
Hosts the caller names as trusted (the host of a URL handed to `download_file`, the Zenodo API's) may be anywhere.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from typing import Any, Iterable

import httpcore

from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.download.problem import Problem, cause, describe

_ADDRESS_KINDS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
)
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
_HEAD_BYTES = 2**16
"""How much of an answer's start is kept to name a malformed header that the HTTP parser refused."""


def refusal(address: str, allow_networks: Iterable[str]) -> str | None:
    """Why a connection to the IP `address` is refused, or None when it is public or in `allow_networks`."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) is no part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in ipaddress.ip_network(network, strict=False) for network in allow_networks):
        return None
    if ip.is_global and not ip.is_multicast:
        return None
    kind = next((word for test, word in _ADDRESS_KINDS if getattr(ip, test)), "reserved")
    return f"{address} is a{'n' if kind[0] in 'aeiou' else ''} {kind} address"


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already, or never connected
        pass


class Guard(httpcore.SyncBackend):
    """The network backend of one request (its redirects included): it connects only to checked addresses, and a
    watchdog shuts the request's sockets once its deadline has passed (a blocked read then returns at once).
    `host` is the host of the URL requested last; `head` the start of what the latest connection received."""

    def __init__(self, policy: FetchPolicy, host: str, *, trusted: Iterable[str] = ()) -> None:
        self.policy = policy
        self.first_host = host
        self.host = host
        self.expired = False
        self.head = bytearray()
        self._trusted = {name.lower() for name in trusted}
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
        """" from HOST" when a redirect led to another host than the first URL's, else nothing."""
        return f" from {self.host}" if self.host != self.first_host else ""

    def past_deadline(self, http_status: int | None = None) -> Problem:
        """The failure of a request cut by the watchdog."""
        # Not retried: a server that trickled once will likely trickle again; a later run tries again.
        return Problem(
            f"no complete answer within deadline={self.policy.deadline:g} s{self.where()}",
            retry=False,
            http_status=http_status,
        )

    def header(self, name: str) -> str | None:
        """The value of the header `name` in the answer head the latest connection received, if there is one."""
        for line in bytes(self.head).split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
            field, _, value = line.partition(b":")
            if field.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    def visit(self, host: str, proxy: str | None) -> None:
        """Note the host of a request about to be sent, and the proxy it goes through. A proxy resolves the name
        itself: the host is then checked here as far as this machine can resolve it, and the proxy, the user's own
        setting, is trusted."""
        self.host = host
        self._proxy = proxy
        if proxy is not None and host.lower() not in self._trusted:
            try:
                infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                return
            self._allowed(host, infos)

    def _allowed(self, host: str, infos: list[Any]) -> list[Any]:
        """The addresses of `host` that may be contacted; a `Problem` when there are none."""
        allowed = [info for info in infos if refusal(info[4][0], self.policy.allow_networks) is None]
        if not allowed:
            reasons = "; ".join(dict.fromkeys(str(refusal(info[4][0], self.policy.allow_networks)) for info in infos))
            raise Problem(
                f"refusing to connect to {host} ({reasons}): only public addresses are fetched unless "
                "allow_networks (--allow_networks) names the network",
                retry=False,
            )
        return allowed

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """A connection to one of the checked addresses of `host`; a `Problem` when none can be made."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError as err:  # a label longer than 63 characters
            name = host if len(host) <= 60 else host[:60] + "..."
            raise Problem(f"invalid host name {name!r} ({err})", retry=False) from None
        except OSError as err:
            raise Problem(f"cannot reach {self.host} ({describe(err)})", retry=True, unreachable=True) from None
        if host.lower() not in self._trusted and host.lower() != self._proxy:
            infos = self._allowed(host, infos)
        self.head.clear()
        error: BaseException | None = None
        for *_, sockaddr in infos:
            try:
                stream = super().connect_tcp(sockaddr[0], port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                error = cause(err)
                continue
            self.watch(stream.get_extra_info("socket"))
            return _Watched(stream, self)
        assert error is not None  # getaddrinfo answers with at least one address or raises
        if isinstance(error, (ConnectionRefusedError, TimeoutError)) or getattr(error, "errno", 0) in _UNREACHABLE:
            raise Problem(f"cannot reach {self.host} ({describe(error)})", retry=True, unreachable=True) from None
        raise Problem(f"{describe(error)}{self.where()}", retry=True) from None


class _Watched(httpcore.NetworkStream):
    """A connection of a `Guard`: its TLS socket is watched too, and the start of what it reads is kept."""

    def __init__(self, stream: httpcore.NetworkStream, guard: Guard) -> None:
        self._stream = stream
        self._guard = guard

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._stream.read(max_bytes, timeout)
        if len(self._guard.head) < _HEAD_BYTES:
            self._guard.head += data[: _HEAD_BYTES - len(self._guard.head)]
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(ssl_context, server_hostname, timeout)
        self._guard.watch(stream.get_extra_info("socket"))  # the TLS socket that replaced the plain one
        self._guard.head.clear()  # a proxy's answer to CONNECT is no part of the answer
        return _Watched(stream, self._guard)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
