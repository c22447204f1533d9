"""Reliability policy through the real proxy: retries within the budget, timeouts, traffic splits, reloads.

Backends are real HTTP/1.1 servers on loopback found through a discovery
file; the policy is a file the proxy watches (MESHPROXY_POLICY). Every load
loop is bounded in requests and in time.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import http.client
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import EXIT_CONFIG, MeshProxy, run_once

pytestmark = pytest.mark.timeout(120)

# Failure accrual would eject an always-failing endpoint; these tests are about retries.
NO_ACCRUAL = {"MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE": "1000000"}
# A peer proxy without an identity obeys transport headers only from the cluster
# networks: the meshed hops here are plaintext on loopback.
PLAIN_PEER = {"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        server = self.server
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        with server.lock:
            server.hits[self.command] += 1
            server.bodies.append(body)
            server.heads.append(self.headers.items())
            fail = server.rng.random() < server.fail_rate
        if self.path.startswith("/slow"):
            time.sleep(server.slow)
        if self.path.startswith("/trickle"):  # five bytes, one every 150 ms
            self.send_response(200)
            self.send_header("content-length", "5")
            self.end_headers()
            for _ in range(5):
                self.wfile.write(b"t")
                self.wfile.flush()
                time.sleep(0.15)
            return
        if self.path.startswith("/stall"):  # head and half the body, the rest ``slow`` s later
            self.send_response(200)
            self.send_header("content-length", "2000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            time.sleep(server.slow)
            self.wfile.write(b"x" * 1000)
            return
        status = server.fail_status if fail else 200
        out = server.name.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *args):
        pass


class Backend:
    """A named HTTP backend: fails ``fail_rate`` of its requests with ``fail_status``; /slow waits ``slow`` s."""

    def __init__(self, name: str, fail_rate: float = 0.0, fail_status: int = 503, slow: float = 0.0) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.name, server.fail_rate, server.fail_status, server.slow = name, fail_rate, fail_status, slow
        server.lock, server.hits, server.bodies, server.heads = threading.Lock(), collections.Counter(), [], []
        server.rng = random.Random(1234)
        self.server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def hits(self) -> collections.Counter:
        with self.server.lock:
            return collections.Counter(self.server.hits)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic, as editors and ConfigMaps do


def _endpoints(path: Path, services: dict[str, Backend | H2Origin]) -> None:
    lines = ["services:"]
    for name, backend in services.items():
        lines += [f"  {name}:", "    endpoints:", f"      - address: 127.0.0.1:{backend.port}"]
    _write(path, "\n".join(lines) + "\n")


def _load(port: int, host: str, requests: int, workers: int = 4, method: str = "GET", path: str = "/",
          body: bytes | None = None, deadline: float = 60.0) -> collections.Counter:
    """``requests`` requests on ``workers`` keep-alive connections, bounded by ``deadline`` seconds:
    counts of (status, body) or ("error", name)."""
    stop_at = time.monotonic() + deadline

    def work(n: int) -> collections.Counter:
        out: collections.Counter = collections.Counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(n):
            if time.monotonic() > stop_at:
                out[("error", "deadline")] += 1
                continue
            try:
                conn.request(method, path, body=body, headers={"Host": host})
                resp = conn.getresponse()
                out[(resp.status, resp.read().decode())] += 1
            except OSError as err:
                out[("error", type(err).__name__)] += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()
        return out

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        parts = [pool.submit(work, requests // workers) for _ in range(workers)]
        return sum((p.result() for p in parts), collections.Counter())


@pytest.fixture
def mesh(tmp_path):
    """(make_backend, start_proxy(policy_text, **env), endpoints path, policy path); all stopped at teardown."""
    backends: list[Backend] = []
    proxies: list[MeshProxy] = []
    endpoints, policy = tmp_path / "endpoints.yaml", tmp_path / "policy.yaml"

    def backend(name: str, **kwargs) -> Backend:
        b = Backend(name, **kwargs)
        backends.append(b)
        return b

    def proxy(policy_text: str, **env: str) -> MeshProxy:
        _write(policy, policy_text)
        p = MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}", "MESHPROXY_POLICY": str(policy),
                           **NO_ACCRUAL, **env}, name="policy-proxy")
        proxies.append(p)
        return p.start()

    yield backend, proxy, endpoints, policy
    for p in proxies:
        p.close()
    for b in backends:
        b.stop()


RETRYABLE_GETS = """
services:
  web.test:80:
    retryBudget: {{retryRatio: 0.2, minRetriesPerSecond: {min_rps}, ttl: 10s}}
    routes:
      - name: reads
        match: {{method: GET}}
        isRetryable: true
      - name: writes
        match: {{method: POST, path: /write}}
      - name: retryable-writes
        match: {{method: POST, path: /idempotent-write}}
        isRetryable: true
