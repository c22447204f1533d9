"""Recent Linkerd's route-backend families and GRPCRoute with a Service parent, through a real proxy.

One proxy (file discovery, a policy file) sends an HTTPRoute's requests over a
weighted split of two real HTTP/1 backends (one answering 503), a header rule to
a backend nothing listens on, and a GRPCRoute's calls (with a retry annotation)
over two real grpcio servers. Every backend the split picked must show up in
``outbound_{http,grpc}_route_backend_*`` exactly as the backends saw the
traffic; the whole exposition must satisfy promtool and prometheus_client's parser.
"""

from __future__ import annotations

import collections
import http.client
import shutil
import subprocess

import grpc
import pytest
from integration.test_policy import Backend
from prometheus_client.parser import text_string_to_metric_families

from helpers.grpc_service import EchoStub, GrpcServer, channel
from helpers.meshproxy import EXIT_CONFIG, MeshProxy, run_once
from helpers.ports import free_port
from helpers.routeproxy import start_route_proxy

pytestmark = pytest.mark.timeout(120)

POLICY = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
    - matches: [{headers: [{name: x-broken, value: "1"}]}]
      backendRefs: [{name: web-gone, port: 80}]
    - backendRefs: [{name: web-v1, port: 80, weight: 3}, {name: web-v2, port: 80, weight: 1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo-route
  namespace: test
  annotations: {retry.linkerd.io/grpc: unavailable, retry.linkerd.io/limit: "1"}
spec:
  parentRefs: [{group: core, kind: Service, name: echo, port: 80}]
  rules:
    - matches: [{method: {service: meshproxy.test.Echo, method: Unary}}]
      backendRefs: [{name: echo-v1, port: 80}, {name: echo-v2, port: 80}]
"""
WEB = "web.test.svc.cluster.local:80"
ECHO = "echo.test.svc.cluster.local:80"
PARENT = {"parent_group": "core", "parent_kind": "Service", "parent_namespace": "test", "parent_port": "80",
          "parent_section_name": ""}
HTTP_ROUTE = {**PARENT, "parent_name": "web", "route_group": "gateway.networking.k8s.io", "route_kind": "HTTPRoute",
              "route_namespace": "test", "route_name": "web-split"}
GRPC_ROUTE = {**PARENT, "parent_name": "echo", "route_group": "gateway.networking.k8s.io", "route_kind": "GRPCRoute",
              "route_namespace": "test", "route_name": "echo-route"}
ROUTE_FAMILIES = ["request_duration_seconds", "request_statuses_total", "backend_requests_total",
                  "backend_response_duration_seconds", "backend_response_statuses_total",
                  "backend_response_frame_size_bytes", "retry_requests_total",
                  "retry_successes_total", "retry_overflow_total", "retry_limit_exceeded_total"]


def _backend(name: str) -> dict[str, str]:
    return {"backend_group": "core", "backend_kind": "Service", "backend_namespace": "test", "backend_name": name,
            "backend_port": "80", "backend_section_name": ""}


class Rig:
    def __init__(self, proxy: MeshProxy, v1: Backend, v2: Backend, g1: GrpcServer, g2: GrpcServer) -> None:
        self.proxy, self.v1, self.v2, self.g1, self.g2 = proxy, v1, v2, g1, g2


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("route-backends")
    v1, v2 = Backend("v1"), Backend("v2", fail_rate=1.0, fail_status=503)
    g1, g2 = GrpcServer(), GrpcServer()
    proxy = None
    try:
        backends = (("web-v1", f"127.0.0.1:{v1.port}", "http1"), ("web-v2", f"127.0.0.1:{v2.port}", "http1"),
                    ("web-gone", f"127.0.0.1:{free_port()}", "http1"),
                    ("echo-v1", g1.hostport, "h2"), ("echo-v2", g2.hostport, "h2"))
        proxy = start_route_proxy(tmp, "route-backends", POLICY, backends,
                                  {"MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE": "1000000"})
        yield Rig(proxy, v1, v2, g1, g2)
    finally:
        if proxy is not None:
            proxy.close()
        for server in (v1, v2):
            server.stop()
        g1.stop()
        g2.stop()


def _get(rig: Rig, n: int, headers: dict[str, str] | None = None) -> collections.Counter:
    got: collections.Counter = collections.Counter()
    conn = http.client.HTTPConnection(*rig.proxy.outbound, timeout=20)
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": WEB, **(headers or {})})
            resp = conn.getresponse()
            got[(resp.status, resp.read().decode())] += 1
    finally:
        conn.close()
    return got


def test_the_split_backends_count_what_each_backend_served(rig):
    before = (rig.v1.hits["GET"], rig.v2.hits["GET"])
    got = _get(rig, 120)
    served = (rig.v1.hits["GET"] - before[0], rig.v2.hits["GET"] - before[1])
    assert got == {(200, "v1"): served[0], (503, "v2"): served[1]}
    assert 60 <= served[0] <= 110, served  # weights 3:1
    m = rig.proxy.metrics()
    v1 = {**HTTP_ROUTE, **_backend("web-v1")}
    v2 = {**HTTP_ROUTE, **_backend("web-v2")}
    assert m.get("outbound_http_route_backend_requests_total", **v1) == rig.v1.hits["GET"]
    assert m.get("outbound_http_route_backend_requests_total", **v2) == rig.v2.hits["GET"]
    assert m.get("outbound_http_route_backend_response_statuses_total", **v1, http_status="200",
                 error="") == rig.v1.hits["GET"]
    assert m.get("outbound_http_route_backend_response_statuses_total", **v2, http_status="503",
                 error="") == rig.v2.hits["GET"]
    assert m.get("outbound_http_route_backend_response_duration_seconds_count", **v2) == rig.v2.hits["GET"]
    assert m.get("outbound_http_route_backend_response_duration_seconds_bucket", **v1,
                 le="+Inf") == rig.v1.hits["GET"]
    assert 0 < m.get("outbound_http_route_backend_response_duration_seconds_bucket", **v1, le="10.0")
    # The route's own families: no hostname on the backend ones, one on the route's.
    route = {**HTTP_ROUTE, "hostname": ""}
    total = rig.v1.hits["GET"] + rig.v2.hits["GET"]
    assert m.get("outbound_http_route_request_duration_seconds_count", **route) >= total
    assert all("hostname" not in labels
               for labels, _ in m.series("outbound_http_route_backend_requests_total"))


def test_a_backend_nobody_listens_on_counts_its_error(rig):
    got = _get(rig, 6, {"x-broken": "1"})
    assert sum(got.values()) == 6 and all(status in (502, 503) for status, _ in got), got
    m = rig.proxy.metrics()
    gone = {**HTTP_ROUTE, **_backend("web-gone")}
    assert m.get("outbound_http_route_backend_requests_total", **gone) == 6
    errors = m.series("outbound_http_route_backend_response_statuses_total", **gone)
    assert sum(value for _, value in errors) == 6, errors
    assert {labels["http_status"] for labels, _ in errors} == {""}
    assert {labels["error"] for labels, _ in errors} <= {"IO", "FAIL_FAST"}, errors


def test_grpcroute_calls_are_split_counted_by_grpc_status_and_retried_per_backend(rig):
    chan = channel(rig.proxy.outbound_hostport, authority=ECHO)
    calls = 40
    try:
        stub = EchoStub(chan)
        for i in range(calls):
            assert stub.unary(f"echo:{i}".encode(), timeout=10) == str(i).encode()
        failed = 0
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as info:
                stub.unary(b"fail:UNAVAILABLE:down", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            failed += 1
    finally:
        chan.close()
    unary = [sum(1 for c in server.calls if c["method"] == "Unary") for server in (rig.g1, rig.g2)]
    assert sum(unary) == calls + 2 * failed  # each failing call: its attempt and one retry
    assert all(n > 0 for n in unary), unary
    m = rig.proxy.metrics()
    route = {**GRPC_ROUTE, "hostname": ""}
    assert m.get("outbound_grpc_route_request_statuses_total", **route, grpc_status="OK", error="") == calls
    assert m.get("outbound_grpc_route_request_statuses_total", **route, grpc_status="UNAVAILABLE",
                 error="") == failed
    assert m.get("outbound_grpc_route_request_duration_seconds_count", **route) == calls + failed
    assert m.get("outbound_grpc_route_retry_requests_total", **route) == failed
    assert m.get("outbound_grpc_route_retry_limit_exceeded_total", **route) == failed
    for name, n in zip(("echo-v1", "echo-v2"), unary, strict=True):
        labels = {**GRPC_ROUTE, **_backend(name)}
        assert m.get("outbound_grpc_route_backend_requests_total", **labels) == n
        statuses = m.series("outbound_grpc_route_backend_response_statuses_total", **labels)
        assert sum(v for _, v in statuses) == n
        assert {labels["grpc_status"] for labels, _ in statuses} <= {"OK", "UNAVAILABLE"}
        assert m.get("outbound_grpc_route_backend_response_duration_seconds_count", **labels) == n
    # gRPC calls are no HTTPRoute's: nothing of them in the http families.
    assert not m.series("outbound_http_route_request_statuses_total", parent_name="echo")


def _family_names(text: str) -> list[str]:
    return [f.name + "_total" if f.type == "counter" else f.name for f in text_string_to_metric_families(text)]


def test_exposition_has_every_route_family_whole_and_promtool_accepts_it(rig):
    _get(rig, 4)
    _, _, body = rig.proxy.admin_request("GET", "/metrics")
    text = body.decode()
    names = _family_names(text)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    route_names = sorted(n for n in names if n.startswith(("outbound_http_route_", "outbound_grpc_route_")))
    assert route_names == sorted(f"outbound_{p}_route_{f}" for p in ("http", "grpc") for f in ROUTE_FAMILIES)
    for name in route_names:
        assert text.count(f"# HELP {name} ") == 1 and text.count(f"# TYPE {name} ") == 1, name
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./scripts/bootstrap.sh --test installs Debian's prometheus package"
    run = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    report = (run.stdout + run.stderr).decode()
    assert run.returncode in (0, 3), report
    for line in report.splitlines():
        # Lint findings are allowed only for Linkerd's own "_ms" names, never for the route families.
        assert "outbound_http_route" not in line and "outbound_grpc_route" not in line, line


def test_an_invalid_grpcroute_at_start_exits_64_naming_document_and_field(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text(POLICY.replace("retry.linkerd.io/grpc: unavailable", "retry.linkerd.io/http: 5xx"))
    result = run_once(env={"MESHPROXY_POLICY": str(bad)})
    assert result.returncode == EXIT_CONFIG
    err = result.stderr.decode()
    assert "document 1 (GRPCRoute echo-route)" in err and "retry.linkerd.io/http" in err, err
