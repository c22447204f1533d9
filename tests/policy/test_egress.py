"""Egress documents: EgressNetwork and the routes attached to it, read unchanged; every invalid field named;
and the network choice of outbound/egress.py (most specific CIDR, except, outside the cluster networks)."""

from __future__ import annotations

import pytest

from proxy.outbound.egress import EgressPolicy, _host_rank
from proxy.outbound.policy import Registry
from proxy.policy.authz_model import Network
from proxy.policy.egress_model import EgressNetwork
from proxy.policy.model import Backend, PathMatch
from proxy.policy.parse import ParseError, parse

NETWORK = """
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {name: internet, namespace: app}
spec:
  trafficPolicy: Deny
  networks: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]
"""
HTTP = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: app}
spec:
  parentRefs: [{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: 80}]
  hostnames: [api.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /get}}]
      backendRefs: [{kind: EgressNetwork, group: policy.linkerd.io, name: internet}]
    - matches: [{path: {type: PathPrefix, value: /mirror}}]
      backendRefs: [{kind: Service, name: local-api, port: 8080}]
"""
GRPC = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: app}
spec:
  parentRefs: [{name: internet, kind: EgressNetwork, group: policy.linkerd.io}]
  rules: [{matches: [{method: {service: echo.Echo, method: Unary}}]}]
"""
TLS = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: tls, namespace: app}
spec:
  parentRefs: [{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: 443}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{kind: EgressNetwork, group: policy.linkerd.io, name: internet}]}]
"""
TCP = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: app}
spec:
  parentRefs: [{name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: 5432}]
  rules: [{backendRefs: [{kind: Service, name: pg, port: 5432}]}]
"""
ALL = "---".join((NETWORK, HTTP, GRPC, TLS, TCP))


def test_documents_are_read_unchanged_and_attached_to_their_network():
    (net,) = parse(ALL).egress
    assert (net.name, net.namespace, net.traffic_policy) == ("internet", "app", "Deny")
    assert net.networks == (Network("0.0.0.0/0", ("10.0.0.0/8",)),)
    http, grpc, tls, tcp = net.routes
    assert (http.kind, http.port, http.hostnames) == ("HTTPRoute", 80, ("api.example.com",))
    assert http.rules[0].backends == ()  # the EgressNetwork itself: the original destination
    assert http.rules[1].backends == (Backend("local-api.app.svc.cluster.local:8080"),)
    assert grpc.rules[0].matches[0].path == PathMatch("exact", "/echo.Echo/Unary")
    assert (tls.kind, tls.hostnames, tls.rules[0].backends) == ("TLSRoute", ("secure.example.com",), ())
    assert tcp.rules[0].backends == (Backend("pg.app.svc.cluster.local:5432"),)


def test_a_network_without_networks_means_outside_the_cluster():
    (net,) = parse(NETWORK.replace("  networks: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]\n", "")).egress
    assert net.networks is None and net.routes == ()