"""


def _route(m, name: str, metric: str, **labels: str) -> float:
    return m.get(metric, dst="web.test:80", rt_route=name, **labels)


def test_a_backend_failing_20_percent_is_hidden_by_retries_within_budget(mesh):
    backend, proxy, endpoints, _ = mesh
    flaky = backend("flaky", fail_rate=0.2)
    _endpoints(endpoints, {"web.test:80": flaky})
    p = proxy(RETRYABLE_GETS.format(min_rps=10))
    n = 1000
    got = _load(p.outbound[1], "web.test:80", n)
    ok = got[(200, "flaky")]
    assert sum(got.values()) == n
    assert ok >= 0.995 * n, got
    m = p.metrics()
    requests, retries = _route(m, "reads", "route_request_total"), _route(m, "reads", "route_retry_total")
    assert requests == n
    # Every attempt reached the backend: the originals plus the retries.
    assert flaky.hits["GET"] == n + retries
    # About 0.25 retries per request are needed for 20% failures; the budget
    # (0.2 x requests + 10/s x 10 s) allows them all.
    assert 0.1 * n <= retries <= 0.2 * n + 10 * 10, retries
    assert _route(m, "reads", "route_response_total", classification="success") == ok
    assert _route(m, "reads", "route_response_latency_ms_count") == n
    assert m.get("route_retry_budget_retries", dst="web.test:80") <= retries
    reads = {"parent_name": "web.test", "route_kind": "compact", "route_name": "reads"}
    assert m.get("outbound_http_route_retry_requests_total", **reads) == retries
    assert 0 < m.get("outbound_http_route_retry_successes_total", **reads) <= retries


def test_a_backend_failing_every_request_gets_no_retry_storm(mesh):
    backend, proxy, endpoints, _ = mesh
    broken = backend("broken", fail_rate=1.0, fail_status=500)
    _endpoints(endpoints, {"web.test:80": broken})
    p = proxy(RETRYABLE_GETS.format(min_rps=1))
    n = 400
    got = _load(p.outbound[1], "web.test:80", n)
    assert got == {(500, "broken"): n}  # the last attempt's answer reaches the client
    m = p.metrics()
    retries = _route(m, "reads", "route_retry_total")
    # The budget over its 10 s window: 0.2 x 400 + 1/s x 10 s = 90 retries at
    # most, although every request wanted 3; and it was used.
    assert 10 <= retries <= 0.2 * n + 1 * 10, retries
    assert broken.hits["GET"] == n + retries
    assert _route(m, "reads", "route_response_total", classification="failure") == n
    assert m.get("route_retry_budget_available", dst="web.test:80") <= 1
    reads = {"parent_name": "web.test", "route_kind": "compact", "route_name": "reads"}
    assert m.get("outbound_http_route_retry_overflow_total", **reads) > 0  # the budget said no
    assert m.get("outbound_http_route_request_statuses_total", **reads, http_status="500") == n


def test_post_on_a_route_without_is_retryable_is_never_retried(mesh):
    backend, proxy, endpoints, _ = mesh
    broken = backend("broken", fail_rate=1.0)
    _endpoints(endpoints, {"web.test:80": broken})
    p = proxy(RETRYABLE_GETS.format(min_rps=10))
    got = _load(p.outbound[1], "web.test:80", 40, workers=2, method="POST", path="/write", body=b"x" * 100)
    assert got == {(503, "broken"): 40}
    assert broken.hits["POST"] == 40
    m = p.metrics()
    assert _route(m, "writes", "route_retry_total") == 0
    assert _route(m, "writes", "route_request_total") == 40


def test_retried_post_replays_its_body_and_large_bodies_are_not_retried(mesh):
    backend, proxy, endpoints, _ = mesh
    broken = backend("broken", fail_rate=1.0)
    _endpoints(endpoints, {"web.test:80": broken})
    p = proxy(RETRYABLE_GETS.format(min_rps=10), MESHPROXY_RETRY_BUFFER_BYTES="1KiB", MESHPROXY_RETRY_LIMIT="2")
    small = bytes(range(256)) * 2  # 512 bytes: kept for replay
    got = _load(p.outbound[1], "web.test:80", 4, workers=1, method="POST", path="/idempotent-write", body=small)
    assert got == {(503, "broken"): 4}
    assert broken.hits["POST"] == 4 * 3  # each request: the original and MESHPROXY_RETRY_LIMIT retries
    assert all(body == small for body in broken.server.bodies)
    large = b"y" * 4096  # over the replay buffer: sent once
    got = _load(p.outbound[1], "web.test:80", 4, workers=1, method="POST", path="/idempotent-write", body=large)
    assert got == {(503, "broken"): 4}
    assert broken.hits["POST"] == 12 + 4
    assert _route(p.metrics(), "retryable-writes", "route_retry_total") == 4 * 2


TRAFFIC_SPLIT = """
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {{name: web-split, namespace: test}}
spec:
  service: web
  backends:
    - {{service: web-v1, weight: {v1}}}
    - {{service: web-v2, weight: {v2}}}
