"""Outbound discovery and balancing through the real proxy: PeakEWMA + P2C, failure accrual, queueing, shedding.

Backends are real HTTP servers on loopback (one thread per request, so a slow
one stays slow under concurrency); the proxy finds them through an endpoints
file it watches.
"""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.timeout(120)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.open.add(self.connection)

    def finish(self):
        with self.server.lock:
            self.server.open.discard(self.connection)
        super().finish()

    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        if server.delay:
            time.sleep(server.delay)
        with server.lock:
            server.hits += 1
        body = server.name.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Backend:
    """A named HTTP backend that counts its requests; can be stopped and started on the same port."""

    def __init__(self, name: str, delay: float = 0.0, port: int = 0) -> None:
        self.name, self.delay, self.port = name, delay, port
        self.server: ThreadingHTTPServer | None = None
        self.hits = 0
        self.start()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.name, server.delay, server.hits, server.lock = self.name, self.delay, 0, threading.Lock()
        server.open = set()
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop like a killed process: the listener and every open connection go away."""
        if self.server is not None:
            self.hits += self.server.hits
            self.server.shutdown()
            self.server.server_close()
            with self.server.lock:
                for conn in list(self.server.open):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.server = None

    @property
    def count(self) -> int:
        return self.hits + (self.server.hits if self.server else 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_endpoints(path: Path, services: dict[str, list[int]]) -> None:
    lines = ["services:"]
    for name, ports in services.items():
        lines.append(f"  {name}:")
        lines.append("    endpoints:" if ports else "    endpoints: []")
        lines.extend(f"      - address: 127.0.0.1:{port}" for port in ports)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)  # atomic, as editors and ConfigMaps do


class Proxy:
    def __init__(self, tmp: Path, endpoints: Path, **env: str) -> None:
        self.outbound, self.admin = _free_port(), _free_port()
        full = dict(os.environ, MESHPROXY_DESTINATION=f"file://{endpoints}",
                    MESHPROXY_OUTBOUND_LISTEN=f"127.0.0.1:{self.outbound}",
                    MESHPROXY_INBOUND_LISTEN=f"127.0.0.1:{_free_port()}",
                    MESHPROXY_ADMIN_LISTEN=f"127.0.0.1:{self.admin}", **env)
        self.log = open(tmp / "proxy.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy", "run"], env=full, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.get_admin("/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None, self.logs()
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.05)

    def get_admin(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()

    def metric(self, series: str) -> float:
        for line in self.get_admin("/metrics")[1].splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def logs(self) -> str:
        self.log.flush()
        return (Path(self.log.name)).read_text()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _load(port: int, host: str, requests: int, workers: int = 4) -> collections.Counter:
    """Send ``requests`` GETs on ``workers`` keep-alive connections; count (status, body, error)."""

    def work(n: int) -> collections.Counter:
        out: collections.Counter = collections.Counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(n):
            try:
                conn.request("GET", "/", headers={"Host": host})
                resp = conn.getresponse()
                out[(resp.status, resp.read().decode())] += 1
            except OSError as err:
                out[("error", type(err).__name__)] += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        return out

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        parts = [pool.submit(work, requests // workers) for _ in range(workers)]
        return sum((p.result() for p in parts), collections.Counter())


@pytest.fixture
def env(tmp_path):
    backends: list[Backend] = []
    proxies: list[Proxy] = []
    endpoints = tmp_path / "endpoints.yaml"

    def backend(name: str, delay: float = 0.0) -> Backend:
        b = Backend(name, delay)
        backends.append(b)
        return b

    def proxy(**env_vars: str) -> Proxy:
        p = Proxy(tmp_path, endpoints, **env_vars)
        proxies.append(p)
        return p

    yield endpoints, backend, proxy
    for p in proxies:
        p.close()
    for b in backends:
        b.stop()


def test_slow_endpoint_gets_few_requests(env):
    endpoints, backend, proxy = env
    fast1, fast2, slow = backend("fast1"), backend("fast2"), backend("slow", delay=0.05)
    _write_endpoints(endpoints, {"web.test:80": [fast1.port, fast2.port, slow.port]})
    p = proxy()
    got = _load(p.outbound, "web.test:80", 400)
    assert sum(n for (status, _), n in got.items() if status == 200) == 400, got
    # PeakEWMA sees the +50 ms at once; P2C then avoids it while the fast
    # endpoints are not loaded. Round-robin would send it a third (133).
    assert slow.count <= 20, (slow.count, fast1.count, fast2.count)
    assert fast1.count > 100 and fast2.count > 100


def test_killed_endpoint_is_ejected_without_failed_requests_and_restored(env):
    endpoints, backend, proxy = env
    a, b, c = backend("a"), backend("b"), backend("c")
    _write_endpoints(endpoints, {"web.test:80": [a.port, b.port, c.port]})
    p = proxy(MESHPROXY_FAILURE_ACCRUAL_MIN_BACKOFF="500ms", MESHPROXY_FAILURE_ACCRUAL_MAX_BACKOFF="1s",
              MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE="3")
    # Warm up until every endpoint has answered (a latency-aware balancer may
    # skip one for a while if its first answer happened to be slow).
    deadline = time.monotonic() + 10
    while min(a.count, b.count, c.count) == 0:
        assert time.monotonic() < deadline, (a.count, b.count, c.count)
        got = _load(p.outbound, "web.test:80", 40)
        assert all(status == 200 for status, _ in got), got
    c.stop()
    # Connections to the dead endpoint are refused: those requests never
    # reached it, so they are sent to another endpoint instead of failing.
    got = _load(p.outbound, "web.test:80", 200)
    assert set(got) <= {(200, "a"), (200, "b")}, got
    assert sum(got.values()) == 200
    assert p.metric('balancer_endpoints{service="web.test:80",state="ejected"}') + p.metric(
        'balancer_endpoints{service="web.test:80",state="probing"}') == 1
    before = c.count
    c.start()  # back on the same port
    deadline = time.monotonic() + 10
    while c.count == before:
        assert time.monotonic() < deadline, "the restored endpoint got no traffic after its backoff"
        got = _load(p.outbound, "web.test:80", 40)
        assert all(status == 200 for status, _ in got), got
        time.sleep(0.2)
    assert p.metric('balancer_endpoints{service="web.test:80",state="ready"}') == 3


def test_unknown_names_pass_through_to_their_destination(env):
    endpoints, backend, proxy = env
    direct = backend("direct")
    _write_endpoints(endpoints, {"web.test:80": []})
    p = proxy()
    got = _load(p.outbound, f"127.0.0.1:{direct.port}", 8, workers=1)
    assert got == {(200, "direct"): 8}


def test_no_ready_endpoint_is_503_after_the_queue_timeout(env):
    endpoints, _, proxy = env
    _write_endpoints(endpoints, {"empty.test:80": []})
    p = proxy(MESHPROXY_OUTBOUND_QUEUE_TIMEOUT="400ms")
    conn = http.client.HTTPConnection("127.0.0.1", p.outbound, timeout=10)
    start = time.monotonic()
    conn.request("GET", "/", headers={"Host": "empty.test:80"})
    resp = conn.getresponse()
    elapsed = time.monotonic() - start
    assert resp.status == 503
    assert resp.getheader("l5d-proxy-error").startswith("no ready endpoints")
    assert 0.35 <= elapsed < 3.0


def test_queued_request_is_sent_when_an_endpoint_appears(env):
    endpoints, backend, proxy = env
    late = backend("late")
    _write_endpoints(endpoints, {"web.test:80": []})
    p = proxy(MESHPROXY_OUTBOUND_QUEUE_TIMEOUT="5s")
    result: dict = {}

    def call():
        conn = http.client.HTTPConnection("127.0.0.1", p.outbound, timeout=10)
        conn.request("GET", "/", headers={"Host": "web.test:80"})
        resp = conn.getresponse()
        result["got"] = (resp.status, resp.read().decode())

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5)
    assert "got" not in result  # waiting in the queue
    _write_endpoints(endpoints, {"web.test:80": [late.port]})
    t.join(timeout=8)
    assert result.get("got") == (200, "late")


def test_endpoint_added_by_a_file_edit_gets_traffic_without_restart(env):
    endpoints, backend, proxy = env
    first, second = backend("first"), backend("second")
    _write_endpoints(endpoints, {"web.test:80": [first.port]})
    p = proxy()
    assert set(_load(p.outbound, "web.test:80", 20, workers=2)) == {(200, "first")}
    _write_endpoints(endpoints, {"web.test:80": [first.port, second.port]})
    deadline = time.monotonic() + 5
    while second.count == 0:
        assert time.monotonic() < deadline
        _load(p.outbound, "web.test:80", 20, workers=2)
    _write_endpoints(endpoints, {"web.test:80": [second.port]})
    time.sleep(1.5)  # the watcher polls about once a second
    before = first.count
    assert set(_load(p.outbound, "web.test:80", 20, workers=2)) == {(200, "second")}
    assert first.count == before  # a removed endpoint gets no new request


def test_one_keep_alive_connection_follows_endpoint_changes(env):
    # Its later requests skip the router (the connection remembers the service its Host named) but are
    # still picked one by one: an added endpoint gets some of them, a removed one none. (Which of two
    # endpoints sequential requests go to is PeakEWMA's choice, not asserted.)
    endpoints, backend, proxy = env
    first, second = backend("first"), backend("second")
    _write_endpoints(endpoints, {"web.test:80": [first.port]})
    p = proxy()
    conn = http.client.HTTPConnection("127.0.0.1", p.outbound, timeout=10)

    def bodies(n: int) -> collections.Counter:
        seen: collections.Counter = collections.Counter()
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": "web.test:80"})
            resp = conn.getresponse()
            assert resp.status == 200
            seen[resp.read().decode()] += 1
        return seen

    assert bodies(10) == {"first": 10}
    _write_endpoints(endpoints, {"web.test:80": [first.port, second.port]})
    deadline = time.monotonic() + 5
    while second.count == 0:
        assert time.monotonic() < deadline
        bodies(10)
    _write_endpoints(endpoints, {"web.test:80": [second.port]})
    deadline = time.monotonic() + 5
    while set(bodies(5)) != {"second"}:
        assert time.monotonic() < deadline
    before = first.count
    assert bodies(20) == {"second": 20}
    assert first.count == before
    conn.close()


def test_requests_over_the_in_flight_limit_are_shed(env):
    endpoints, backend, proxy = env
    slow = backend("slow", delay=1.0)
    _write_endpoints(endpoints, {"web.test:80": [slow.port]})
    p = proxy(MESHPROXY_OUTBOUND_MAX_IN_FLIGHT="1")
    first: dict = {}

    def call():
        conn = http.client.HTTPConnection("127.0.0.1", p.outbound, timeout=10)
        conn.request("GET", "/", headers={"Host": "web.test:80"})
        first["status"] = conn.getresponse().status

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    conn = http.client.HTTPConnection("127.0.0.1", p.outbound, timeout=10)
    conn.request("GET", "/", headers={"Host": "web.test:80"})
    resp = conn.getresponse()
    assert resp.status == 503
    assert resp.getheader("l5d-proxy-error").startswith("load shed")
    t.join(timeout=5)
    assert first["status"] == 200
