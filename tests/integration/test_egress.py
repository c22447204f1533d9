"""Egress control with real iptables interception: Linkerd's EgressNetwork and the HTTPRoute, TLSRoute and
TCPRoute attached to it, judged on the original destination of connections an app makes.

Everything runs in a network namespace the test creates (loopback only, with
"external" addresses 203.0.113.0/24 and 198.51.100.0/24 added to it): nat
rules send the app's connections to those networks to the proxy's outbound
listener, as iptables-init does in a pod, and the proxy (its own group,
exempted) connects to the real servers there. Needs root, as CI has.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from helpers.h2client import H2Client
from helpers.netns import NetNs, NsMeshProxy
from helpers.servers import SilentServer, TcpEchoServer
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(120)

API_IP = "203.0.113.10"  # "the internet": the Deny network, with routes
OTHER_IP = "203.0.113.20"
PARTNER_IP = "198.51.100.5"  # an Allow network
CARVED_IP = "198.51.100.200"  # in the partner network's except: back to "the internet"
HTTP_PORT, H2_PORT, TLS_PORT, TCP_PORT, OTHER_TCP_PORT = 18080, 18081, 18443, 6379, 11211  # opaque ports
DEAD_TCP_PORT = 5432  # opaque too; a TCPRoute allows it, nothing listens there

NETWORKS = """
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {name: internet, namespace: app}
spec:
  trafficPolicy: TRAFFIC
---
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {name: partner, namespace: app}
spec:
  trafficPolicy: Allow
  networks: [{cidr: 198.51.100.0/24, except: [198.51.100.128/25]}]
"""
ROUTES = f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api-get, namespace: app}}
spec:
  parentRefs: [{{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: {HTTP_PORT}}}]
  hostnames: [api.example.com]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /allowed}}}}]
      backendRefs: [{{kind: EgressNetwork, group: policy.linkerd.io, name: internet}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: h2-api, namespace: app}}
spec:
  parentRefs: [{{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: {H2_PORT}}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /allowed}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-api, namespace: app}}
spec:
  parentRefs: [{{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: {H2_PORT}}}]
  rules: [{{matches: [{{method: {{service: pkg.Svc, method: Allowed}}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: secure, namespace: app}}
spec:
  parentRefs: [{{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: {TLS_PORT}}}]
  hostnames: [secure.example.com]
  rules: [{{backendRefs: [{{kind: EgressNetwork, group: policy.linkerd.io, name: internet}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: cache, namespace: app}}
spec:
  parentRefs: [{{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: {TCP_PORT}}}]
  rules: [{{backendRefs: [{{kind: EgressNetwork, group: policy.linkerd.io, name: internet}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: gone, namespace: app}}
spec:
  parentRefs: [{{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: {DEAD_TCP_PORT}}}]
  rules: [{{backendRefs: [{{kind: EgressNetwork, group: policy.linkerd.io, name: internet}}]}}]
"""