"""


def test_a_90_10_traffic_split_is_observed_within_tolerance(mesh):
    backend, proxy, endpoints, _ = mesh
    v1, v2 = backend("v1"), backend("v2")
    _endpoints(endpoints, {"web-v1.test.svc.cluster.local:80": v1, "web-v2.test.svc.cluster.local:80": v2})
    p = proxy(TRAFFIC_SPLIT.format(v1=90, v2=10))
    n = 2000
    got = _load(p.outbound[1], "web.test:80", n)
    assert got[(200, "v1")] + got[(200, "v2")] == n, got
    share = got[(200, "v2")] / n
    # Binomial(2000, 0.1): sd = sqrt(0.1 * 0.9 / 2000) = 0.0067; 5 sd either
    # side (0.066..0.134) fails a correct splitter about once in 1.7 million runs.
    assert 0.066 <= share <= 0.134, share
    assert p.metrics().get("route_request_total", dst="web.test.svc.cluster.local", rt_route="default") == n


ROUTE_TIMEOUT = """
services:
  web.test:80:
    routes:
      - name: slow
        match: {pathPrefix: /slow}
        timeout: 400ms
"""


def test_a_route_timeout_answers_504_at_the_configured_time(mesh):
    backend, proxy, endpoints, _ = mesh
    slow = backend("slow", slow=3.0)
    _endpoints(endpoints, {"web.test:80": slow})
    p = proxy(ROUTE_TIMEOUT)
    conn = http.client.HTTPConnection(*p.outbound, timeout=10)
    start = time.monotonic()
    conn.request("GET", "/slow", headers={"Host": "web.test:80"})
    resp = conn.getresponse()
    elapsed = time.monotonic() - start
    resp.read()
    assert resp.status == 504
    assert "timed out" in resp.getheader("l5d-proxy-error", "")
    assert 0.35 <= elapsed < 2.0, elapsed  # the backend would take 3 s
    # The request was complete: the client's connection is still usable.
    conn.request("GET", "/fast", headers={"Host": "web.test:80"})
    assert conn.getresponse().status == 200
    m = p.metrics()
    assert m.get("route_response_total", rt_route="slow", classification="failure") == 1
    # Linkerd's route families name the proxy's own answer by its error, without a status: the route's
    # whole-request timeout is Linkerd's stream deadline, REQUEST_TIMEOUT.
    route = {"parent_name": "web.test", "parent_port": "80", "route_kind": "compact", "route_name": "slow"}
    assert m.get("outbound_http_route_request_statuses_total", **route, http_status="",
                 error="REQUEST_TIMEOUT") == 1
    assert m.get("outbound_http_route_request_duration_seconds_bucket", **route, le="0.05") == 0


STALL_ROUTE = """
services:
  web.test:80:
    routes:
      - {name: stall, match: {pathPrefix: /stall}, timeout: 400ms}
  grpc.test:80:
    routes:
      - {name: stall, match: {pathPrefix: /stall}, timeout: 400ms}
"""


@contextlib.contextmanager
def _http1_and_http2_services(mesh, policy_text: str):
    """web.test:80 an HTTP/1 backend (``slow`` 3 s), grpc.test:80 an HTTP/2 origin: (origin, proxy)."""
    backend, proxy, endpoints, _ = mesh
    origin = H2Origin(name="h2-origin")
    try:
        _endpoints(endpoints, {"web.test:80": backend("app", slow=3.0), "grpc.test:80": origin})
        yield origin, proxy(policy_text)
    finally:
        origin.stop()


def test_a_route_timeout_also_bounds_a_response_body_that_outlives_it(mesh):
    # Linkerd's request timeout covers the whole request-response stream: once the
    # head went out, the only signal left is to cut the HTTP/1 connection or reset the stream.
    with _http1_and_http2_services(mesh, STALL_ROUTE) as (origin, p):
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        start = time.monotonic()
        conn.request("GET", "/stall", headers={"Host": "web.test:80"})
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as got:
            resp.read()
        elapsed = time.monotonic() - start
        assert len(got.value.partial) == 1000 and 0.35 <= elapsed < 2.0, elapsed
        with H2Client(p.outbound) as client:
            for path in ("/stall", "/stall?grpc=1"):
                start = time.monotonic()
                resp = client.exchange("GET", path, authority="grpc.test:80")
                elapsed = time.monotonic() - start
                assert resp.status == 200 and resp.reset_code == 8, resp.summary()  # CANCEL
                assert len(resp.data) == 1000 and 0.35 <= elapsed < 2.0, elapsed
            assert origin.wait_reset("/stall?grpc=1") is not None  # the upstream stream was cancelled too
            assert client.exchange("GET", "/stall-not", authority="grpc.test:80").status == 200  # connection lives
        m = p.metrics()
        # Heads are counted when they arrive; a gRPC stream whose trailers never came is a failure.
        assert m.get("route_response_total", dst="grpc.test:80", rt_route="stall", classification="failure") == 1
        assert m.get("route_response_total", dst="grpc.test:80", rt_route="stall", classification="success") == 1
        assert len([line for line in p.lines() if "response cut short" in line and "route timeout 0.4s" in line]) == 3


IDLE_ROUTE = """
services:
  web.test:80:
    routes:
      - {name: idle, match: {pathPrefix: /, method: GET}, idleTimeout: 400ms}
  grpc.test:80:
    routes:
      - {name: idle, match: {pathPrefix: /}, idleTimeout: 400ms}
