"""HTTP/2 clients reaching an HTTP/1-only app: the proxy finds out and speaks HTTP/1 to it.

Nothing may say which protocol an app speaks (no discovery hint, not a
peer proxy). The first connection to such an endpoint sends the HTTP/2
preface and holds its requests until the server's first bytes: an HTTP/2
server's SETTINGS lets them go; anything else (an HTTP/1 server refusing the
preface) sends them over HTTP/1 instead, and the address is remembered so
later requests go over HTTP/1 at once. No request is ever sent twice: the
held ones were never sent. Linkerd answers these requests with an error;
clients like h2load or curl --http2-prior-knowledge against an nginx that
speaks only HTTP/1 are common.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from helpers.clients import clean_env, curl
from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import proxy_to
from helpers.nginx import Nginx
from helpers.servers import ServerConn, SilentServer, TcpServer, det_bytes, sha256
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(90)

FALLBACK_LINE = "upstream does not speak HTTP/2"


class PrefaceCloser(TcpServer):
    """Reads the first bytes and closes without a word: neither an HTTP/2 server nor a polite HTTP/1 one."""

    def handle(self, conn: ServerConn) -> None:
        try:
            conn.sock.recv(1024)
        except OSError:
            pass


@pytest.fixture(scope="module")
def app():
    server = HttpUpstream(name="http1-only-app")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx-http1")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxies(app, tmp_path_factory):
    a = proxy_to(tmp_path_factory, "h2-to-h1-a", app.hostport)
    b = proxy_to(tmp_path_factory, "h2-to-h1-b", app.hostport)
    yield a, b
    a.close()
    b.close()


def _route(hops: str, proxies, app) -> tuple[tuple[str, int], str]:
    a, b = proxies
    if hops == "outbound":
        return a.outbound, app.hostport
    if hops == "inbound":
        return a.inbound, "app.test"
    return a.outbound, b.inbound_hostport  # two proxies: b's inbound finds out about the app


@pytest.mark.parametrize("hops", ["outbound", "inbound", "two-proxies"])
def test_requests_and_bodies_reach_an_http1_app_over_http1(hops, proxies, app):
    addr, authority = _route(hops, proxies, app)
    before = len(app.requests)
    body = det_bytes(200_000, 3)
    with H2Client(addr) as client:
        for _ in range(3):
            resp = client.exchange("POST", f"/echo?hops={hops}", authority, body=body)
            assert resp.status == 200, resp.summary()
            assert bytes(resp.data) == body and resp.header("x-body-sha256") == sha256(body)
        assert client.exchange("GET", "/bytes/70000", authority).data == det_bytes(70000)
    got = [r for r in app.requests[before:] if r.path == "/echo"]
    assert len(got) == 3 and all(r.method == "POST" and r.version == "HTTP/1.1" for r in got)
    assert all(r.body.data == body for r in got)  # each request once, whole


def test_the_address_is_learned_once_per_proxy(proxies, app):
    a, b = proxies
    addr, authority = _route("outbound", proxies, app)
    with H2Client(addr) as client:
        for _ in range(5):
            assert client.exchange("GET", "/", authority).status == 200
    # One line per direction that met the app (a's outbound and inbound, b's inbound), however many requests.
    assert len([line for line in a.lines() if FALLBACK_LINE in line]) == 2, a.lines()
    assert len([line for line in b.lines() if FALLBACK_LINE in line]) == 1, b.lines()


def test_curl_and_h2load_against_an_nginx_that_speaks_only_http1(nginx, tmp_path_factory):
    mp = proxy_to(tmp_path_factory, "h2-to-nginx", nginx.hostport)
    try:
        got = curl("-s", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                   f"http://{mp.inbound_hostport}/static/hello.txt")
        assert got.stdout == nginx.hello + b"\n200 2", got
        run = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "8", f"http://{mp.inbound_hostport}/static/hello.txt"],
                             capture_output=True, timeout=60, env=clean_env())
        out = run.stdout.decode()
        assert re.search(r"requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed", out), out
        assert "status codes: 400 2xx" in out, out
    finally:
        mp.close()


def test_an_http2_app_still_gets_http2(tmp_path_factory):
    origin = H2Origin(name="h2-app")
    mp = proxy_to(tmp_path_factory, "h2-to-h2", origin.hostport)
    try:
        with H2Client(mp.inbound) as client:
            for _ in range(3):
                assert client.exchange("GET", "/echo", "app.test").status == 200
        assert origin.count("/echo") == 3  # an HTTP/2 server recorded them
        assert not [line for line in mp.lines() if FALLBACK_LINE in line]
    finally:
        mp.close()
        origin.stop()


def test_an_app_that_closes_on_the_preface_gets_a_clear_502(tmp_path_factory):
    closer = PrefaceCloser(name="preface-closer")
    mp = proxy_to(tmp_path_factory, "h2-to-closer", closer.hostport)
    try:
        with H2Client(mp.inbound) as client:
            resp = client.exchange("GET", "/", "app.test")
        assert resp.status == 502, resp.summary()
        assert resp.header("l5d-proxy-error") == "upstream closed the connection before speaking HTTP/2"
    finally:
        mp.close()
        closer.stop()


def test_an_app_that_says_nothing_after_the_preface_gets_a_504_in_the_connect_timeout(tmp_path_factory):
    silent = SilentServer(name="preface-silent")
    mp = proxy_to(tmp_path_factory, "h2-to-silent", silent.hostport, MESHPROXY_CONNECT_TIMEOUT="500ms")
    try:
        with H2Client(mp.inbound) as client:
            start = time.monotonic()
            resp = client.exchange("GET", "/", "app.test")
            elapsed = time.monotonic() - start
        assert resp.status == 504, resp.summary()
        assert resp.header("l5d-proxy-error") == "upstream sent nothing after the HTTP/2 preface"
        assert 0.4 <= elapsed < 5.0, elapsed
    finally:
        mp.close()
        silent.stop()
