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


# ---- GRPCRoute with a Server parent: inbound routes for route-level authorization ----

INBOUND = """
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: echo-grpc, namespace: test}
spec: {podSelector: {}, port: 9090, proxyProtocol: gRPC}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-unary, namespace: test}
spec:
  parentRefs: [{name: echo-grpc, kind: Server, group: policy.linkerd.io}]
  rules: [{matches: [{method: {service: pkg.Echo, method: Unary}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-health, namespace: test}
spec:
  parentRefs: [{name: echo-grpc, kind: Server, group: policy.linkerd.io}]
  rules: [{matches: [{method: {service: grpc.health.v1.Health}}]}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: unary-from-web, namespace: test}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-unary}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: web}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: health-from-anyone, namespace: test}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-health}
  requiredAuthenticationRefs: []
"""
WEB = "web.test.serviceaccount.identity.cluster.local"


def _inbound_port(text: str = INBOUND):
    from proxy.policy.authz import InboundPolicy

    return InboundPolicy.build(parse(text).authz, "deny", ("10.0.0.0/8",), ()).port(9090)


def test_a_grpcroute_on_a_gRPC_server_authorizes_calls_by_service_and_method():
    from proxy.policy.authz import REASON_NO_ROUTE, REASON_UNAUTHORIZED, Client

    port = _inbound_port()
    (server,) = parse(INBOUND).authz.servers
    assert [(r.kind, r.name, r.source) for r in server.routes] == [
        ("GRPCRoute", "echo-unary", "GRPCRoute/test/echo-unary"),
        ("GRPCRoute", "echo-health", "GRPCRoute/test/echo-health")]
    web, stranger = Client("10.1.2.3", WEB, True), Client("10.1.2.4", None, False)
    unary = port.check_request(web, "POST", "/pkg.Echo/Unary", lambda name: None)
    assert unary.allowed
    labels = dict(unary.labels)
    assert (labels["route_group"], labels["route_kind"], labels["route_name"]) == (
        "gateway.networking.k8s.io", "GRPCRoute", "echo-unary")
    assert (labels["authz_kind"], labels["authz_name"]) == ("authorizationpolicy", "unary-from-web")
    denied = port.check_request(stranger, "POST", "/pkg.Echo/Unary", lambda name: None)
    assert not denied.allowed and denied.reason.startswith(REASON_UNAUTHORIZED)
    assert dict(denied.labels)["route_name"] == "echo-unary"
    health = port.check_request(stranger, "POST", "/grpc.health.v1.Health/Check", lambda name: None)
    assert health.allowed and dict(health.labels)["route_name"] == "echo-health"
    other = port.check_request(web, "POST", "/pkg.Echo/Stream", lambda name: None)
    assert not other.allowed and other.reason.startswith(REASON_NO_ROUTE) and "GRPCRoute" in other.reason


def test_a_server_uses_the_route_kind_its_protocol_calls_for_as_linkerd_does():
    both = INBOUND + """
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: echo-http, namespace: test}
spec:
  parentRefs: [{name: echo-grpc, kind: Server, group: policy.linkerd.io}]
  rules: [{matches: [{path: {type: PathPrefix, value: /}}]}]
"""
    policy_set = parse(both)
    (server,) = policy_set.authz.servers
    assert {r.kind for r in server.routes} == {"GRPCRoute"}
    assert any("Server/test/echo-grpc: its HTTPRoutes are unused" in w for w in policy_set.warnings)
    http = parse(INBOUND.replace("proxyProtocol: gRPC", "proxyProtocol: HTTP/2"))
    assert http.authz.servers[0].routes == ()
    assert any("its GRPCRoutes are unused" in w for w in http.warnings)


def test_a_grpcroute_with_server_and_service_parents_is_both_inbound_and_outbound():
    text = INBOUND.replace("parentRefs: [{name: echo-grpc, kind: Server, group: policy.linkerd.io}]\n"
                           "  rules: [{matches: [{method: {service: pkg.Echo, method: Unary}}]}]",
                           "parentRefs: [{name: echo-grpc, kind: Server, group: policy.linkerd.io},"
                           " {group: core, kind: Service, name: echo, port: 8080}]\n"
                           "  rules: [{matches: [{method: {service: pkg.Echo, method: Unary}}]}]", 1)
    policy_set = parse(text)
    assert "echo-unary" in {r.name for r in policy_set.authz.servers[0].routes}
    (route,) = policy_set.services[SERVICE].gateway_routes
    assert route.source == "GRPCRoute/test/echo-unary"


@pytest.mark.parametrize(("old", "new", "index", "kind", "name", "field", "why"), [
    ("{name: echo-grpc, kind: Server, group: policy.linkerd.io}]\n  rules: [{matches: [{method: {service: pkg.Echo",
     "{name: echo-grpc, kind: Server, group: policy.linkerd.io, port: 9090}]\n  rules: [{matches: [{method: "
     "{service: pkg.Echo", 1, "GRPCRoute", "echo-unary", "spec.parentRefs[0].port", "not used with a Server parent"),
    ("{name: echo-grpc, kind: Server, group: policy.linkerd.io}]\n  rules: [{matches: [{method: {service: grpc",
     "{name: echo-grpc, kind: Server, group: gateway.networking.k8s.io}]\n  rules: [{matches: [{method: "
     "{service: grpc", 2, "GRPCRoute", "echo-health", "spec.parentRefs[0].group", "policy.linkerd.io"),
    ("{method: {service: pkg.Echo, method: Unary}}", "{method: {service: 'pkg Echo', method: Unary}}",
     1, "GRPCRoute", "echo-unary", "spec.rules[0].matches[0].method.service", "is not a gRPC name"),
    ("rules: [{matches: [{method: {service: pkg.Echo, method: Unary}}]}]",
     "rules: [{matches: [{method: {service: pkg.Echo, method: Unary}}], timeouts: {request: 1s}}]",
     1, "GRPCRoute", "echo-unary", "spec.rules[0].timeouts", "unknown field"),
    ("rules: [{matches: [{method: {service: pkg.Echo, method: Unary}}]}]",
     "rules: [{matches: [{method: {service: pkg.Echo, method: Unary}}], backendRefs: [{name: echo, port: 80}]}]",
     1, "GRPCRoute", "echo-unary", "spec.rules[0].backendRefs", "need a Service parent"),
    ("{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-unary}",
     "{group: policy.linkerd.io, kind: GRPCRoute, name: echo-unary}",
     3, "AuthorizationPolicy", "unary-from-web", "spec.targetRef.group", "GRPCRoute is in group"),
    ("{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-unary}",
     "{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-nope}",
     3, "AuthorizationPolicy", "unary-from-web", "spec.targetRef.name", "is not in this policy file"),
    ("{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-unary}",
     "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-unary}",
     3, "AuthorizationPolicy", "unary-from-web", "spec.targetRef.name", "HTTPRoute test/echo-unary is not in"),
])
def test_invalid_inbound_grpcroutes_are_refused_naming_document_and_field(old, new, index, kind, name, field, why):
    assert old in INBOUND
    with pytest.raises(ParseError) as info:
        parse(INBOUND.replace(old, new, 1))
    err = info.value
    assert (err.index, err.kind, err.name, err.field) == (index, kind, name, field), str(err)
    assert why in err.why, str(err)


def test_an_authorization_policy_on_an_outbound_grpcroute_is_refused():
    text = ROUTE + "---\n" + INBOUND.split("---\n", 3)[3].split("---\n")[0].replace("echo-unary", "echo-route")
    with pytest.raises(ParseError, match=r"GRPCRoute test/echo-route has no Server parent"):
        parse(text)