"""


def test_an_idle_timeout_cuts_a_silent_stream_and_spares_a_slow_one(mesh):
    with _http1_and_http2_services(mesh, IDLE_ROUTE) as (_, p):
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        conn.request("GET", "/trickle", headers={"Host": "web.test:80"})
        resp = conn.getresponse()
        assert resp.read() == b"ttttt"  # 750 ms in all, never 400 ms without a byte
        start = time.monotonic()
        conn.request("GET", "/slow", headers={"Host": "web.test:80"})  # silent before its head: 504
        resp = conn.getresponse()
        assert resp.status == 504 and "stream idle for 0.4s" in resp.getheader("l5d-proxy-error", "")
        resp.read()
        conn.request("GET", "/stall", headers={"Host": "web.test:80"})  # silent after its head: cut
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
        assert 0.7 <= time.monotonic() - start < 2.5
        with H2Client(p.outbound) as client:
            resp = client.exchange("GET", "/stall", authority="grpc.test:80")
            assert resp.status == 200 and resp.reset_code == 8 and len(resp.data) == 1000, resp.summary()
            assert client.exchange("GET", "/slow?delay=0.2", authority="grpc.test:80").status == 200
        assert len([line for line in p.lines() if "stream idle for 0.4s" in line]) == 3


SLOW_ROUTE = """
services:
  web.test:80:
    routes:
      - name: slow
        match: {pathPrefix: /slow}
        isRetryable: true
        backendTimeout: 200ms
        timeout: 2s
"""


def _three_timed_out_attempts(p, slow) -> None:
    """GET /slow against a 3 s backend: three attempts of 200 ms, then 504, well before the 2 s route timeout."""
    conn = http.client.HTTPConnection(*p.outbound, timeout=10)
    start = time.monotonic()
    conn.request("GET", "/slow", headers={"Host": "web.test:80"})
    resp = conn.getresponse()
    elapsed = time.monotonic() - start
    resp.read()
    assert resp.status == 504
    assert "backend timeout" in resp.getheader("l5d-proxy-error", "")
    assert 0.5 <= elapsed < 1.8, elapsed
    deadline = time.monotonic() + 5
    while slow.hits["GET"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow.hits["GET"] == 3
    assert _route(p.metrics(), "slow", "route_retry_total") == 2


def test_backend_timeout_is_retried_on_a_retryable_route(mesh):
    backend, proxy, endpoints, _ = mesh
    slow = backend("slow", slow=3.0)
    _endpoints(endpoints, {"web.test:80": slow})
    _three_timed_out_attempts(proxy(SLOW_ROUTE, MESHPROXY_RETRY_LIMIT="2"), slow)


def test_policy_reload_applies_without_dropping_requests_and_keeps_the_last_good_one(mesh):
    backend, proxy, endpoints, policy = mesh
    v1, v2 = backend("v1", slow=1.0), backend("v2", slow=1.0)
    _endpoints(endpoints, {"web-v1.test.svc.cluster.local:80": v1, "web-v2.test.svc.cluster.local:80": v2})
    p = proxy(TRAFFIC_SPLIT.format(v1=1, v2=0))
    assert _load(p.outbound[1], "web.test:80", 10, workers=2) == {(200, "v1"): 10}
    # Requests in flight (the backend takes 1 s on /slow) while the split changes.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(_load, p.outbound[1], "web.test:80", 1, 1, "GET", "/slow") for _ in range(4)]
        time.sleep(0.2)
        _write(policy, TRAFFIC_SPLIT.format(v1=0, v2=1))
        assert all(f.result() == {(200, "v1"): 1} for f in in_flight)
    deadline = time.monotonic() + 5
    while _load(p.outbound[1], "web.test:80", 2, workers=1) != {(200, "v2"): 2}:
        assert time.monotonic() < deadline, "the new split was not applied"
        time.sleep(0.2)
    assert p.metrics().get("policy_reload_total", result="ok") == 1
    # An invalid edit: counted, logged, and the last good policy stays.
    mark = p.mark()
    _write(policy, TRAFFIC_SPLIT.format(v1=0, v2=1) + "  unknownField: 1\n")
    assert p.wait_line("policy reload rejected", since=mark, timeout=5) is not None
    assert p.metrics().get("policy_reload_total", result="invalid") == 1
    assert _load(p.outbound[1], "web.test:80", 10, workers=2) == {(200, "v2"): 10}


def test_an_invalid_policy_at_start_exits_64_naming_the_field(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("services:\n  web.test:80:\n    routes:\n      - name: r\n        timeout: soon\n")
    result = run_once(env={"MESHPROXY_POLICY": str(bad)})
    assert result.returncode == EXIT_CONFIG
    err = result.stderr.decode()
    assert "MESHPROXY_POLICY" in err and "routes[0].timeout" in err, err


H2_POLICY = """
services:
  grpc.test:80:
    retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
    routes:
      - name: unavailable
        match: {pathPrefix: /trailers-only}
        retry: {grpc: [unavailable], limit: 2}
      - name: unavailable-in-trailers
        match: {pathPrefix: /grpc-trailers}
        retry: {grpc: [unavailable], limit: 2}
      - name: statuses
        match: {pathPrefix: /status}
        isRetryable: true
      - name: slow
        match: {pathPrefix: /slow}
        timeout: 300ms