@pytest.mark.parametrize(("doc", "old", "new", "field", "why"), [
    (NETWORK, "trafficPolicy: Deny", "trafficPolicy: deny", "spec.trafficPolicy", "Allow or Deny"),
    (NETWORK, "  trafficPolicy: Deny\n", "", "spec.trafficPolicy", "Allow or Deny"),
    (NETWORK, "cidr: 0.0.0.0/0", "cidr: 0.0.0.0/33", "spec.networks[0].cidr", "bad CIDR"),
    (NETWORK, "except: [10.0.0.0/8]", "except: [fd00::/8]", "spec.networks[0].except[0]", "not inside"),
    (NETWORK, "networks:", "network:", "spec.network", "unknown field"),
    (HTTP, "group: policy.linkerd.io, port: 80", "group: core, port: 80", "spec.parentRefs[0].group",
     "policy.linkerd.io"),
    (HTTP, "name: internet, kind: EgressNetwork, group: policy.linkerd.io, port: 80",
     "name: nowhere, kind: EgressNetwork, group: policy.linkerd.io, port: 80", "spec.parentRefs[0].name",
     "no EgressNetwork app/nowhere"),
    (HTTP, "port: 80}", "port: 0}", "spec.parentRefs[0].port", "integer"),
    (HTTP, "[api.example.com]", "['api example']", "spec.hostnames[0]", "not a host name"),
    (HTTP, "{kind: EgressNetwork, group: policy.linkerd.io, name: internet}",
     "{kind: EgressNetwork, group: policy.linkerd.io, name: other}", "spec.rules[0].backendRefs[0].name",
     "must be the route's parent"),
    (HTTP, "{kind: EgressNetwork, group: policy.linkerd.io, name: internet}",
     "{kind: EgressNetwork, group: policy.linkerd.io, name: internet}, {kind: Service, name: x}",
     "spec.rules[0].backendRefs[0]", "not both"),
    (HTTP, "value: /get", "value: get", "spec.rules[0].matches[0].path.value", "must start with /"),
    (GRPC, "service: echo.Echo, method: Unary", "type: Prefix, service: echo.Echo",
     "spec.rules[0].matches[0].method.type", "Exact or RegularExpression"),
    (GRPC, "service: echo.Echo, method: Unary", "service: 'echo Echo'", "spec.rules[0].matches[0].method.service",
     "not a gRPC name"),
    (GRPC, "{service: echo.Echo, method: Unary}", "{}", "spec.rules[0].matches[0].method", "give service"),
    (TLS, "  hostnames: [secure.example.com]\n", "", "spec.hostnames", "required"),
    (TLS, "rules: [{backendRefs", "rules: [{}, {backendRefs", "spec.rules", "exactly one rule"),
    (TCP, "rules: [{backendRefs: [{kind: Service, name: pg, port: 5432}]}]", "rules: [{}]",
     "spec.rules[0].backendRefs", "required"),
    (TCP, "{kind: Service, name: pg, port: 5432}", "{kind: Service, name: pg}", "spec.rules[0].backendRefs[0].port",
     "required"),
    (TCP, "{kind: Service, name: pg, port: 5432}", "{kind: Pod, name: pg, port: 5432}",
     "spec.rules[0].backendRefs[0].kind", "EgressNetwork or Service"),
    (TCP, "group: policy.linkerd.io, port: 5432}]\n  rules", "group: policy.linkerd.io, sectionName: a}]\n  rules",
     "spec.parentRefs[0].sectionName", "no sections"),
])
def test_invalid_fields_are_named(doc, old, new, field, why):
    assert old in doc
    bad = doc.replace(old, new)
    text = bad if doc is NETWORK else NETWORK + "---" + bad
    with pytest.raises(ParseError) as info:
        parse(text)
    err = info.value
    assert (err.index, err.field) == (0 if doc is NETWORK else 1, field), str(err)
    assert err.kind == (bad.split("kind: ", 1)[1].split("\n", 1)[0])
    assert why in err.why, str(err)


def test_a_route_with_egress_and_service_parents_is_refused():
    mixed = HTTP.replace("parentRefs: [", "parentRefs: [{name: web, kind: Service, port: 80}, ")
    with pytest.raises(ParseError, match=r"spec.parentRefs\[0\].kind: a route with an EgressNetwork parent"):
        parse(NETWORK + "---" + mixed)


def test_two_networks_of_one_name_are_refused():
    with pytest.raises(ParseError, match="already defined"):
        parse(NETWORK + "---" + NETWORK)


def _policy(*networks: EgressNetwork) -> EgressPolicy:
    policy = EgressPolicy(("10.0.0.0/8", "fd00::/8"), Registry(100), 1, 1024)
    policy.update(networks)
    return policy


