"""Linkerd's labels on the HTTP and TCP families, read from real proxies after real traffic.

Proxy A (identity web, file discovery) calls services meshed behind proxy B
(identity api: mutual TLS) and proxy Q (no identity: a plaintext hop), a
gRPC server behind B, and an endpoint nothing listens on. Each test reads
the labels both sides put on what crossed them; the last ones check the
whole exposition with promtool and prometheus_client's parser.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.checks import delta, wait_metric
from helpers.grpc_service import EchoStub, GrpcServer, channel
from helpers.meshproxy import MeshProxy
from helpers.ports import free_port
from helpers.servers import TcpEchoServer
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(120)

WEB = "web.default.serviceaccount.identity.cluster.local"
API = "api.default.serviceaccount.identity.cluster.local"
API_SVC = "api.shop.svc.cluster.local:80"
GRPC_SVC = "grpc.shop.svc.cluster.local:80"
PLAIN_SVC = "plain.mesh:80"
REFUSED_SVC = "refused.mesh:80"
POD = "api-7d9f8b-x2x9q"


class Mesh:
    def __init__(self, a: MeshProxy, b: MeshProxy, q: MeshProxy, app: HttpUpstream, grpc_server: GrpcServer,
                 echo: TcpEchoServer) -> None:
        self.a, self.b, self.q, self.app, self.grpc, self.echo = a, b, q, app, grpc_server, echo


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    from helpers.issuer import Issuer

    tmp: Path = tmp_path_factory.mktemp("metrics-labels")
    issuer = Issuer(tmp / "issuer", [WEB, API]).start()
    app = HttpUpstream(name="labels-app")
    grpc_server = GrpcServer()
    echo = TcpEchoServer(name="labels-echo")
    started: list[MeshProxy] = []
    try:
        b = MeshProxy(env={**issuer.env(API), "MESHPROXY_INBOUND_DEFAULT_TARGET": echo.hostport},
                      name="proxy-B", log_path=tmp / "b.log").start()
        started.append(b)
        q = MeshProxy(env={"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8",
                           "MESHPROXY_METRICS_WORKLOAD_LABELS": "true", "MESHPROXY_WORKLOAD_NAMESPACE": "shop",
                           "MESHPROXY_WORKLOAD_POD": "plain-5c4f-q8w2z", "MESHPROXY_WORKLOAD_KIND": "deployment",
                           "MESHPROXY_WORKLOAD_NAME": "plain"},
                      name="proxy-Q", log_path=tmp / "q.log").start()
        started.append(q)
        endpoints = tmp / "endpoints.yaml"
        endpoints.write_text(
            "services:\n"
            f"  {API_SVC}:\n"
            "    endpoints:\n"
            f"      - address: {app.hostport}\n"
            f"        proxy: {b.inbound_hostport}\n"
            f"        identity: {API}\n"
            "        protocol: http1\n"
            f"        labels: {{namespace: shop, service: api, pod: {POD}, deployment: api,"
            " serviceaccount: api, zone: zone-a}\n"
            f"  {GRPC_SVC}:\n"
            "    endpoints:\n"
            f"      - address: {grpc_server.hostport}\n"
            f"        proxy: {b.inbound_hostport}\n"
            f"        identity: {API}\n"
            "        protocol: h2\n"
            f"  {PLAIN_SVC}:\n"
            "    endpoints:\n"
            f"      - address: {app.hostport}\n"
            f"        proxy: {q.inbound_hostport}\n"
            "        protocol: http1\n"
            f"  {REFUSED_SVC}:\n"
            "    endpoints:\n"
            f"      - address: 127.0.0.1:{free_port()}\n"
        )
        a = MeshProxy(env={**issuer.env(WEB), "MESHPROXY_DESTINATION": f"file://{endpoints}"},
                      name="proxy-A", log_path=tmp / "a.log").start()
        started.append(a)
        mesh = Mesh(a, b, q, app, grpc_server, echo)
        _wait_routed(mesh)
        yield mesh
    finally:
        for proxy in started:
            proxy.close()
        app.stop()
        grpc_server.stop()
        echo.stop()
        issuer.stop()


def _get(proxy: MeshProxy, path: str, host: str) -> int:
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _wait_routed(mesh: Mesh) -> None:
    """Discovery loads just after /ready: wait until A routes the meshed service."""
    deadline = time.monotonic() + 10
    while _get(mesh.a, "/warm", API_SVC) != 200:
        assert time.monotonic() < deadline, "A never routed the meshed service"
        time.sleep(0.1)


def _only(metrics, name: str, **labels: str) -> dict[str, str]:
    """The labels of the one series of ``name`` matching ``labels``."""
    series = metrics.series(name, **labels)
    assert len(series) == 1, (name, labels, series)
    return series[0][0]


def test_mutual_tls_hop_carries_identities_and_discovery_labels(mesh):
    before_a, before_b = mesh.a.metrics(), mesh.b.metrics()
    for _ in range(3):
        assert _get(mesh.a, "/echo", API_SVC) == 200
    assert _get(mesh.a, "/status/500", API_SVC) == 500
    after_a, after_b = mesh.a.metrics(), mesh.b.metrics()

    out = {"direction": "outbound", "authority": API_SVC, "target_addr": mesh.app.hostport, "tls": "true",
           "server_id": API, "dst_namespace": "shop", "dst_service": "api", "dst_pod": POD,
           "dst_deployment": "api", "dst_serviceaccount": "api", "dst_zone": "zone-a"}
    assert delta(before_a, after_a, "request_total", **out) == 4
    assert delta(before_a, after_a, "response_total", **out, status_code="200", classification="success") == 3
    assert delta(before_a, after_a, "response_total", **out, status_code="500", classification="failure") == 1
    assert delta(before_a, after_a, "response_latency_ms_count", **out) == 4
    assert "no_tls_reason" not in _only(after_a, "request_total", **out)

    inbound = {"direction": "inbound", "authority": API_SVC, "target_addr": mesh.app.hostport, "tls": "true",
               "client_id": WEB, "srv_kind": "default", "srv_name": "all-unauthenticated"}
    assert delta(before_b, after_b, "request_total", **inbound) == 4
    assert delta(before_b, after_b, "response_total", **inbound, status_code="200", classification="success") == 3
    assert delta(before_b, after_b, "response_total", **inbound, status_code="500", classification="failure") == 1
    assert not any(k.startswith("dst_") for k in _only(after_b, "request_total", **inbound))


def test_plaintext_hop_says_why_it_is_not_tls(mesh):
    before_a, before_q = mesh.a.metrics(), mesh.q.metrics()
    assert _get(mesh.a, "/echo", PLAIN_SVC) == 200
    after_a, after_q = mesh.a.metrics(), mesh.q.metrics()
    out = {"direction": "outbound", "authority": PLAIN_SVC, "tls": "no_identity",
           "no_tls_reason": "not_provided_by_service_discovery"}
    assert delta(before_a, after_a, "response_total", **out, status_code="200") == 1
    assert "server_id" not in _only(after_a, "request_total", **out)
    # Q has no identity at all: mutual TLS is disabled there.
    inbound = {"direction": "inbound", "authority": PLAIN_SVC, "tls": "no_identity", "no_tls_reason": "disabled"}
    assert delta(before_q, after_q, "response_total", **inbound, status_code="200") == 1
    assert "client_id" not in _only(after_q, "request_total", **inbound)


def test_grpc_status_from_real_grpcio_calls(mesh):
    before_a, before_b = mesh.a.metrics(), mesh.b.metrics()
    chan = channel(mesh.a.outbound_hostport, authority=GRPC_SVC)
    try:
        grpc.channel_ready_future(chan).result(timeout=10)
        stub = EchoStub(chan)
        assert stub.unary(b"echo:hi", timeout=10) == b"hi"
        assert stub.unary(b"echo:again", timeout=10) == b"again"
        with pytest.raises(grpc.RpcError) as info:
            stub.unary(b"fail:NOT_FOUND:no such thing", timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        chan.close()
    after_a, after_b = mesh.a.metrics(), mesh.b.metrics()
    for before, after, direction in ((before_a, after_a, "outbound"), (before_b, after_b, "inbound")):
        labels = {"direction": direction, "authority": GRPC_SVC, "status_code": "200"}
        assert delta(before, after, "response_total", **labels, grpc_status="0", classification="success") == 2
        assert delta(before, after, "response_total", **labels, grpc_status="5", classification="failure") == 1


def test_refused_connection_is_answered_with_the_error_label(mesh):
    before = mesh.a.metrics()
    assert _get(mesh.a, "/x", REFUSED_SVC) == 502
    after = mesh.a.metrics()
    labels = {"direction": "outbound", "authority": REFUSED_SVC, "status_code": "502", "classification": "failure",
              "error": "i/o", "errno": "ECONNREFUSED"}
    assert delta(before, after, "response_total", **labels) == 1
    # The app answered every other request: no error label there.
    for series, _ in after.series("response_total", authority=API_SVC):
        assert "error" not in series


def test_tcp_families_carry_peer_tls_and_target_labels(mesh):
    assert _get(mesh.a, "/echo", API_SVC) == 200
    ma, mb = mesh.a.metrics(), mesh.b.metrics()
    dst = {"direction": "outbound", "peer": "dst", "target_addr": mesh.app.hostport, "tls": "true",
           "server_id": API, "dst_namespace": "shop", "dst_pod": POD}
    assert ma.get("tcp_open_total", **dst) >= 1
    assert ma.get("tcp_write_bytes_total", **dst) > 0 and ma.get("tcp_read_bytes_total", **dst) > 0
    src = {"direction": "outbound", "peer": "src", "tls": "no_identity", "no_tls_reason": "loopback"}
    assert ma.get("tcp_open_total", **src) >= 1
    hop = {"direction": "inbound", "peer": "src", "tls": "true", "client_id": WEB,
           "srv_kind": "default", "srv_name": "all-unauthenticated"}
    assert mb.get("tcp_open_total", **hop) >= 1
    assert mb.get("tcp_read_bytes_total", **hop) > 0


def test_opaque_connection_lifetime_and_plaintext_labels(mesh):
    labels = {"direction": "inbound", "peer": "src", "tls": "no_identity", "no_tls_reason": "no_tls_from_remote",
              "target_addr": mesh.echo.hostport}
    before = mesh.b.metrics()
    payload = b"\x00\x01 not http, relayed as opaque bytes\n"
    with socket.create_connection(mesh.b.inbound, timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            assert chunk, "the echo closed early"
            got += chunk
        assert got == payload
        time.sleep(0.25)  # a lifetime the histogram can see
    closed = wait_metric(mesh.b, "tcp_close_total", lambda v: v >= before.get("tcp_close_total", **labels) + 1,
                         **labels, classification="success")
    after = mesh.b.metrics()
    assert closed == before.get("tcp_close_total", **labels, classification="success") + 1
    assert delta(before, after, "tcp_read_bytes_total", **labels) == len(payload)
    assert delta(before, after, "tcp_connection_duration_ms_count", **labels) == 1
    assert delta(before, after, "tcp_connection_duration_ms_sum", **labels) >= 200
    assert delta(before, after, "tcp_connection_duration_ms_bucket", **labels, le="100") == 0
    assert after.get("tcp_open_connections", **labels) == 0


def test_a_reset_connection_is_closed_with_its_errno(mesh):
    labels = {"direction": "outbound", "peer": "src", "classification": "failure", "errno": "ECONNRESET"}
    before = mesh.a.metrics().get("tcp_close_total", **labels)
    sock = socket.create_connection(mesh.a.outbound, timeout=10)
    sock.sendall(f"GET /slow?delay=5 HTTP/1.1\r\nHost: {API_SVC}\r\n\r\n".encode())
    time.sleep(0.3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    sock.close()
    assert wait_metric(mesh.a, "tcp_close_total", lambda v: v == before + 1, timeout=5, **labels) == before + 1


def test_workload_labels_on_every_sample_when_asked(mesh):
    assert _get(mesh.a, "/echo", PLAIN_SVC) == 200
    metrics = mesh.q.metrics()
    want = {"namespace": "shop", "pod": "plain-5c4f-q8w2z", "deployment": "plain"}
    samples = [labels for series in metrics.samples.values() for labels, _ in series]
    assert len(samples) > 50
    for labels in samples:
        assert {k: labels.get(k) for k in want} == want, labels
    # Not asked: none added.
    assert all("pod" not in labels for series in mesh.a.metrics().samples.values() for labels, _ in series)


# ---- the whole exposition -------------------------------------------------------------------

HTTP = ["request_total", "response_total", "response_latency_ms"]
TCP = ["tcp_open_total", "tcp_open_connections", "tcp_read_bytes_total", "tcp_write_bytes_total",
       "tcp_close_total", "tcp_connection_duration_ms"]
PROCESS = ["process_start_time_seconds", "process_cpu_seconds_total", "process_resident_memory_bytes",
           "process_open_fds", "python_gc_collections_total", "python_gc_objects_collected_total",
           "python_gc_objects_uncollectable_total", "python_gc_objects_frozen"]
AUTHZ = ["inbound_http_authz_allow_total", "inbound_http_authz_deny_total", "inbound_http_route_not_found_total",
         "inbound_tcp_authz_allow_total", "inbound_tcp_authz_deny_total", "inbound_tcp_authz_terminate_total",
         "inbound_http_local_ratelimit_total"]
IDENTITY = ["identity_cert_expiration_timestamp_seconds", "identity_cert_refresh_total",
            "tls_connections_total", "tls_session_resumed_total", "tls_handshake_errors_total"]
DISCOVERY = ["discovery_reload_errors_total", "discovery_source_errors_total", "discovery_updates_total",
             "discovery_source_up", "discovery_services", "discovery_endpoints"]
BALANCER = ["balancer_endpoints", "balancer_pending_requests", "balancer_queued_requests",
            "outbound_http_balancer_endpoints", "outbound_http_balancer_queue_length"]
TAP = ["tap_sessions_open", "tap_sessions_total", "tap_refused_total", "tap_events_total", "tap_events_dropped_total"]
# What each proxy of the mesh exposes: A balances discovered services, B and Q only serve.
EXPECTED = {
    "a": HTTP + TCP + PROCESS + DISCOVERY + BALANCER + IDENTITY + AUTHZ + TAP,
    "b": HTTP + TCP + PROCESS + IDENTITY + AUTHZ + TAP,
    "q": HTTP + TCP + PROCESS + AUTHZ + TAP,
}
# promtool's lint objects to Linkerd's own names ("_ms"): names this proxy keeps
# on purpose, so dashboards and viz queries written for Linkerd work unchanged.
LINKERD_NAMES = {"response_latency_ms", "tcp_connection_duration_ms", "route_response_latency_ms"}


def _mixed_traffic(mesh) -> None:
    """HTTP/1, HTTP/2 (gRPC), opaque TCP, the mutual-TLS and plaintext hops, and a proxy error."""
    assert _get(mesh.a, "/echo", API_SVC) == 200
    assert _get(mesh.a, "/echo", PLAIN_SVC) == 200
    # 502 (connection refused), or 503 once failure accrual has ejected the endpoint.
    assert _get(mesh.a, "/x", REFUSED_SVC) in (502, 503)
    chan = channel(mesh.a.outbound_hostport, authority=GRPC_SVC)
    try:
        assert EchoStub(chan).unary(b"echo:mixed", timeout=10) == b"mixed"
    finally:
        chan.close()
    with socket.create_connection(mesh.b.inbound, timeout=10) as sock:
        sock.sendall(b"\x00opaque\n")
        assert sock.recv(64)


def _family_names(text: str) -> list[str]:
    names = []
    for family in text_string_to_metric_families(text):
        # prometheus_client names a counter family without its _total.
        names.append(family.name + "_total" if family.type == "counter" else family.name)
    return names


@pytest.mark.parametrize("which", ["a", "b", "q"])
def test_exposition_parses_into_exactly_the_expected_families(mesh, which):
    _mixed_traffic(mesh)
    proxy = getattr(mesh, which)
    status, _, body = proxy.admin_request("GET", "/metrics")
    assert status == 200
    text = body.decode()
    names = _family_names(text)
    assert len(names) == len(set(names)), f"a family is split: {sorted(n for n in names if names.count(n) > 1)}"
    assert sorted(names) == sorted(EXPECTED[which])
    for name in EXPECTED[which]:
        base = name.removesuffix("_total") if name.endswith("_total") else name
        assert text.count(f"# HELP {name} ") == 1 and text.count(f"# TYPE {name} ") == 1, (name, base)


@pytest.mark.parametrize("which", ["a", "b", "q"])
def test_promtool_accepts_the_exposition(mesh, which):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./scripts/bootstrap.sh --test installs Debian's prometheus package"
    _mixed_traffic(mesh)
    _, _, body = getattr(mesh, which).admin_request("GET", "/metrics")
    run = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    report = (run.stdout + run.stderr).decode()
    # Exit 1: the text does not parse; 3: lint findings, which must all be about Linkerd's names.
    assert run.returncode in (0, 3), report
    for line in report.splitlines():
        if line.strip() and not line.startswith("error"):
            assert line.split()[0] in LINKERD_NAMES, f"promtool: {line}"