"""


def test_http2_requests_get_the_same_retries_and_timeouts(mesh):
    _, proxy, endpoints, _ = mesh
    origin = H2Origin(name="h2-policy")
    try:
        _endpoints(endpoints, {"grpc.test:80": origin})
        p = proxy(H2_POLICY, MESHPROXY_RETRY_LIMIT="2")
        with H2Client(p.outbound) as client:
            # gRPC Trailers-Only UNAVAILABLE: retried twice, the last answer reaches the client.
            resp = client.exchange("POST", "/trailers-only?grpc=14", authority="grpc.test:80",
                                   headers=[("content-type", "application/grpc")], body=b"\0\0\0\0\0")
            assert resp.status == 200 and resp.header("grpc-status") == "14", resp.summary()
            assert origin.count("/trailers-only") == 3
            assert all(bytes(r.body) == b"\0\0\0\0\0" for r in origin.requests)  # the body was replayed
            # NOT_FOUND is not in the retry list.
            client.exchange("POST", "/trailers-only?grpc=5", authority="grpc.test:80",
                            headers=[("content-type", "application/grpc")], body=b"\0\0\0\0\0")
            assert origin.count("/trailers-only?grpc=5") == 1
            resp = client.exchange("GET", "/status/503", authority="grpc.test:80")
            assert resp.status == 503 and origin.count("/status/503") == 3
            start = time.monotonic()
            resp = client.exchange("GET", "/slow?delay=3", authority="grpc.test:80")
            elapsed = time.monotonic() - start
            assert resp.status == 504 and "timed out" in (resp.header("l5d-proxy-error") or ""), resp.summary()
            assert 0.25 <= elapsed < 2.0, elapsed
        m = p.metrics()
        assert m.get("route_retry_total", rt_route="unavailable") == 2
        assert m.get("route_response_total", rt_route="unavailable", classification="failure") == 2
        assert m.get("route_retry_total", rt_route="statuses") == 2
        assert m.get("route_response_total", rt_route="slow", classification="failure") == 1
    finally:
        origin.stop()


def test_a_grpc_status_in_trailers_is_retried_when_no_message_came_before_it(mesh):
    _, proxy, endpoints, _ = mesh
    origin = H2Origin(name="h2-trailers")
    grpc = [("content-type", "application/grpc")]
    try:
        _endpoints(endpoints, {"grpc.test:80": origin})
        p = proxy(H2_POLICY)
        with H2Client(p.outbound) as client:
            # Head, then UNAVAILABLE in the trailers: two retries, the last answer goes through whole.
            resp = client.exchange("POST", "/grpc-trailers?grpc=14", authority="grpc.test:80", headers=grpc,
                                   body=b"\0\0\0\0\0")
            assert resp.status == 200 and dict(resp.trailers or ()) == {b"grpc-status": b"14"}, resp.summary()
            assert origin.count("/grpc-trailers?grpc=14") == 3
            # Failing once: the client only ever sees the success.
            resp = client.exchange("POST", "/grpc-trailers?grpc=14&once=a", authority="grpc.test:80",
                                   headers=grpc, body=b"\0\0\0\0\0")
            assert dict(resp.trailers or ()) == {b"grpc-status": b"0"} and len(resp.headers) >= 2, resp.summary()
            assert origin.count("/grpc-trailers?grpc=14&once=a") == 2
            # A message came first: the response had started, the status only classifies it.
            resp = client.exchange("POST", "/grpc-trailers?grpc=14&message=1", authority="grpc.test:80",
                                   headers=grpc, body=b"\0\0\0\0\0")
            assert bytes(resp.data) == b"\0\0\0\0\0" and dict(resp.trailers or ()) == {b"grpc-status": b"14"}
            assert origin.count("/grpc-trailers?grpc=14&message=1") == 1
        m = p.metrics()
        assert m.get("route_retry_total", rt_route="unavailable-in-trailers") == 3
        assert m.get("route_response_total", rt_route="unavailable-in-trailers", classification="failure") == 2
        assert m.get("route_response_total", rt_route="unavailable-in-trailers", classification="success") == 1
    finally:
        origin.stop()


def test_meshed_http1_requests_are_retried_across_the_http2_hop(mesh, tmp_path):
    backend, proxy, endpoints, _ = mesh
    broken = backend("broken", fail_rate=1.0)
    peer = MeshProxy(env=PLAIN_PEER, name="peer-proxy").start()  # B: its inbound forwards to the app port it is told
    try:
        _write(endpoints, "services:\n  web.test:80:\n    endpoints:\n"
                          f"      - {{address: 127.0.0.1:{broken.port}, proxy: {peer.inbound_hostport}}}\n")
        p = proxy(RETRYABLE_GETS.format(min_rps=10), MESHPROXY_RETRY_LIMIT="2")
        got = _load(p.outbound[1], "web.test:80", 5, workers=1)
        assert got == {(503, "broken"): 5}
        assert broken.hits["GET"] == 5 * 3
        got = _load(p.outbound[1], "web.test:80", 3, workers=1, method="POST", path="/idempotent-write",
                    body=b"z" * 300)
        assert got == {(503, "broken"): 3}
        assert broken.hits["POST"] == 3 * 3 and broken.server.bodies[-1] == b"z" * 300
        assert _route(p.metrics(), "reads", "route_retry_total") == 10
        assert peer.metrics().get("request_total", direction="inbound") == 5 * 3 + 3 * 3  # every attempt was meshed
    finally:
        peer.close()


def test_backend_timeout_bounds_each_attempt_across_the_meshed_hop(mesh):
    backend, proxy, endpoints, _ = mesh
    slow = backend("slow-meshed", slow=3.0)
    peer = MeshProxy(env=PLAIN_PEER, name="peer-proxy-t").start()
    try:
        _write(endpoints, "services:\n  web.test:80:\n    endpoints:\n"
                          f"      - {{address: 127.0.0.1:{slow.port}, proxy: {peer.inbound_hostport}}}\n")
        _three_timed_out_attempts(proxy(SLOW_ROUTE, MESHPROXY_RETRY_LIMIT="2"), slow)
    finally:
        peer.close()


def test_a_reload_reaches_keep_alive_connections_to_passthrough_destinations(mesh):
    backend, proxy, endpoints, policy = mesh
    direct = backend("direct", slow=2.0)
    _write(endpoints, "services: {}\n")
    host = f"127.0.0.1:{direct.port}"
    p = proxy("services: {}\n")
    conn = http.client.HTTPConnection(*p.outbound, timeout=10)
    for _ in range(2):  # the connection now remembers where this Host goes
        conn.request("GET", "/", headers={"Host": host})
        assert conn.getresponse().read() == b"direct"
    _write(policy, f"services:\n  {host}:\n    routes:\n"
                   "      - {name: slow, match: {pathPrefix: /slow}, timeout: 200ms}\n")
    deadline = time.monotonic() + 5
    while p.metrics().get("policy_reload_total", result="ok") < 1:
        assert time.monotonic() < deadline, "the edit was not applied"
        time.sleep(0.1)
    conn.request("GET", "/slow", headers={"Host": host})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 504, resp.status


HTTP_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-route
  namespace: test
  annotations:
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: "2"
spec:
  parentRefs:
    - {group: core, kind: Service, name: web, port: 80}
  rules:
    - matches: [{headers: [{name: x-canary, value: "1"}]}]
      backendRefs: [{name: web-v2, port: 80}]
    - backendRefs: [{name: web-v1, port: 80}]
      timeouts: {request: 2s}
"""


