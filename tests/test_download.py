"""earthvl.builders.download (crawler, files, Zenodo) against a local HTTP server that misbehaves on purpose."""

import _thread
import email.utils
import hashlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import trustme

from earthvl import __version__
from earthvl.builders.download.crawler import fetch_all
from earthvl.builders.download.files import download_file
from earthvl.builders.download.manifest import MANIFEST
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.download.zenodo import RemoteFile, download_zenodo_record, zenodo_files
from earthvl.errors import EarthvlError
from fake_http import LOOPBACK, closed_port, fast

def payload(n, seed=0):
    return bytes((i * 7 + seed * 13 + i // 251) % 256 for i in range(n))


def md5(data):
    return hashlib.md5(data).hexdigest()


# --- fetch_all ---------------------------------------------------------------------------------------------------


def test_fetch_all_writes_files_named_by_content_type_with_sha256(server, tmp_path):
    bodies = {key: payload(3000 + i, seed=i) for i, key in enumerate("abcd")}
    items = [
        ("a", server.add("/a", body=bodies["a"], content_type="image/png")),
        ("b", server.add("/b", body=bodies["b"], content_type="image/jpeg")),
        ("c", server.add("/img/c.WEBP", body=bodies["c"], content_type="application/octet-stream")),
        ("d", server.add("/d", body=bodies["d"], content_type=None)),
    ]
    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert list(results) == ["a", "b", "c", "d"]
    assert {key: r.path for key, r in results.items()} == {"a": "a.png", "b": "b.jpg", "c": "c.webp", "d": "d.bin"}
    for key, result in results.items():
        assert (result.status, result.http_status, result.attempts, result.error) == ("ok", 200, 1, None)
        assert (tmp_path / result.path).read_bytes() == bodies[key]
        assert result.sha256 == hashlib.sha256(bodies[key]).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "c.webp", "d.bin", MANIFEST]
    manifest = json.loads((tmp_path / MANIFEST).read_text())["results"]
    assert manifest["b"] == {
        "status": "ok",
        "url": items[1][1],
        "path": "b.jpg",
        "sha256": hashlib.sha256(bodies["b"]).hexdigest(),
        "http_status": 200,
        "error": None,
    }
    assert set(server.user_agents) == {f"earthvl/{__version__} (+https://github.com/earthvl/earthvl)"}


def test_fetch_all_retries_429_and_500(server, tmp_path):
    items = [
        ("busy", server.add("/busy", body=b"busy-bytes", script=["429", "429"])),
        ("broken", server.add("/broken", body=b"broken-bytes", script=["500", "500"])),
    ]
    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert [(r.status, r.attempts, r.http_status) for r in results.values()] == [("ok", 3, 200), ("ok", 3, 200)]
    assert (server.hits["/busy"], server.hits["/broken"]) == (3, 3)
    assert (tmp_path / "broken.png").read_bytes() == b"broken-bytes"


def test_fetch_all_gives_up_after_the_retries(server, tmp_path):
    url = server.add("/down", body=b"unavailable", status=503)
    (result,) = fetch_all([("down", url)], tmp_path, fast(retries=2), progress=False).values()

    assert (result.status, result.http_status, result.attempts, result.path) == ("failed", 503, 3, None)
    assert "HTTP 503" in result.error and "3 attempts" in result.error
    assert server.hits["/down"] == 3
    assert not (tmp_path / "down.png").exists()


def test_fetch_all_honours_retry_after_up_to_max_backoff(server, tmp_path):
    an_hour_ahead = email.utils.formatdate(time.time() + 3600, usegmt=True)
    items = [
        ("seconds", server.add("/seconds", body=b"1", script=["429"], retry_after="1")),
        ("date", server.add("/date", body=b"2", script=["429"], retry_after=an_hour_ahead)),
    ]
    start = time.monotonic()
    results = fetch_all(items, tmp_path, fast(backoff=0.001, max_backoff=0.3), progress=False)
    elapsed = time.monotonic() - start

    assert [r.status for r in results.values()] == ["ok", "ok"]
    assert 0.3 <= elapsed < 0.9  # waited max_backoff, not the 1 ms backoff nor the server's 1 s or 1 h


def test_fetch_all_retries_truncated_bodies_and_timeouts(server, tmp_path):
    body = payload(50_000)
    items = [
        ("cut", server.add("/cut", body=body, script=["truncate"])),
        ("slow", server.add("/slow", body=b"finally", script=["slow"])),
    ]
    results = fetch_all(items, tmp_path, fast(timeout=0.5), progress=False)

    assert [(r.status, r.attempts) for r in results.values()] == [("ok", 2), ("ok", 2)]
    assert (server.hits["/cut"], server.hits["/slow"]) == (2, 2)
    assert (tmp_path / "cut.png").read_bytes() == body
    assert results["cut"].sha256 == hashlib.sha256(body).hexdigest()
    assert (tmp_path / "slow.png").read_bytes() == b"finally"
    assert not list(tmp_path.glob("*.part"))


def test_fetch_all_fails_at_once_on_client_errors(server, tmp_path):
    items = [("missing", server.url("/missing")), ("forbidden", server.add("/forbidden", status=403))]
    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert [(r.status, r.http_status, r.attempts) for r in results.values()] == [("failed", 404, 1), ("failed", 403, 1)]
    assert "HTTP 404" in results["missing"].error
    assert (server.hits["/missing"], server.hits["/forbidden"]) == (1, 1)


def test_fetch_all_refuses_bodies_over_max_bytes(server, tmp_path):
    url = server.add("/big", body=payload(1000))
    (result,) = fetch_all([("big", url)], tmp_path, fast(max_bytes=999), progress=False).values()

    assert (result.status, result.attempts) == ("failed", 1)
    assert "max_bytes=999" in result.error
    assert server.hits["/big"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST]


def test_fetch_all_respects_ai_opt_out(server, tmp_path):
    items = [
        ("noai", server.add("/noai", body=b"1", headers={"X-Robots-Tag": "noai"})),
        ("noimageai", server.add("/noimageai", body=b"2", headers={"X-Robots-Tag": "otherbot: NoImageAI, noindex"})),
        ("indexless", server.add("/indexless", body=b"3", headers={"X-Robots-Tag": "noindex, nofollow"})),
    ]
    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert [(r.status, r.path, r.http_status) for r in results.values()] == [
        ("opted_out", None, 200),
        ("opted_out", None, 200),
        ("ok", "indexless.png", 200),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["indexless.png", MANIFEST])

    again = fetch_all(items, tmp_path, fast(), progress=False)
    assert [(r.status, r.attempts) for r in again.values()] == [("opted_out", 0), ("opted_out", 0), ("cached", 0)]
    assert sum(server.hits.values()) == 3

    unrestricted = fetch_all(items, tmp_path, fast(respect_opt_out=False), progress=False)
    assert [r.status for r in unrestricted.values()] == ["ok", "ok", "cached"]
    assert (tmp_path / "noimageai.png").read_bytes() == b"2"
    assert (server.hits["/noai"], server.hits["/noimageai"], server.hits["/indexless"]) == (2, 2, 1)


def test_fetch_all_bounds_requests_per_host(server, tmp_path):
    items = [(f"ip{i}", server.add(f"/ip{i}", body=b"x", delay=0.15)) for i in range(8)]
    items += [(f"name{i}", server.add(f"/name{i}", host="localhost", body=b"y", delay=0.15)) for i in range(8)]
    results = fetch_all(items, tmp_path, fast(max_per_host=2, max_workers=8), progress=False)

    assert Counter(r.status for r in results.values()) == {"ok": 16}
    assert server.max_in_flight["127.0.0.1"] == 2
    assert server.max_in_flight["localhost"] == 2
    assert server.max_in_flight["*"] > 2  # the two hosts were served side by side


def test_fetch_all_rerun_requests_only_what_is_missing_or_failed(server, tmp_path):
    items = [
        ("good", server.add("/good", body=b"good")),
        ("flaky", server.add("/flaky", body=b"flaky", status=500)),
        ("deleted", server.add("/deleted", body=b"deleted")),
        ("moved", server.add("/moved", body=b"old")),
    ]
    first = fetch_all(items, tmp_path, fast(retries=0), progress=False)
    assert [r.status for r in first.values()] == ["ok", "failed", "ok", "ok"]
    assert first["flaky"].http_status == 500
    manifest = json.loads((tmp_path / MANIFEST).read_text())["results"]
    assert manifest["flaky"]["status"] == "failed" and "HTTP 500" in manifest["flaky"]["error"]

    server.routes["/flaky"].status = 200
    (tmp_path / "deleted.png").unlink()
    items[3] = ("moved", server.add("/new-home", body=b"new", content_type="image/gif"))
    second = fetch_all(items, tmp_path, fast(retries=0), progress=False)

    assert [(r.status, r.attempts) for r in second.values()] == [("cached", 0), ("ok", 1), ("ok", 1), ("ok", 1)]
    assert second["good"].sha256 == hashlib.sha256(b"good").hexdigest()
    assert dict(server.hits) == {"/good": 1, "/flaky": 2, "/deleted": 2, "/moved": 1, "/new-home": 1}
    assert (tmp_path / "flaky.png").read_bytes() == b"flaky"
    assert (tmp_path / "moved.gif").read_bytes() == b"new"
    manifest = json.loads((tmp_path / MANIFEST).read_text())["results"]
    assert {key: entry["status"] for key, entry in manifest.items()} == dict.fromkeys(manifest, "ok")


def test_fetch_all_rejects_non_http_urls_without_opening_them(server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    items = [
        ("file", secret.as_uri()),
        ("ftp", "ftp://example.org/a.png"),
        ("data", "data:image/png;base64,AAAA"),
        ("fine", server.add("/fine", body=b"fine")),
    ]
    results = fetch_all(items, tmp_path / "out", fast(), progress=False)

    for key in ("file", "ftp", "data"):
        assert (results[key].status, results[key].attempts) == ("failed", 0)
        assert "only http(s) URLs" in results[key].error
    assert results["fine"].status == "ok"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["fine.png", MANIFEST])


def test_fetch_all_percent_encodes_spaces_and_non_ascii_in_urls(server, tmp_path):
    server.add("/my%20image%C3%A9.png", body=b"spaced", content_type=None)
    (result,) = fetch_all([("k", server.url("/my imageé.png"))], tmp_path, fast(), progress=False).values()

    assert (result.status, result.path) == ("ok", "k.png")
    assert server.hits["/my%20image%C3%A9.png"] == 1


def test_fetch_all_fails_an_unreachable_host_without_retrying(server, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}/a.png"
    start = time.monotonic()
    items = [("dead", dead), ("alive", server.add("/alive", body=b"ok"))]
    results = fetch_all(items, tmp_path, FetchPolicy(allow_networks=LOOPBACK), progress=False)

    assert time.monotonic() - start < 2  # the default backoff would wait for 15 s or more
    assert (results["dead"].status, results["dead"].attempts) == ("failed", 1)
    assert "cannot reach 127.0.0.1" in results["dead"].error and "refused" in results["dead"].error
    assert results["alive"].status == "ok"


def test_fetch_all_refuses_unsafe_or_clashing_keys(server, tmp_path):
    url = server.url("/a")
    with pytest.raises(EarthvlError, match="not a plain file name"):
        fetch_all([("../escape", url)], tmp_path, progress=False)
    with pytest.raises(EarthvlError, match="given twice"):
        fetch_all([("a", url), ("a", url + "?other")], tmp_path, progress=False)
    assert sum(server.hits.values()) == 0


def test_fetch_all_saves_the_manifest_when_interrupted(server, tmp_path):
    items = [(f"fast{i}", server.add(f"/fast{i}", body=b"f")) for i in range(2)]
    items += [(f"slow{i}", server.add(f"/slow{i}", body=b"s", delay=3.0)) for i in range(10)]
    interrupt = threading.Timer(0.6, _thread.interrupt_main)
    interrupt.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            fetch_all(items, tmp_path, fast(max_per_host=2, max_workers=2, timeout=0.5), progress=False)
    finally:
        interrupt.cancel()

    assert time.monotonic() - start < 2.5
    manifest = json.loads((tmp_path / MANIFEST).read_text())["results"]
    assert {key: entry["status"] for key, entry in manifest.items()} == {"fast0": "ok", "fast1": "ok"}


def test_fetch_all_fails_only_the_url_with_a_malformed_header(server, tmp_path):
    items = [
        ("length", server.add("/length", body=b"12345", length="\u00b2")),  # "²".isdigit() is true, int("²") fails
        ("negative", server.add("/negative", body=b"12345", length="-5")),
        ("retry", server.add("/retry", body=b"retried", script=["429"], retry_after="\u00b2")),
        ("fine", server.add("/fine", body=b"fine")),
    ]
    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert [(r.status, r.attempts) for r in results.values()] == [("failed", 1), ("failed", 1), ("ok", 2), ("ok", 1)]
    assert "malformed Content-Length '\u00b2'" in results["length"].error
    assert "malformed Content-Length '-5'" in results["negative"].error
    assert (tmp_path / "retry.png").read_bytes() == b"retried"  # the unreadable Retry-After is ignored, not fatal
    manifest = json.loads((tmp_path / MANIFEST).read_text())["results"]
    assert manifest["length"]["status"] == "failed" and "Content-Length" in manifest["length"]["error"]


def test_fetch_all_fails_only_the_url_with_a_hostile_redirect(server, tmp_path):
    locations = {
        "v6": "http://[::1",
        "port": f"http://127.0.0.1:{server.port + 2**16}/fine",  # getaddrinfo would wrap it around to the server's
        "scheme": "file:///etc/passwd",
        "loop": "",
        "superscript": "http://\u00b2/x",
        "label": f"http://{'a' * 300}/",
    }
    items = [(key, server.add(f"/{key}", status=302, headers={"Location": to})) for key, to in locations.items()]
    items.append(("fine", server.add("/fine", body=b"fine")))
    results = fetch_all(items, tmp_path, fast(retries=1), progress=False)

    assert results["fine"].status == "ok" and server.hits["/fine"] == 1
    for key in locations:
        assert (results[key].status, results[key].attempts) == ("failed", 1), key
        assert results[key].error and "\n" not in results[key].error, key
    assert results["port"].error == f"invalid port {server.port + 2**16} of 127.0.0.1"
    assert json.loads((tmp_path / MANIFEST).read_text())["results"].keys() == results.keys()


def test_fetch_all_gives_each_request_a_total_deadline(server, tmp_path):
    url = server.add("/trickle", body=b"x" * 200, trickle=0.05)  # 10 s in all; no read waits longer than 0.05 s
    start = time.monotonic()
    (result,) = fetch_all([("trickle", url)], tmp_path, fast(timeout=1.0, deadline=0.6), progress=False).values()

    assert time.monotonic() - start < 2.5
    assert (result.status, result.attempts) == ("failed", 1)
    assert "no complete answer within deadline=0.6 s" in result.error
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST]