def _policy(traffic: str) -> str:
    return NETWORKS.replace("TRAFFIC", traffic) + ROUTES


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = NetNs("mpe").create()
        self.stoppers: list = []
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(_policy("Deny"))

    def start(self) -> None:
        for ip in (API_IP, OTHER_IP, PARTNER_IP, CARVED_IP):
            self.ns.run("ip", "addr", "add", f"{ip}/32", "dev", "lo")
        with self.ns:
            self.api = HttpUpstream(host=API_IP, port=HTTP_PORT, name="api")
            self.partner = HttpUpstream(host=PARTNER_IP, port=HTTP_PORT, name="partner")
            self.carved = HttpUpstream(host=CARVED_IP, port=HTTP_PORT, name="carved")
            from helpers.h2server import H2Origin

            self.h2 = H2Origin(host=API_IP, port=H2_PORT, name="h2-api")
            self.tls = SilentServer(host=API_IP, port=TLS_PORT, name="tls-api")
            self.cache = TcpEchoServer(host=API_IP, port=TCP_PORT, name="cache")
            self.other_cache = TcpEchoServer(host=OTHER_IP, port=OTHER_TCP_PORT, name="other-cache")
            self.stoppers += [s.stop for s in (self.api, self.partner, self.carved, self.h2, self.tls, self.cache,
                                               self.other_cache)]
            self.proxy = NsMeshProxy(self.ns, env={"MESHPROXY_POLICY": str(self.policy)}, name="egress",
                                     log_path=self.tmp / "proxy.log")
            self.proxy.start()
        self.ns.exempt_proxies()
        for net in ("203.0.113.0/24", "198.51.100.0/24"):
            self.ns.redirect(net, self.proxy.outbound[1])

    def connect(self, ip: str, port: int) -> socket.socket:
        with self.ns:
            return socket.create_connection((ip, port), timeout=10)

    def get(self, ip: str, path: str, host: str, conn: http.client.HTTPConnection | None = None):
        if conn is None:
            with self.ns:
                conn = http.client.HTTPConnection(ip, HTTP_PORT, timeout=10)
                conn.connect()
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp

    def stop(self) -> None:
        if hasattr(self, "proxy"):
            self.proxy.close()
        for stop in self.stoppers:
            stop()
        self.ns.delete()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("egress"))
    try:
        w.start()
        yield w
    finally:
        w.stop()


def _closed(sock: socket.socket) -> bool:
    """The proxy closed (or reset) the connection without relaying a byte."""
    sock.settimeout(10)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def _wait_metric(world, name: str, value: float, **labels: str) -> float:
    """``name``'s value once it reaches ``value`` (a closed connection is counted when the proxy sees it end)."""
    deadline = time.monotonic() + 10
    while (got := world.proxy.metrics().get(name, **labels)) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def _client_hello(sni: str) -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_http_route_admits_its_requests_and_the_deny_policy_refuses_the_rest(world):
    ok = world.get(API_IP, "/allowed/thing", "api.example.com")
    assert ok.status == 200
    assert any(b" /allowed/thing " in r.head.raw for r in world.api.requests)
    for path, host in (("/other", "api.example.com"), ("/allowed/thing", "elsewhere.example.com")):
        denied = world.get(API_IP, path, host)
        assert denied.status == 403, (path, host)
        assert denied.getheader("l5d-proxy-error") == "traffic not allowed"
    assert not any(b" /other " in r.head.raw for r in world.api.requests)
    assert world.proxy.wait_line(lambda line: "traffic not allowed" in line and "EgressDenied" in line, timeout=5)
    m = world.proxy.metrics()
    parent = {"parent_group": "policy.linkerd.io", "parent_kind": "EgressNetwork", "parent_namespace": "app",
              "parent_name": "internet", "parent_port": str(HTTP_PORT)}
    assert m.get("outbound_http_route_request_statuses_total", **parent, route_kind="HTTPRoute",
                 route_name="api-get", hostname="api.example.com", http_status="200") == 1
    assert m.get("outbound_http_route_request_statuses_total", **parent, route_kind="default",
                 route_name="http-egress-deny", hostname="elsewhere.example.com", http_status="403") == 1
    # The route's backend: the original destination, as Linkerd names it; a denied request reaches none.
    backend = {**parent, "parent_section_name": "", "route_kind": "HTTPRoute", "route_name": "api-get",
               "backend_group": "policy.linkerd.io", "backend_kind": "EgressNetwork", "backend_namespace": "app",
               "backend_name": "internet", "backend_port": str(HTTP_PORT), "backend_section_name": ""}
    assert m.get("outbound_http_route_backend_requests_total", **backend) == 1
    assert m.get("outbound_http_route_backend_response_statuses_total", **backend, http_status="200") == 1
    assert m.get("outbound_http_route_backend_response_duration_seconds_count", **backend) == 1
    assert not m.series("outbound_http_route_backend_requests_total", route_name="http-egress-deny")