def test_an_httproute_with_linkerd_retry_annotations_routes_and_retries(mesh):
    backend, proxy, endpoints, _ = mesh
    v1, v2 = backend("v1", fail_rate=1.0), backend("v2")
    _endpoints(endpoints, {"web-v1.test.svc.cluster.local:80": v1, "web-v2.test.svc.cluster.local:80": v2})
    p = proxy(HTTP_ROUTE)
    assert _load(p.outbound[1], "web.test:80", 4, workers=1) == {(503, "v1"): 4}
    assert v1.hits["GET"] == 4 * 3  # the annotation's limit: 2 retries each
    conn = http.client.HTTPConnection(*p.outbound, timeout=10)
    conn.request("GET", "/", headers={"Host": "web.test:80", "x-canary": "1"})
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"v2")  # the header rule's backend
    m = p.metrics()
    assert m.get("route_retry_total", dst="web.test.svc.cluster.local:80") == 8
    # Recent Linkerd's route families: both rules are the one HTTPRoute's series.
    route = {"parent_group": "core", "parent_kind": "Service", "parent_namespace": "test", "parent_name": "web",
             "parent_port": "80", "parent_section_name": "", "route_group": "gateway.networking.k8s.io",
             "route_kind": "HTTPRoute", "route_namespace": "test", "route_name": "web-route", "hostname": ""}
    assert m.get("outbound_http_route_request_statuses_total", **route, http_status="503", error="") == 4
    assert m.get("outbound_http_route_request_statuses_total", **route, http_status="200", error="") == 1
    assert m.get("outbound_http_route_request_duration_seconds_count", **route) == 5
    assert m.get("outbound_http_route_request_duration_seconds_bucket", **route, le="+Inf") == 5
    assert m.get("outbound_http_route_retry_requests_total", **route) == 8
    assert m.get("outbound_http_route_retry_limit_exceeded_total", **route) == 4  # 503 again after the 2nd retry
    assert m.get("outbound_http_route_retry_successes_total", **route) == 0
    assert m.get("outbound_http_route_retry_overflow_total", **route) == 0


