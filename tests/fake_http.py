"""A local HTTP server on 127.0.0.1 that misbehaves on purpose: slow answers, 429/500s, truncated or trickling
bodies, malformed headers, redirects, opt-out headers, Range requests; it answers GETs and POSTs (keeping their
bodies), counts requests per path and in-flight requests per host."""

import re
import socket
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from earthvl.builders.download import FetchPolicy

SLOW = 1.0
"""How long a "slow" answer waits; tests that use it set a shorter client timeout."""


@dataclass
class Route:
    body: bytes = b""
    content_type: str | None = "image/png"
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    script: list[str] = field(default_factory=list)
    """What the first requests get, in order: "slow", "429", "500" or "truncate"; later ones the normal answer."""
    retry_after: str = "0"
    delay: float = 0.0
    ranges: bool = False
    length: str | None = None
    """The Content-Length header sent instead of the body's true length."""
    trickle: float = 0.0
    """Seconds between the bytes of the body, sent one at a time."""


class FakeServer:
    """Programmable routes on 127.0.0.1, with request counts, Range headers and in-flight maxima per Host."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.ranges: dict[str, list] = defaultdict(list)
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        """Request bodies (POST) per path, in arrival order."""
        self.user_agents: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def url(self, path, host="127.0.0.1"):
        return f"http://{host}:{self.port}{path}"

    def add(self, path, host="127.0.0.1", **route):
        self.routes[path] = Route(**route)
        return self.url(path, host)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        fake = self.server.fake
        path = urlsplit(self.path).path
        self.hosts = (self.headers.get("Host", "").rsplit(":", 1)[0], "*")
        with fake.lock:
            fake.hits[path] += 1
            nth = fake.hits[path]
            fake.ranges[path].append(self.headers.get("Range"))
            fake.user_agents.append(self.headers.get("User-Agent"))
            for host in self.hosts:
                fake.in_flight[host] += 1
                fake.max_in_flight[host] = max(fake.max_in_flight[host], fake.in_flight[host])
        self.left = False
        try:
            self.answer(fake.routes.get(path), nth)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting
        finally:
            self.leave()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        with self.server.fake.lock:
            self.server.fake.bodies[urlsplit(self.path).path].append(self.rfile.read(length))
        self.do_GET()

    def leave(self):
        # Called before the body is written: the client cannot have finished its request before that.
        if not self.left:
            self.left = True
            with self.server.fake.lock:
                for host in self.hosts:
                    self.server.fake.in_flight[host] -= 1

    def respond(self, status, headers, body, truncate=False, length=None, trickle=0.0):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)) if length is None else length)
        self.end_headers()
        self.leave()
        if trickle:
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(trickle)
        else:
            self.wfile.write(body[: len(body) // 2] if truncate else body)

    def answer(self, route, nth):
        if route is None:
            return self.respond(404, {}, b"no such route")
        action = route.script[nth - 1] if nth <= len(route.script) else None
        if action == "slow":
            time.sleep(SLOW)
        elif action == "429":
            return self.respond(429, {"Retry-After": route.retry_after}, b"slow down")
        elif action == "500":
            return self.respond(500, {}, b"oops")
        time.sleep(route.delay)
        status, body, headers = route.status, route.body, dict(route.headers)
        if route.content_type:
            headers["Content-Type"] = route.content_type
        requested = self.headers.get("Range")
        if route.ranges and requested and status == 200:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested)[1])
            if start >= len(body):
                return self.respond(416, {"Content-Range": f"bytes */{len(body)}"}, b"")
            status, body = 206, body[start:]
            headers["Content-Range"] = f"bytes {start}-{len(route.body) - 1}/{len(route.body)}"
        self.respond(status, headers, body, truncate=action == "truncate", length=route.length, trickle=route.trickle)


LOOPBACK = ("127.0.0.0/8",)
"""What tests allow `FetchPolicy` to reach: the test server (every other non-public address stays refused)."""


def fast(**overrides):
    options = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0, "allow_networks": LOOPBACK, **overrides}
    return FetchPolicy(**options)


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