def test_networks_most_specific_first_and_except_falls_back(world):
    assert world.get(PARTNER_IP, "/anything", "partner.example.com").status == 200  # the Allow network
    carved = world.get(CARVED_IP, "/anything", "partner.example.com")
    assert carved.status == 403  # excluded from partner: the catch-all internet network denies it
    assert not world.carved.requests
    m = world.proxy.metrics()
    assert m.get("outbound_http_route_request_statuses_total", parent_name="partner",
                 route_name="http-egress-allow", hostname="partner.example.com", http_status="200") == 1


def test_http2_requests_are_judged_the_same(world):
    with _h2(world) as client:
        assert client.exchange("GET", "/allowed/x", authority="api.example.com").status == 200
        denied = client.exchange("GET", "/nope", authority="api.example.com")
        assert denied.status == 403 and denied.header("l5d-proxy-error") == "traffic not allowed"
        grpc = client.exchange("POST", "/pkg.Svc/Call", authority="api.example.com",
                               headers=[("content-type", "application/grpc"), ("te", "trailers")], body=b"")
        assert grpc.status == 200 and grpc.header("grpc-status") == "7"  # PERMISSION_DENIED, trailers-only
        assert denied.header("l5d-proxy-error") == grpc.header("l5d-proxy-error")
        client.exchange("POST", "/pkg.Svc/Allowed", authority="api.example.com",
                        headers=[("content-type", "application/grpc"), ("te", "trailers")], body=b"")
    assert [r.path for r in world.h2.requests] == ["/allowed/x", "/pkg.Svc/Allowed"]
    m = world.proxy.metrics()
    # A GRPCRoute's calls are its gRPC families', as for a Service parent.
    assert m.get("outbound_grpc_route_request_statuses_total", route_kind="GRPCRoute", route_name="grpc-api",
                 hostname="api.example.com") == 1
    assert m.get("outbound_grpc_route_backend_requests_total", parent_kind="EgressNetwork", route_name="grpc-api",
                 backend_kind="EgressNetwork", backend_port=str(H2_PORT)) == 1
    assert not m.series("outbound_http_route_request_statuses_total", route_kind="GRPCRoute")


def _h2(world) -> H2Client:
    with world.ns:
        return H2Client((API_IP, H2_PORT))


def test_tls_routes_match_the_sni_and_other_names_are_closed(world):
    sock = world.connect(API_IP, TLS_PORT)
    hello = _client_hello("secure.example.com")
    sock.sendall(hello)
    assert world.tls.wait_for(lambda: hello in world.tls.received(), 10), "the allowed ClientHello never arrived"
    sock.close()
    accepted = world.tls.accept_count
    sock = world.connect(API_IP, TLS_PORT)
    sock.sendall(_client_hello("evil.example.com"))
    assert _closed(sock), "a denied TLS connection must be closed"
    assert world.proxy.wait_line(lambda line: "refused by policy" in line and "SNI evil.example.com" in line
                                 and "EgressNetwork app/internet" in line, timeout=5)
    assert world.tls.accept_count == accepted
    m = world.proxy.metrics()
    assert m.get("outbound_tls_route_open_total", parent_name="internet", route_kind="TLSRoute",
                 route_name="secure", hostname="secure.example.com") == 1
    assert m.get("outbound_tls_route_open_total", route_name="tls-egress-deny", hostname="evil.example.com") == 1
    # Closed: the allowed one when the client hung up, the denied one at once, as forbidden (Linkerd's labels).
    secure = {"parent_name": "internet", "route_kind": "TLSRoute", "route_name": "secure",
              "hostname": "secure.example.com"}
    assert _wait_metric(world, "outbound_tls_route_close_total", 1, **secure, error="") == 1
    assert m.get("outbound_tls_route_close_total", route_name="tls-egress-deny", hostname="evil.example.com",
                 error="forbidden") == 1
    # Every error Linkerd counts has its series, from the route's first connection on.
    closes = {labels["error"]: value for labels, value in
              world.proxy.metrics().series("outbound_tls_route_close_total", **secure)}
    assert closes == {"": 1, "forbidden": 0, "invalid_backend": 0, "invalid_policy": 0, "unexpected": 0}