HEADER_ROUTE = """
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: web-headers, namespace: test}
spec:
  parentRefs:
    - {group: core, kind: Service, name: web, port: 80}
    - {group: core, kind: Service, name: meshed, port: 80}
    - {group: core, kind: Service, name: h2, port: 80}
  rules:
    - matches: [{path: {type: PathPrefix, value: /edit}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Route, value: edited}]
            add: [{name: x-tag, value: from-route}]
            remove: [x-debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: x-answer, value: edited}]
            add: [{name: x-via-route, value: "1"}]
            remove: [server]
"""


def _sent_headers(conn: http.client.HTTPConnection, host: str, path: str) -> None:
    conn.request("GET", path, headers={"Host": host, "x-route": "client", "X-Tag": "client",
                                       "x-debug": "secret", "x-keep": "1"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"edit"
    edited = path.startswith("/edit")  # the response edits too
    assert (resp.getheader("x-answer"), resp.getheader("x-via-route")) == (("edited", "1") if edited else (None, None))
    assert (resp.getheader("server") is None) == edited and resp.getheader("content-length") == "4"


def _edited(heads) -> bool:
    got = [(k.lower(), v) for k, v in heads]
    return (("x-route", "edited") in got and ("x-route", "client") not in got
            and not any(k == "x-debug" for k, _ in got)
            and [v for k, v in got if k == "x-tag"] == ["client", "from-route"] and ("x-keep", "1") in got)


def test_a_request_header_modifier_edits_http1_http2_and_meshed_requests(mesh):
    backend, proxy, endpoints, _ = mesh
    app = backend("edit")
    origin = H2Origin(name="h2-edit")
    peer = MeshProxy(env=PLAIN_PEER, name="peer-proxy-h").start()
    try:
        _write(endpoints, "services:\n"
               f"  web.test.svc.cluster.local:80:\n    endpoints: [{{address: 127.0.0.1:{app.port}}}]\n"
               f"  meshed.test.svc.cluster.local:80:\n    endpoints:\n"
               f"      - {{address: 127.0.0.1:{app.port}, proxy: {peer.inbound_hostport}}}\n"
               f"  h2.test.svc.cluster.local:80:\n    endpoints: [{{address: 127.0.0.1:{origin.port}}}]\n")
        p = proxy(HEADER_ROUTE)
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        _sent_headers(conn, "web.test:80", "/edit/1")
        _sent_headers(conn, "web.test:80", "/other")
        heads = app.server.heads
        assert _edited(heads[0]) and not _edited(heads[1]), heads
        assert ("x-debug", "secret") in [(k.lower(), v) for k, v in heads[1]]  # other routes untouched
        # Across the meshed HTTP/2 hop: edited once, by the client's proxy.
        _sent_headers(conn, "meshed.test:80", "/edit/2")
        assert _edited(heads[2]), heads[2]
        assert peer.metrics().get("request_total", direction="inbound") == 1
        with H2Client(p.outbound) as client:  # an HTTP/2 client
            resp = client.exchange("GET", "/edit/3", authority="h2.test:80",
                                   headers=[("x-route", "client"), ("x-tag", "client"), ("x-debug", "secret")])
            assert resp.status == 200, resp.summary()
            assert (resp.header("x-answer"), resp.header("x-via-route")) == ("edited", "1"), resp.summary()
        req = origin.requests[-1]
        assert req.header_all("x-route") == ["edited"] and req.header_all("x-tag") == ["client", "from-route"]
        assert req.header("x-debug") is None
    finally:
        peer.close()
        origin.stop()


def test_failure_accrual_from_the_policy_file_applies_and_follows_reloads(mesh):
    # The fixture sets the proxy-wide threshold to 1,000,000 failures: only the policy can eject.
    # The good backend answers /slow in 50 ms, the broken one fails at once: PeakEWMA prefers
    # the broken one for as long as it is not ejected.
    backend, proxy, endpoints, policy = mesh
    good, broken = backend("good", slow=0.05), backend("broken", fail_rate=1.0)
    _write(endpoints, "services:\n  web.test:80:\n    endpoints:\n"
                      f"      - address: 127.0.0.1:{good.port}\n      - address: 127.0.0.1:{broken.port}\n")
    p = proxy("services:\n  web.test:80: {}\n")
    first = _load(p.outbound[1], "web.test:80", 20, workers=1, path="/slow")
    assert first[(503, "broken")] >= 15, first  # never ejected
    _write(policy, "services:\n  web.test:80:\n"
                   "    failureAccrual: {consecutiveFailures: 2, minBackoff: 30s, maxBackoff: 60s}\n")
    deadline = time.monotonic() + 5
    while p.metrics().get("policy_reload_total", result="ok") < 1:
        assert time.monotonic() < deadline, "the edit was not applied"
        time.sleep(0.1)
    second = _load(p.outbound[1], "web.test:80", 20, workers=1, path="/slow")
    # Already past two consecutive failures: the next one ejects it, for 15 to 30 s.
    assert second == {(503, "broken"): 1, (200, "good"): 19}, second
    assert p.metrics().get("balancer_endpoints", service="web.test:80", state="ejected") == 1


RESPLIT = """
services:
  web.test:80:
    retryBudget: {retryRatio: 1.0, minRetriesPerSecond: 1000, ttl: 10s}
    backends: [{authority: web-v1.test:80, weight: 50}, {authority: web-v2.test:80, weight: 50}]
    routes:
      - {name: all, match: {pathPrefix: /}, retry: {http: 5xx, limit: 2}}
"""


def test_a_retry_goes_through_the_traffic_split_again(mesh):
    # Linkerd retries above the split: a request that failed on the broken canary has even
    # odds of the healthy version on each retry, so 1 - (1/2)^3 = 87.5% succeed (50% if
    # retries stayed on the backend that failed).
    backend, proxy, endpoints, _ = mesh
    v1, v2 = backend("v1", fail_rate=1.0), backend("v2")
    _endpoints(endpoints, {"web-v1.test:80": v1, "web-v2.test:80": v2})
    p = proxy(RESPLIT)
    got = _load(p.outbound[1], "web.test:80", 200, workers=4)
    assert got[(200, "v2")] + got[(503, "v1")] == 200, got
    assert got[(200, "v2")] >= 150, got  # 175 expected; 150 is 3.5 standard deviations below
    retries = p.metrics().get("route_retry_total", rt_route="all")
    assert v1.hits["GET"] + v2.hits["GET"] == 200 + retries  # every attempt reached one of them once
    assert v2.hits["GET"] == got[(200, "v2")]  # v2 never fails: one attempt per success


def test_an_http2_retry_goes_through_the_traffic_split_again(mesh):
    _, proxy, endpoints, _ = mesh
    v1, v2 = H2Origin(name="v1", fail_status=503), H2Origin(name="v2")
    try:
        _endpoints(endpoints, {"web-v1.test:80": v1, "web-v2.test:80": v2})
        p = proxy(RESPLIT)
        with H2Client(p.outbound) as client:
            got = collections.Counter((r.status, bytes(r.data)) for r in (
                client.exchange("GET", "/name", authority="web.test:80") for _ in range(100)))
        assert got[(200, b"v2")] + got[(503, b"v1")] == 100, got
        assert got[(200, b"v2")] >= 75, got  # 87.5 expected, 50 without the new split; 75 is 3.8 sd below
    finally:
        v1.stop()
        v2.stop()


REDIRECT_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moves, namespace: test}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}, {kind: Service, name: h2, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
"""


def test_a_request_redirect_is_answered_by_the_proxy(mesh):
    backend, proxy, endpoints, _ = mesh
    app = backend("app")
    origin = H2Origin(name="h2-redirect")
    try:
        _write(endpoints, "services:\n"
               f"  web.test.svc.cluster.local:80:\n    endpoints: [{{address: 127.0.0.1:{app.port}}}]\n"
               f"  h2.test.svc.cluster.local:80:\n    endpoints: [{{address: 127.0.0.1:{origin.port}}}]\n")
        p = proxy(REDIRECT_ROUTE)
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        conn.request("GET", "/old/page?x=1", headers={"Host": "web.test"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 301 and resp.getheader("location") == "http://web.test/new/page?x=1"
        assert resp.getheader("l5d-proxy-error") is None  # an answer, not an error
        conn.request("GET", "/other", headers={"Host": "web.test"})  # same connection: still usable
        assert conn.getresponse().read() == b"app"
        assert app.hits["GET"] == 1  # only /other reached the app
        with H2Client(p.outbound) as client:
            resp = client.exchange("GET", "/old", authority="h2.test")
            assert resp.status == 301 and resp.header("location") == "http://h2.test/new", resp.summary()
        assert origin.count("/") == 0
        m = p.metrics()
        assert m.get("route_response_total", dst="web.test.svc.cluster.local:80", classification="success") == 2
        assert m.get("response_total", direction="outbound", classification="success", status_code="301") >= 1
    finally:
        origin.stop()