@pytest.fixture
def tls(server, tmp_path, monkeypatch):
    """The server speaks HTTPS with a certificate of a test CA; the client trusts that CA alone (SSL_CERT_FILE)."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.use_tls(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    return server


def test_fetch_all_over_tls_checks_the_certificate(tls, tmp_path, monkeypatch):
    body = payload(20_000)
    url = tls.add("/secure", body=body)
    assert url.startswith("https://")
    (result,) = fetch_all([("secure", url)], tmp_path / "trusted", fast(), progress=False).values()
    assert (result.status, result.sha256) == ("ok", hashlib.sha256(body).hexdigest())

    monkeypatch.delenv("SSL_CERT_FILE")  # the public CAs do not know the test CA
    (result,) = fetch_all([("secure", url)], tmp_path / "untrusted", fast(), progress=False).values()
    assert (result.status, result.attempts) == ("failed", 1)  # not worth retrying
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert tls.hits["/secure"] == 1


def test_the_deadline_shuts_a_stalled_tls_connection(tls, tmp_path):
    url = tls.add("/stall", body=b"xy", trickle=3.0)  # the second byte comes 3 s after the first
    start = time.monotonic()
    (result,) = fetch_all([("stall", url)], tmp_path, fast(deadline=0.6), progress=False).values()

    assert time.monotonic() - start < 2  # the read was cut at the deadline: the TLS socket is watched too
    assert (result.status, result.attempts) == ("failed", 1)
    assert "no complete answer within deadline=0.6 s" in result.error


@pytest.fixture
def connections(monkeypatch):
    """Every address a socket of this process connects to. Only loopback is really connected: anything else fails
    here, so that no packet leaves the machine even when a check is missing."""
    attempted = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        attempted.append(address[0])
        if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test: connecting to {address[0]} is not allowed")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempted


def test_fetch_all_refuses_redirects_to_non_public_addresses_before_connecting(server, connections, tmp_path):
    targets = {
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "lan": "http://10.0.0.1/image.png",
        "mapped": "http://[::ffff:169.254.169.254]/",
        "zero": f"http://0.0.0.0:{server.port}/fine",
        "localhost6": f"http://[::1]:{server.port}/fine",
    }
    items = [(key, server.add(f"/{key}", status=302, headers={"Location": to})) for key, to in targets.items()]
    items.append(("fine", server.add("/fine", body=b"fine")))
    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert results["fine"].status == "ok"
    assert set(connections) == {"127.0.0.1"}  # no connection was even attempted to the others
    expected = {
        "metadata": "169.254.169.254 (169.254.169.254 is a link-local address",
        "lan": "10.0.0.1 (10.0.0.1 is a private address",
        "mapped": "::ffff:169.254.169.254 (::ffff:169.254.169.254 is a link-local address",
        "zero": "0.0.0.0 (0.0.0.0 is an unspecified address",
        "localhost6": "::1 (::1 is a loopback address",
    }
    for key, refusal in expected.items():
        result = results[key]
        assert (result.status, result.attempts) == ("failed", 1), key
        assert result.error.startswith(f"refusing to connect to {refusal}"), result.error
        assert "allow_networks" in result.error


def test_fetch_all_refuses_non_public_first_urls_unless_allowed(server, connections, tmp_path):
    items = [("a", server.add("/a", body=b"a")), ("b", server.add("/b", host="localhost", body=b"b"))]
    default = FetchPolicy(backoff=0.01, max_backoff=0.05)
    results = fetch_all(items, tmp_path, default, progress=False)

    assert [(r.status, r.attempts) for r in results.values()] == [("failed", 1), ("failed", 1)]
    assert "refusing to connect to 127.0.0.1 (127.0.0.1 is a loopback address" in results["a"].error
    assert "refusing to connect to localhost" in results["b"].error
    assert connections == [] and sum(server.hits.values()) == 0

    allowed = fetch_all(items, tmp_path, FetchPolicy(allow_networks=("127.0.0.1/32",)), progress=False)
    assert [r.status for r in allowed.values()] == ["ok", "ok"]
    with pytest.raises(EarthvlError, match="allow_networks: 'intranet' is not a network"):
        FetchPolicy(allow_networks=("intranet",))


def test_through_a_proxy_the_target_address_is_checked_too(server, connections, tmp_path, monkeypatch):
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", server.url(""))  # the fake server answers proxy requests by their path
    server.add("/image.png", body=b"via proxy")
    items = [("public", "http://93.184.216.34/image.png"), ("lan", "http://10.0.0.1/image.png")]
    results = fetch_all(items, tmp_path, FetchPolicy(), progress=False)

    assert results["public"].status == "ok" and (tmp_path / "public.png").read_bytes() == b"via proxy"
    assert results["lan"].error.startswith("refusing to connect to 10.0.0.1 (10.0.0.1 is a private address")
    assert server.hits["/image.png"] == 1 and set(connections) == {"127.0.0.1"}


def test_download_file_trusts_the_host_it_is_given_but_not_where_it_redirects(server, connections, tmp_path):
    policy = FetchPolicy(backoff=0.01, max_backoff=0.05)
    url = server.add("/f.zip", body=b"zip bytes")
    assert download_file(url, tmp_path / "f.zip", policy=policy, progress=False).read_bytes() == b"zip bytes"

    moved = server.add("/moved.zip", status=301, headers={"Location": "http://10.0.0.1/f.zip"})
    with pytest.raises(EarthvlError, match=r"refusing to connect to 10\.0\.0\.1 \(10\.0\.0\.1 is a private address"):
        download_file(moved, tmp_path / "moved.zip", policy=policy, progress=False)
    assert set(connections) == {"127.0.0.1"}


def test_errors_name_the_host_a_redirect_led_to(server, tmp_path):
    items = [
        ("gone", server.add("/gone", status=302, headers={"Location": server.url("/missing", host="localhost")})),
        ("dead", server.add("/dead", status=302, headers={"Location": f"http://localhost:{closed_port()}/x"})),
        ("here", server.url("/missing")),
    ]
    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert results["gone"].error == "HTTP 404 Not Found from localhost"
    assert results["dead"].error.startswith("cannot reach localhost")
    assert results["here"].error == "HTTP 404 Not Found"


def test_fetch_all_honours_an_opt_out_on_a_redirect(server, tmp_path):
    image = server.add("/image", body=b"pixels")
    items = [("moved", server.add("/moved", status=302, headers={"Location": image, "X-Robots-Tag": "noai"}))]
    (result,) = fetch_all(items, tmp_path, fast(), progress=False).values()

    assert (result.status, result.http_status, result.path) == ("opted_out", 302, None)
    assert server.hits["/image"] == 0
    (unrestricted,) = fetch_all(items, tmp_path, fast(respect_opt_out=False), progress=False).values()
    assert unrestricted.status == "ok" and (tmp_path / "moved.png").read_bytes() == b"pixels"


FETCH_SCRIPT = """
import json, sys
from earthvl.builders.download.crawler import fetch_all
from earthvl.builders.download.policy import FetchPolicy
fetch_all(json.loads(sys.argv[1]), sys.argv[2], FetchPolicy(max_per_host=1, max_workers=1, allow_networks=("127.0.0.0/8",)), progress=False)
"""


def test_a_fetch_killed_midway_resumes_with_only_the_missing_urls(server, tmp_path):
    items = [(f"done{i}", server.add(f"/done{i}", body=f"done{i}".encode())) for i in range(3)]
    items.append(("stuck", server.add("/stuck", body=b"stuck", delay=30.0)))
    items += [(f"later{i}", server.add(f"/later{i}", body=f"later{i}".encode())) for i in range(2)]
    process = subprocess.Popen([sys.executable, "-c", FETCH_SCRIPT, json.dumps(items), str(tmp_path)], env=os.environ)
    try:
        deadline = time.monotonic() + 20
        while server.hits["/stuck"] == 0 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert server.hits["/stuck"] == 1
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    server.routes["/stuck"].delay = 0.0

    results = fetch_all(items, tmp_path, fast(), progress=False)

    assert {key: r.status for key, r in results.items()} == {
        "done0": "cached", "done1": "cached", "done2": "cached", "stuck": "ok", "later0": "ok", "later1": "ok"
    }  # fmt: skip
    assert dict(server.hits) == {"/done0": 1, "/done1": 1, "/done2": 1, "/stuck": 2, "/later0": 1, "/later1": 1}
    manifest = json.loads((tmp_path / MANIFEST).read_text())["results"]
    assert {key: (entry["status"], entry["sha256"]) for key, entry in manifest.items()} == {
        key: ("ok", hashlib.sha256(key.encode()).hexdigest()) for key, _ in items
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST] + [f"{key}.png" for key, _ in items])


# --- download_file -----------------------------------------------------------------------------------------------


def test_download_file_checks_md5(server, tmp_path):
    body = payload(200_000)
    dest = download_file(server.add("/f.zip", body=body), tmp_path / "sub" / "f.zip", md5=md5(body).upper(),
                         policy=fast(), progress=False)

    assert dest == tmp_path / "sub" / "f.zip"
    assert dest.read_bytes() == body
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.zip"]
    assert server.ranges["/f.zip"] == [None]


def test_download_file_resumes_after_a_truncated_answer(server, tmp_path):
    body = payload(100_000)
    url = server.add("/f.zip", body=body, script=["truncate"], ranges=True)
    dest = download_file(url, tmp_path / "f.zip", md5=md5(body), policy=fast(), progress=False)

    assert dest.read_bytes() == body
    assert server.ranges["/f.zip"] == [None, "bytes=50000-"]
    assert not (tmp_path / "f.zip.part").exists()


def test_download_file_resumes_an_earlier_part_and_handles_416(server, tmp_path):
    body = payload(10_000)
    url = server.add("/f.zip", body=body, ranges=True)
    (tmp_path / "f.zip.part").write_bytes(body[:1234])
    assert download_file(url, tmp_path / "f.zip", md5=md5(body), policy=fast(), progress=False).read_bytes() == body
    assert server.ranges["/f.zip"] == ["bytes=1234-"]

    (tmp_path / "g.zip.part").write_bytes(body)  # complete already: the server answers 416
    url = server.add("/g.zip", body=body, ranges=True)
    assert download_file(url, tmp_path / "g.zip", md5=md5(body), policy=fast(), progress=False).read_bytes() == body
    assert server.ranges["/g.zip"] == ["bytes=10000-"]


def test_download_file_starts_again_when_the_server_ignores_range(server, tmp_path):
    body = payload(10_000)
    (tmp_path / "f.zip.part").write_bytes(b"stale bytes")
    url = server.add("/f.zip", body=body, ranges=False)
    dest = download_file(url, tmp_path / "f.zip", md5=md5(body), policy=fast(), progress=False)

    assert dest.read_bytes() == body
    assert server.ranges["/f.zip"] == ["bytes=11-"]


def test_download_file_md5_mismatch_deletes_the_download(server, tmp_path):
    body = payload(5000)
    url = server.add("/f.zip", body=body)
    with pytest.raises(EarthvlError) as caught:
        download_file(url, tmp_path / "f.zip", md5="0" * 32, policy=fast(), progress=False)

    message = str(caught.value)
    assert str(tmp_path / "f.zip") in message and "0" * 32 in message and md5(body) in message
    assert list(tmp_path.iterdir()) == []


def test_download_file_skips_a_complete_destination(server, tmp_path):
    body = payload(5000)
    url = server.add("/f.zip", body=body)
    dest = tmp_path / "f.zip"
    dest.write_bytes(body)
    assert download_file(url, dest, md5=md5(body), policy=fast(), progress=False) == dest
    assert download_file(url, dest, policy=fast(), progress=False) == dest
    assert server.hits["/f.zip"] == 0

    dest.write_bytes(b"corrupt")  # a wrong md5 downloads again
    assert download_file(url, dest, md5=md5(body), policy=fast(), progress=False).read_bytes() == body
    assert server.hits["/f.zip"] == 1


def test_download_file_retries_then_gives_up(server, tmp_path):
    url = server.add("/f.zip", body=b"never", status=502)
    with pytest.raises(EarthvlError, match=r"cannot download .*/f\.zip: HTTP 502.*3 failures in a row"):
        download_file(url, tmp_path / "f.zip", policy=fast(retries=2), progress=False)
    assert server.hits["/f.zip"] == 3

    with pytest.raises(EarthvlError, match="HTTP 404"):
        download_file(server.url("/missing.zip"), tmp_path / "m.zip", policy=fast(), progress=False)
    assert server.hits["/missing.zip"] == 1


def test_download_file_fails_fast_without_network(tmp_path):
    start = time.monotonic()
    with pytest.raises(EarthvlError, match="cannot reach 127.0.0.1 .*no network"):
        download_file(f"http://127.0.0.1:{closed_port()}/f.zip", tmp_path / "f.zip", progress=False)
    assert time.monotonic() - start < 5
    with pytest.raises(EarthvlError, match="only http"):
        download_file("file:///etc/passwd", tmp_path / "passwd", progress=False)


# --- Zenodo ------------------------------------------------------------------------------------------------------


@pytest.fixture
def zenodo(server):
    """A record with two files, described in the current (`key`, `links.self`) and the legacy (`filename`) shape."""
    files = {"json_files.zip": payload(30_000, seed=1), "s2_rgb_images.zip": payload(70_000, seed=2)}
    for name, body in files.items():
        server.add(f"/api/records/11003436/files/{name}/content", body=body, content_type="application/zip")
    entries = [
        {
            "key": "json_files.zip",
            "size": 30_000,
            "checksum": "md5:" + md5(files["json_files.zip"]),
            "links": {"self": server.url("/api/records/11003436/files/json_files.zip/content")},
        },
        {
            "filename": "s2_rgb_images.zip",
            "filesize": 70_000,
            "checksum": md5(files["s2_rgb_images.zip"]),
            "links": {"download": server.url("/api/records/11003436/files/s2_rgb_images.zip/content")},
        },
    ]
    server.add("/api/records/11003436", body=json.dumps({"files": entries}).encode(), content_type="application/json")
    return files, server.url("/api/records/{record}")


def test_zenodo_files_reads_the_record(zenodo, server):
    files, api = zenodo
    assert zenodo_files("11003436", api_url=api, policy=fast()) == [
        RemoteFile(
            "json_files.zip",
            server.url("/api/records/11003436/files/json_files.zip/content"),
            30_000,
            md5(files["json_files.zip"]),
        ),
        RemoteFile(
            "s2_rgb_images.zip",
            server.url("/api/records/11003436/files/s2_rgb_images.zip/content"),
            70_000,
            md5(files["s2_rgb_images.zip"]),
        ),
    ]


def test_download_zenodo_record_downloads_and_verifies(zenodo, server, tmp_path):
    files, api = zenodo
    paths = download_zenodo_record("11003436", tmp_path, api_url=api, policy=fast(), progress=False)

    assert paths == [tmp_path / "json_files.zip", tmp_path / "s2_rgb_images.zip"]
    assert {p.name: p.read_bytes() for p in paths} == files

    again = download_zenodo_record("11003436", tmp_path, ["s2_rgb_images.zip"], api_url=api, policy=fast(),
                                   progress=False)
    assert again == [tmp_path / "s2_rgb_images.zip"]
    assert server.hits["/api/records/11003436/files/s2_rgb_images.zip/content"] == 1  # verified, not fetched again


def test_download_zenodo_record_names_what_the_record_has(zenodo, server, tmp_path):
    _, api = zenodo
    with pytest.raises(EarthvlError, match="has no nir.zip; it has json_files.zip, s2_rgb_images.zip"):
        download_zenodo_record("11003436", tmp_path, ["json_files.zip", "nir.zip"], api_url=api, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_zenodo_record_rejects_a_corrupt_file(zenodo, server, tmp_path):
    _, api = zenodo
    server.routes["/api/records/11003436/files/json_files.zip/content"].body = b"corrupted"
    with pytest.raises(EarthvlError, match=r"json_files\.zip: md5 .* does not match"):
        download_zenodo_record("11003436", tmp_path, ["json_files.zip"], api_url=api, policy=fast(), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_zenodo_record_fails_fast_without_network(tmp_path):
    api = f"http://127.0.0.1:{closed_port()}/api/records/{{record}}"
    start = time.monotonic()
    with pytest.raises(EarthvlError) as caught:
        download_zenodo_record("11003436", tmp_path / "zips", api_url=api, progress=False)

    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert "cannot reach 127.0.0.1" in message and "no network?" in message
    assert f"https://zenodo.org/records/11003436 by hand into {tmp_path / 'zips'}" in message
    with pytest.raises(EarthvlError, match="by hand and pass that folder as --source"):
        zenodo_files("11003436", api_url=api)
