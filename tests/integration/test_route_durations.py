"""Recent Linkerd's route and backend durations run to the response's end, through a real proxy.

Each backend (HTTP/1, HTTP/2, gRPC) sends its response head at once and the
rest of the body 300 ms later, so a duration measured to the head would land
in the first buckets and one measured to the end cannot: the route's
``request_duration_seconds`` must land in its 0.5 s bucket, the backend's
``response_duration_seconds`` in its 0.5 s bucket (not the 0.25 s one), while the
older ``route_response_latency_ms`` still measures the head, as Linkerd's does.
The backend's ``response_frame_size_bytes`` histogram counts the body's bytes
as the backend sent them.
"""

from __future__ import annotations

import http.client

import pytest

from helpers.grpc_service import EchoStub, GrpcServer, channel
from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy
from helpers.routeproxy import http_route, start_route_proxy
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(120)

TRICKLE = 0.3  # seconds between a response's head and its end
POLICY = http_route("h1-route", "h1", "h1-backend") + http_route("h2-route", "h2", "h2-backend") + """---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-route, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: grpc, port: 80}]
  rules: [{matches: [{method: {service: meshproxy.test.Echo}}], backendRefs: [{name: grpc-backend, port: 80}]}]
"""


def _labels(parent: str, kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """The route's labels (with hostname) and its one backend's."""
    route = {"parent_group": "core", "parent_kind": "Service", "parent_namespace": "test", "parent_name": parent,
             "parent_port": "80", "parent_section_name": "", "route_group": "gateway.networking.k8s.io",
             "route_kind": kind, "route_namespace": "test", "route_name": f"{parent}-route"}
    backend = {**route, "backend_group": "core", "backend_kind": "Service", "backend_namespace": "test",
               "backend_name": f"{parent}-backend", "backend_port": "80", "backend_section_name": ""}
    return {**route, "hostname": ""}, backend


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("route-durations")
    h1, h2, g = HttpUpstream(name="h1-backend"), H2Origin(name="h2-backend"), GrpcServer()
    mp = None
    try:
        backends = (("h1-backend", h1.hostport, "http1"), ("h2-backend", h2.hostport, "h2"),
                    ("grpc-backend", g.hostport, "h2"))
        mp = start_route_proxy(tmp, "route-durations", POLICY, backends)
        yield mp
    finally:
        if mp is not None:
            mp.close()
        h1.stop()
        h2.stop()
        g.stop()


def _check_to_the_end(proxy: MeshProxy, parent: str, kind: str, body_bytes: int) -> None:
    protocol = "grpc" if kind == "GRPCRoute" else "http"
    route, backend = _labels(parent, kind)
    m = proxy.metrics()
    hist = f"outbound_{protocol}_route_request_duration_seconds"
    assert m.get(f"{hist}_count", **route) == 1
    assert m.get(f"{hist}_bucket", **route, le="0.05") == 0   # not the head's time
    assert m.get(f"{hist}_bucket", **route, le="0.5") == 1    # 0.3 s and a little
    assert m.get(f"{hist}_sum", **route) >= TRICKLE
    hist = f"outbound_{protocol}_route_backend_response_duration_seconds"
    assert m.get(f"{hist}_count", **backend) == 1
    assert m.get(f"{hist}_bucket", **backend, le="0.25") == 0
    assert m.get(f"{hist}_bucket", **backend, le="0.5") == 1
    assert m.get(f"{hist}_sum", **backend) >= TRICKLE
    # The older route family keeps Linkerd's time to the response head.
    dst = f"{parent}.test.svc.cluster.local:80"
    assert m.get("route_response_latency_ms_count", dst=dst) == 1
    assert m.get("route_response_latency_ms_sum", dst=dst) < TRICKLE * 1000 - 50
    frames = f"outbound_{protocol}_route_backend_response_frame_size_bytes"
    assert m.get(f"{frames}_sum", **backend) == body_bytes
    count = m.get(f"{frames}_count", **backend)
    assert count >= 1 and m.get(f"{frames}_bucket", **backend, le="128.0") == count  # small chunks only


def test_http1_durations_run_to_the_last_body_byte(proxy):
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=20)
    try:
        conn.request("GET", f"/head-first?delay={TRICKLE}", headers={"Host": "h1.test.svc.cluster.local:80"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"body")
    finally:
        conn.close()
    _check_to_the_end(proxy, "h1", "HTTPRoute", 4)


def test_http2_durations_run_to_the_end_of_the_stream(proxy):
    with H2Client(proxy.outbound) as client:
        sid = client.request("GET", f"/head-first?delay={TRICKLE}", authority="h2.test.svc.cluster.local:80")
        rsp = client.response(sid, timeout=20)
    assert (rsp.status, bytes(rsp.data)) == (200, b"body")
    _check_to_the_end(proxy, "h2", "HTTPRoute", 4)


def test_grpc_durations_run_to_the_trailers(proxy):
    chan = channel(proxy.outbound_hostport, authority="grpc.test.svc.cluster.local:80")
    try:
        got = list(EchoStub(chan).server_stream(f"trickle:4:{TRICKLE}".encode(), timeout=20))
    finally:
        chan.close()
    assert got == [f"part {i}".encode() for i in range(4)]
    # Four messages of 6 bytes, each with gRPC's 5-byte prefix.
    _check_to_the_end(proxy, "grpc", "GRPCRoute", 4 * 11)


def test_large_bodies_count_each_frame_by_size(proxy):
    _, backend = _labels("h2", "HTTPRoute")
    frames = "outbound_http_route_backend_response_frame_size_bytes"

    def over_10k_and_sum() -> tuple[float, float]:
        m = proxy.metrics()
        over = m.get(f"{frames}_count", **backend) - m.get(f"{frames}_bucket", **backend, le="10240.0")
        return over, m.get(f"{frames}_sum", **backend)

    before = over_10k_and_sum()
    with H2Client(proxy.outbound) as client:
        sid = client.request("GET", "/bytes/40000", authority="h2.test.svc.cluster.local:80")
        rsp = client.response(sid, timeout=20)
    assert rsp.status == 200 and len(rsp.data) == 40000
    after = over_10k_and_sum()
    assert after[1] - before[1] == 40000
    # HTTP/2 DATA frames are at most 16 KiB by default: at least three of them, two over 10 KiB.
    assert after[0] - before[0] >= 2, (before, after)
