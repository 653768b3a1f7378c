"""`FetchPolicy`: how politely and how persistently to download."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from earthvl import __version__
from earthvl.errors import EarthvlError


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
