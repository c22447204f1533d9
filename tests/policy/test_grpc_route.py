"""GRPCRoute with Service parents (proxy/policy/_grpc_route.py): read as outbound routes, matched as gRPC calls."""

from __future__ import annotations

import pytest

from proxy.policy.model import GRPC_CODES, HeaderModifier
from proxy.policy.parse import ParseError, parse
from proxy.policy.routes import RouteTable

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo-route
  namespace: test
  annotations:
    retry.linkerd.io/grpc: unavailable,internal
    retry.linkerd.io/limit: "2"
    retry.linkerd.io/timeout: 300ms
    timeout.linkerd.io/request: 2s
    timeout.linkerd.io/idle: 10s
spec:
  parentRefs: [{group: core, kind: Service, name: echo, port: 8080}]
  hostnames: [echo.test]
  rules:
    - matches: [{method: {service: pkg.Echo, method: Unary}, headers: [{name: x-canary, value: "1"}]}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-route, value: canary}]}
      backendRefs: [{name: echo-v2, port: 8080}]
    - matches: [{method: {service: pkg.Echo}}]
      backendRefs: [{name: echo-v1, port: 8080, weight: 90}, {name: echo-v2, port: 8080, weight: 10}]
    - matches: [{method: {type: RegularExpression, method: "Health.*"}}]
"""
SERVICE = "echo.test.svc.cluster.local:8080"


def _table():
    policy = parse(ROUTE).services[SERVICE]
    return policy, RouteTable(policy)


def test_rules_become_routes_with_linkerds_annotations():
    policy, _ = _table()
    canary, split, health = policy.gateway_routes
    assert canary.source == "GRPCRoute/test/echo-route" and canary.group == "gateway.networking.k8s.io"
    assert [b.authority for b in split.backends] == ["echo-v1.test.svc.cluster.local:8080",
                                                     "echo-v2.test.svc.cluster.local:8080"]
    assert [b.weight for b in split.backends] == [90.0, 10.0]
    assert canary.request_header_modifier == HeaderModifier(set=(("x-route", "canary"),))
    assert health.backends == ()  # the parent Service itself
    for route in (canary, split, health):
        assert (route.timeout, route.idle_timeout) == (2.0, 10.0)
        assert route.retry is not None and route.is_retryable
        assert route.retry.grpc_codes == {GRPC_CODES["unavailable"], GRPC_CODES["internal"]}
        assert (route.retry.limit, route.retry.timeout, route.retry.http_statuses) == (2, 0.3, ())


@pytest.mark.parametrize(("path", "headers", "want"), [
    (b"/pkg.Echo/Unary", [(b"x-canary", b"1")], 0),
    (b"/pkg.Echo/Unary", [], 1),  # no header: the service-wide rule
    (b"/pkg.Echo/Stream", [(b"x-canary", b"1")], 1),
    (b"/grpc.health.v1.Health/HealthCheck", [], 2),
    (b"/pkg.Echoes/Unary", [], None),  # a service name is matched whole, not as a prefix
    (b"/other.Svc/Unary", [], None),
])
def test_calls_match_by_service_method_and_headers(path, headers, want):
    policy, table = _table()
    route = table.match(b"POST", path, headers)
    assert (None if route is None else policy.gateway_routes.index(route)) == want


def test_a_get_is_no_grpc_call():
    _, table = _table()
    assert table.match(b"GET", b"/pkg.Echo/Unary", []) is None


def test_grpcroute_wins_over_an_httproute_on_the_same_parent():
    http = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-http, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: echo, port: 8080}]
  rules: [{backendRefs: [{name: other, port: 8080}]}]
"""
    policy_set = parse(ROUTE + "---" + http)
    policy = policy_set.services[SERVICE]
    assert {r.source for r in policy.gateway_routes} == {"GRPCRoute/test/echo-route"}
    assert any("HTTPRoute/test/echo-http ignored because GRPCRoutes" in w for w in policy_set.warnings)


def test_non_service_parents_are_reported_and_a_route_without_one_refused():
    mixed = ROUTE.replace("parentRefs: [", "parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, "
                                           "name: gw}, ")
    assert any("GRPCRoute/test/echo-route: non-Service parents ignored: Gateway/gw" in w
               for w in parse(mixed).warnings)
    none = ROUTE.replace("parentRefs: [{group: core, kind: Service, name: echo, port: 8080}]",
                         "parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]")
    with pytest.raises(ParseError, match=r"GRPCRoute echo-route\): spec.parentRefs: no Service parent"):
        parse(none)


@pytest.mark.parametrize(("old", "new", "field", "why"), [
    ("retry.linkerd.io/grpc: unavailable,internal", "retry.linkerd.io/http: 5xx",
     "metadata.annotations[retry.linkerd.io/http]", "not valid on a GRPCRoute"),
    ("retry.linkerd.io/grpc: unavailable,internal", "retry.linkerd.io/grpc: sometimes",
     "metadata.annotations[retry.linkerd.io/grpc]", "unknown gRPC status code"),
    ("timeout.linkerd.io/request: 2s", "timeout.linkerd.io/request: soon",
     "metadata.annotations[timeout.linkerd.io/request]", "expected a duration"),
    ("{method: {service: pkg.Echo}}", "{method: {service: 'pkg Echo'}}",
     "spec.rules[1].matches[0].method.service", "is not a gRPC name"),
    ("{method: {service: pkg.Echo}}", "{method: {type: Prefix, service: pkg.Echo}}",
     "spec.rules[1].matches[0].method.type", "expected Exact or RegularExpression"),
    ("{method: {service: pkg.Echo}}", "{method: {}}", "spec.rules[1].matches[0].method", "give service, method"),
    ('method: "Health.*"', 'method: "Health(("', "spec.rules[2].matches[0].method.method",
     "invalid regular expression"),
    ("{method: {service: pkg.Echo}}", "{path: {value: /x}}", "spec.rules[1].matches[0].path", "unknown field"),
    ("type: RequestHeaderModifier", "type: URLRewrite", "spec.rules[0].filters[0].type",
     "not supported on a GRPCRoute"),
    ("{name: echo-v2, port: 8080}]\n    - matches", "{name: echo-v2, port: 8080, kind: Pod}]\n    - matches",
     "spec.rules[0].backendRefs[0].kind", "only Service backends"),
    ("weight: 90}", "weight: -1}", "spec.rules[1].backendRefs[0].weight", "expected an integer"),
    ("      backendRefs: [{name: echo-v2, port: 8080}]\n",
     "      backendRefs: [{name: echo-v2, port: 8080}]\n      timeouts: {request: 1s}\n",
     "spec.rules[0].timeouts", "unknown field"),
])
def test_invalid_documents_are_refused_naming_document_and_field(old, new, field, why):
    assert old in ROUTE
    with pytest.raises(ParseError) as info:
        parse(ROUTE.replace(old, new, 1))
    err = info.value
    assert (err.index, err.kind, err.name) == (0, "GRPCRoute", "echo-route")
    assert err.field == field and why in err.why, str(err)
    assert str(err).startswith("document 0 (GRPCRoute echo-route): " + field)


def test_an_egress_grpcroute_is_still_an_egress_route():
    egress = """
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {name: internet, namespace: app}
spec: {trafficPolicy: Allow}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: app}
spec:
  parentRefs: [{name: internet, kind: EgressNetwork, group: policy.linkerd.io}]
  rules: [{matches: [{method: {service: echo.Echo, method: Unary}}]}]
"""
    policy_set = parse(egress)
    assert policy_set.services == {}
    (net,) = policy_set.egress
    assert [r.kind for r in net.routes] == ["GRPCRoute"]