def test_the_most_specific_network_holds_an_address():
    outside = EgressNetwork("outside", "a", "Deny")
    wide = EgressNetwork("wide", "a", "Allow", (Network("203.0.0.0/8", ("203.0.113.128/25",)),))
    narrow = EgressNetwork("narrow", "a", "Allow", (Network("203.0.113.0/24"),))
    policy = _policy(outside, wide, narrow)
    assert policy.network("203.0.113.5") is narrow
    assert policy.network("203.1.2.3") is wide
    assert policy.network("203.0.113.200") is narrow  # excluded from wide, still in narrow
    assert policy.network("198.51.100.1") is outside  # outside the cluster networks
    assert policy.network("10.1.2.3") is None  # in the cluster: not egress
    assert policy.network("2001:db8::1") is outside and policy.network("fd00::1") is None
    assert policy.network("not-an-ip") is None


def test_hostname_precedence():
    assert _host_rank(("api.example.com",), "api.example.com") == 0
    wildcard = _host_rank(("*.example.com",), "api.example.com")
    assert wildcard is not None and 0 < wildcard < _host_rank((), "api.example.com")
    assert _host_rank(("*.example.com",), "example.com") is None
    assert _host_rank(("other.example.com",), "api.example.com") is None


def test_egress_routes_count_their_backends_with_linkerds_labels():
    from types import SimpleNamespace

    from prometheus_client.parser import text_string_to_metric_families

    from proxy.telemetry.metrics import render_linkerd_routes

    registry = Registry(100)
    policy = EgressPolicy(("10.0.0.0/8",), registry, 1, 1024)
    policy.update(parse(ALL).egress)
    runtime = policy.http(SimpleNamespace(host="203.0.113.5", port=80))
    assert runtime is not None
    picked = []
    for method, path, host in (("GET", "/get/1", "api.example.com"), ("GET", "/get/2", "api.example.com"),
                               ("GET", "/mirror", "api.example.com"), ("POST", "/echo.Echo/Unary", "x.example")):
        conn = SimpleNamespace(backend=None, rp=None, headers=())
        rp = runtime.match(SimpleNamespace(method=method.encode(), target=path.encode(), host=host.encode()), conn)
        picked.append((runtime.backend_for(rp, conn), conn.backend, rp.stats))
    (first, b1, _), (second, b2, _), (service, b3, _), (grpc_dst, b4, grpc_route) = picked
    assert first == second == grpc_dst == ("203.0.113.5", 80) and b1 is b2 and b1.requests == 2
    assert service == ("local-api.app.svc.cluster.local", 8080) and b3.requests == 1
    assert b4.grpc and grpc_route.grpc and not b1.grpc
    out: list[str] = []
    render_linkerd_routes(out, registry.stats.values(), registry.backends.values())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families("\n".join(out) + "\n") for s in f.samples}
    parent = {"parent_group": "policy.linkerd.io", "parent_kind": "EgressNetwork", "parent_namespace": "app",
              "parent_name": "internet", "parent_port": "80", "parent_section_name": ""}
    original = {"backend_group": "policy.linkerd.io", "backend_kind": "EgressNetwork", "backend_namespace": "app",
                "backend_name": "internet", "backend_port": "80", "backend_section_name": ""}
    api = {**parent, "route_group": "gateway.networking.k8s.io", "route_kind": "HTTPRoute",
           "route_namespace": "app", "route_name": "api"}
    local = {"backend_group": "core", "backend_kind": "Service", "backend_namespace": "app",
             "backend_name": "local-api", "backend_port": "8080", "backend_section_name": ""}
    grpc = {**api, "route_kind": "GRPCRoute", "route_name": "grpc"}

    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert sample("outbound_http_route_backend_requests_total", **api, **original) == 2
    assert sample("outbound_http_route_backend_requests_total", **api, **local) == 1
    assert sample("outbound_grpc_route_backend_requests_total", **grpc, **original) == 1
    assert not any(name.startswith("outbound_http_route") and dict(labels).get("route_kind") == "GRPCRoute"
                   for name, labels in samples)