def test_tcp_routes_forward_and_unrouted_destinations_are_closed(world):
    sock = world.connect(API_IP, TCP_PORT)
    sock.sendall(b"PING\r\n")
    assert sock.recv(100) == b"PING\r\n"
    sock.close()
    sock = world.connect(OTHER_IP, OTHER_TCP_PORT)  # no TCPRoute for this port
    sock.sendall(b"PING\r\n")
    assert _closed(sock)
    assert world.other_cache.accept_count == 0
    m = world.proxy.metrics()
    assert m.get("outbound_tcp_route_open_total", route_kind="TCPRoute", route_name="cache") == 1
    assert m.get("outbound_tcp_route_open_total", route_name="tcp-egress-deny") == 1
    assert _wait_metric(world, "outbound_tcp_route_close_total", 1, route_name="cache", error="") == 1
    m = world.proxy.metrics()
    assert m.get("outbound_tcp_route_close_total", route_name="cache") == 1  # every other error: 0
    assert m.get("outbound_tcp_route_close_total", route_name="tcp-egress-deny", error="forbidden") == 1
    assert m.get("outbound_tcp_route_close_total", route_name="tcp-egress-deny") == 1


def test_a_tcp_route_whose_backend_cannot_be_reached_closes_unexpected(world):
    sock = world.connect(API_IP, DEAD_TCP_PORT)  # routed by the "gone" TCPRoute; the connect is refused
    sock.sendall(b"PING\r\n")
    assert _closed(sock)
    assert world.proxy.wait_line(lambda line: "opaque connection failed" in line, timeout=5)
    route = {"parent_name": "internet", "route_kind": "TCPRoute", "route_name": "gone"}
    assert _wait_metric(world, "outbound_tcp_route_close_total", 1, **route, error="unexpected") == 1
    m = world.proxy.metrics()
    assert m.get("outbound_tcp_route_open_total", **route) == 1
    assert m.get("outbound_tcp_route_close_total", **route) == 1


def test_the_route_connection_families_parse_and_pass_promtool(world):
    from prometheus_client.parser import text_string_to_metric_families

    _, _, body = world.proxy.admin_request("GET", "/metrics")
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in ("tls", "tcp"):
        for kind in ("open", "close"):
            found = families[f"outbound_{family}_route_{kind}"]  # prometheus_client drops a counter's _total
            assert found.type == "counter" and found.samples, found
            assert text.count(f"# TYPE outbound_{family}_route_{kind}_total counter") == 1
        closes = families[f"outbound_{family}_route_close"].samples
        assert {s.labels["error"] for s in closes} == {"", "forbidden", "invalid_backend", "invalid_policy",
                                                        "unexpected"}
        assert all(s.labels["parent_kind"] == "EgressNetwork" for s in closes)
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./scripts/bootstrap.sh --test installs Debian's prometheus package"
    run = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    report = (run.stdout + run.stderr).decode()
    assert run.returncode in (0, 3), report  # 3: lint findings, none of them about these families
    assert "route_open" not in report and "route_close" not in report, report


def test_a_reload_changes_the_traffic_policy_without_dropping_connections(world):
    with world.ns:
        conn = http.client.HTTPConnection(API_IP, HTTP_PORT, timeout=10)
        conn.connect()
    assert world.get(API_IP, "/other", "api.example.com", conn).status == 403
    reloads = world.proxy.metrics().get("policy_reload_total", result="ok")
    world.policy.write_text(_policy("Allow"))
    deadline = time.monotonic() + 10
    while world.proxy.metrics().get("policy_reload_total", result="ok") <= reloads:
        assert time.monotonic() < deadline, "the policy was not reloaded"
        time.sleep(0.1)
    try:
        # The same client connection, now allowed.
        assert world.get(API_IP, "/other", "api.example.com", conn).status == 200
        assert world.get(OTHER_IP, "/x", "other.example.com").status in (200, 502)  # allowed: reached or refused
    finally:
        conn.close()
        world.policy.write_text(_policy("Deny"))
