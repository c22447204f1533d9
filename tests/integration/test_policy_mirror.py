"""RequestMirror through the real proxy: copies reach the mirror, the primary never feels it; limits counted.

Primary and mirror are real HTTP/1.1 servers that echo what they received;
a mirror that answers 500, a slow one and one that is not listening at all
stand for the broken shadows mirroring is used to try out. Every load loop
is bounded in requests and time.
"""

from __future__ import annotations

import http.client
import threading
import time

import pytest

from helpers.echo import EchoBackend
from helpers.h2client import H2Client
from helpers.ports import free_port
from tests.integration.test_policy import _load, _write, mesh  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)

MIRROR_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shadowed, namespace: test}}
spec:
  parentRefs: [{{kind: Service, name: web, port: 80}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
      filters:
        - type: RequestMirror
          requestMirror: {{backendRef: {{name: shadow, port: 80}}, {share}}}
    - backendRefs: [{{name: web, port: 80}}]
"""
MIRROR_LABELS = {"dst": "web.test.svc.cluster.local:80", "mirror": "shadow.test.svc.cluster.local:80"}


def _services(endpoints, web: EchoBackend, shadow_port: int) -> None:
    """HTTP/1-only apps: HTTP/2 clients' requests (and their copies) are restored to HTTP/1 for them."""
    _write(endpoints, "services:\n"
           f"  web.test.svc.cluster.local:80:\n    endpoints: [{{address: 127.0.0.1:{web.port}, protocol: http1}}]\n"
           f"  shadow.test.svc.cluster.local:80:\n"
           f"    endpoints: [{{address: 127.0.0.1:{shadow_port}, protocol: http1}}]\n")


def _wait(check, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_every_matching_request_is_copied_and_the_copy_answer_is_discarded(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    web, shadow = EchoBackend("web"), EchoBackend("shadow", status=500)
    try:
        _services(endpoints, web, shadow.port)
        p = proxy(MIRROR_ROUTE.format(share="percent: 100"))
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        for i in range(5):
            conn.request("POST", f"/api/items?n={i}", body=b"x" * 300, headers={"Host": "web.test"})
            resp = conn.getresponse()
            assert resp.status == 200 and b'"name": "web"' in resp.read()
        conn.request("GET", "/other", headers={"Host": "web.test"})  # no mirror on this rule
        assert conn.getresponse().read()
        chunked = http.client.HTTPConnection(*p.outbound, timeout=10)  # a body without a declared length
        chunked.request("PUT", "/api/chunked", body=iter([b"a" * 100, b"b" * 50]), encode_chunked=True,
                        headers={"Host": "web.test"})
        assert chunked.getresponse().status == 200
        with H2Client(p.outbound) as client:  # HTTP/2 clients are mirrored too
            resp = client.exchange("POST", "/api/h2", authority="web.test:80", body=b"y" * 70)
            assert resp.status == 200, resp.summary()
        assert _wait(lambda: len(shadow.seen) == 7), shadow.seen
        copies = sorted((s["method"], s["path"], s["body"]) for s in shadow.seen)
        assert copies == sorted([("POST", f"/api/items?n={i}", 300) for i in range(5)]
                                + [("PUT", "/api/chunked", 150), ("POST", "/api/h2", 70)])
        assert {s["host"] for s in shadow.seen} <= {"web.test", "web.test:80"}  # the request as the client sent it
        m = p.metrics()
        assert m.get("outbound_http_mirror_requests_total", **MIRROR_LABELS) == 7
        assert _wait(lambda: p.metrics().get("outbound_http_mirror_failures_total", **MIRROR_LABELS) == 7)
        # The shadow's 500s are nowhere on the primary's route.
        route = {"route_kind": "HTTPRoute", "route_name": "shadowed", "parent_name": "web"}
        # Counted when each response's stream ends (the chunked PUT's client read only its head).
        assert _wait(lambda: p.metrics().get("outbound_http_route_request_statuses_total", **route, http_status="200",
                                             error="") == 8)
        assert p.metrics().get("outbound_http_route_request_statuses_total", **route, http_status="500") == 0
    finally:
        web.stop()
        shadow.stop()


def test_a_percentage_mirrors_about_that_share(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    web, shadow = EchoBackend("web"), EchoBackend("shadow")
    try:
        _services(endpoints, web, shadow.port)
        p = proxy(MIRROR_ROUTE.format(share="fraction: {numerator: 1, denominator: 4}"))
        n = 400
        got = _load(p.outbound[1], "web.test", n, workers=4, path="/api/x")
        assert sum(v for k, v in got.items() if k[0] == 200) == n, got
        assert len(web.seen) == n
        assert _wait(lambda: p.metrics().get("outbound_http_mirror_in_flight") == 0)
        mirrored = len(shadow.seen)
        assert 0.25 * n - 40 <= mirrored <= 0.25 * n + 40, mirrored  # binomial: sd ~ 8.7
        assert p.metrics().get("outbound_http_mirror_requests_total", **MIRROR_LABELS) == mirrored
    finally:
        web.stop()
        shadow.stop()


def test_large_bodies_and_copies_over_the_in_flight_limit_are_skipped_and_counted(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    web, shadow = EchoBackend("web"), EchoBackend("shadow", delay=1.0)
    try:
        _services(endpoints, web, shadow.port)
        p = proxy(MIRROR_ROUTE.format(share="percent: 100"), MESHPROXY_MIRROR_MAX_BODY_BYTES="1KiB",
                  MESHPROXY_MIRROR_MAX_IN_FLIGHT="2")
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        conn.request("POST", "/api/big", body=b"x" * 2048, headers={"Host": "web.test"})
        assert conn.getresponse().read()
        conn.request("POST", "/api/big-chunked", body=iter([b"x" * 600, b"y" * 600]), encode_chunked=True,
                     headers={"Host": "web.test"})
        assert conn.getresponse().read()
        # The slow shadow holds two copies for a second: the next ones are over the limit.
        started = time.monotonic()
        for i in range(6):
            conn.request("GET", f"/api/fast/{i}", headers={"Host": "web.test"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
        assert time.monotonic() - started < 0.9  # the primary never waited for the slow shadow
        m = p.metrics()
        assert m.get("outbound_http_mirror_skipped_total", **MIRROR_LABELS, reason="body_too_large") == 2
        assert m.get("outbound_http_mirror_skipped_total", **MIRROR_LABELS, reason="in_flight_limit") == 4
        assert _wait(lambda: len(shadow.seen) == 2)
        assert sorted(s["path"] for s in shadow.seen) == ["/api/fast/0", "/api/fast/1"]
        assert all(s["body"] == 0 for s in shadow.seen)  # no truncated copy of the chunked body went out
        assert m.get("outbound_http_mirror_requests_total", **MIRROR_LABELS) == 2
    finally:
        web.stop()
        shadow.stop()


def test_a_dead_mirror_costs_the_primary_nothing_and_reloads_drop_nothing(mesh):  # noqa: F811
    _, proxy, endpoints, policy = mesh
    web = EchoBackend("web")
    dead = free_port()  # nothing listens there
    try:
        _services(endpoints, web, dead)
        p = proxy(MIRROR_ROUTE.format(share="percent: 100"), MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE="1000000")
        results: list = []

        def load() -> None:
            results.append(_load(p.outbound[1], "web.test", 600, workers=3, path="/api/x", deadline=60))

        worker = threading.Thread(target=load)
        worker.start()
        # Reloads while requests flow: the mirror off, on again, at a share.
        for share in ("percent: 0", "percent: 100", "percent: 50"):
            time.sleep(0.4)
            _write(policy, MIRROR_ROUTE.format(share=share))
        worker.join(90)
        got = results[0]
        assert sum(got.values()) == 600 and all(key[0] == 200 for key in got), got
        m = p.metrics()
        assert m.get("policy_reload_total", result="ok") >= 1
        assert m.get("outbound_http_mirror_failures_total", **MIRROR_LABELS) > 0
        # Unreachable: after 5 refused copies in a row the mirror is left alone for a backoff.
        assert m.get("outbound_http_mirror_skipped_total", **MIRROR_LABELS, reason="mirror_unreachable") > 0
        assert m.get("outbound_http_mirror_failures_total", **MIRROR_LABELS) < 100
        route = {"route_kind": "HTTPRoute", "route_name": "shadowed", "parent_name": "web"}
        assert m.get("outbound_http_route_request_statuses_total", **route, http_status="200", error="") == 600
        assert m.get("outbound_http_route_retry_requests_total", **route) == 0
    finally:
        web.stop()


def test_copies_cross_the_meshed_hop_to_a_meshed_mirror(mesh):  # noqa: F811
    from helpers.meshproxy import MeshProxy
    from tests.integration.test_policy import PLAIN_PEER

    _, proxy, endpoints, _ = mesh
    web, shadow = EchoBackend("web"), EchoBackend("shadow")
    peer = MeshProxy(env=PLAIN_PEER, name="peer-proxy-mirror").start()
    try:
        _write(endpoints, "services:\n"
               f"  web.test.svc.cluster.local:80:\n    endpoints: [{{address: 127.0.0.1:{web.port}}}]\n"
               f"  shadow.test.svc.cluster.local:80:\n"
               f"    endpoints: [{{address: 127.0.0.1:{shadow.port}, proxy: {peer.inbound_hostport}}}]\n")
        p = proxy(MIRROR_ROUTE.format(share="percent: 100"))
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        for i in range(3):
            conn.request("POST", f"/api/m/{i}", body=b"z" * 10, headers={"Host": "web.test"})
            assert conn.getresponse().read()
        assert _wait(lambda: len(shadow.seen) == 3), shadow.seen
        assert sorted((s["path"], s["body"]) for s in shadow.seen) == [(f"/api/m/{i}", 10) for i in range(3)]
        assert peer.metrics().get("request_total", direction="inbound") == 3  # each copy over the meshed hop
    finally:
        peer.close()
        web.stop()
        shadow.stop()
