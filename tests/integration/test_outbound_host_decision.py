"""The outbound router's per-Host decision (proxy/outbound/server.py) through the real proxy.

The logical target of a Host and its policy or discovered service are
remembered; these tests hold one keep-alive connection (so the exchange's own
per-connection cache is not what answers) and check that every request is
still balanced, and that a discovery update, a policy reload and the own
address check reach the requests that follow. Every loop is bounded in
requests and in time.
"""

from __future__ import annotations

import collections
import http.client
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.meshproxy import MeshProxy

pytestmark = pytest.mark.timeout(120)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Backend:
    """An HTTP/1.1 server on loopback answering every GET with its name."""

    def __init__(self, name: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.name = name
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _endpoints(path: Path, services: dict[str, list[Backend]]) -> None:
    lines = ["services:"]
    for name, backends in services.items():
        lines += [f"  {name}:", "    endpoints:"] + [f"      - address: 127.0.0.1:{b.port}" for b in backends]
    _write(path, "\n".join(lines) + "\n")


def _get(conn: http.client.HTTPConnection, host: str) -> tuple[int, str]:
    conn.request("GET", "/", headers={"Host": host})
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


def _until(conn: http.client.HTTPConnection, host: str, want: str, limit: float = 10.0) -> None:
    """Requests on ``conn`` until one is answered by ``want`` (a file edit takes effect within a poll)."""
    deadline = time.monotonic() + limit
    while _get(conn, host) != (200, want):
        assert time.monotonic() < deadline, f"no answer from {want} within {limit} s"
        time.sleep(0.05)


@pytest.fixture
def mesh(tmp_path):
    backends = {name: Backend(name) for name in ("a", "b", "c")}
    endpoints, policy = tmp_path / "endpoints.yaml", tmp_path / "policy.yaml"
    _endpoints(endpoints, {"web.test:80": [backends["a"], backends["b"]], "v2.test:80": [backends["c"]]})
    _write(policy, "services: {}\n")
    proxy = MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}", "MESHPROXY_POLICY": str(policy)},
                      name="host-decision-proxy")
    try:
        yield proxy.start(), backends, endpoints, policy
    finally:
        proxy.close()
        for b in backends.values():
            b.stop()


def test_every_request_on_one_connection_is_balanced_and_follows_discovery(mesh):
    proxy, backends, endpoints, _ = mesh
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    seen = collections.Counter(_get(conn, "web.test") for _ in range(200))
    # P2C picks per request: both endpoints answer, though the Host's decision is remembered.
    assert set(seen) == {(200, "a"), (200, "b")}, seen
    _endpoints(endpoints, {"web.test:80": [backends["c"]], "v2.test:80": [backends["c"]]})
    _until(conn, "web.test", "c")
    assert collections.Counter(_get(conn, "web.test") for _ in range(20)) == {(200, "c"): 20}
    conn.close()


def test_a_policy_reload_reaches_a_host_already_decided(mesh):
    proxy, _, _, policy = mesh
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    assert {_get(conn, "web.test") for _ in range(20)} <= {(200, "a"), (200, "b")}
    # Split web.test over v2.test alone: the remembered decision (a discovered service) gives way.
    _write(policy, "services:\n  web.test:80:\n    backends:\n      - {authority: v2.test:80, weight: 1}\n")
    _until(conn, "web.test", "c")
    assert collections.Counter(_get(conn, "web.test") for _ in range(20)) == {(200, "c"): 20}
    # And back: without a policy, the service's own endpoints again.
    _write(policy, "services: {}\n")
    deadline = time.monotonic() + 10
    while _get(conn, "web.test")[1] == "c":
        assert time.monotonic() < deadline, "the policy's removal was not applied"
        time.sleep(0.05)
    assert {_get(conn, "web.test") for _ in range(20)} <= {(200, "a"), (200, "b")}
    conn.close()


def test_a_host_naming_the_proxy_itself_is_refused_every_time(mesh):
    proxy, _, _, _ = mesh
    own = f"127.0.0.1:{proxy.outbound[1]}"
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    for _ in range(3):  # refused before any lookup, so a refused Host is never remembered
        status, _ = _get(conn, own)
        assert status == 403
        conn.close()
        conn = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    assert _get(conn, "web.test")[0] == 200
    conn.close()
