"""URLRewrite, RequestMirror and failover documents: what they parse into, and every refusal naming its field."""

from __future__ import annotations

import pytest

from proxy.outbound.policy import UrlRewrite, replace_path
from proxy.policy.model import Failover, Mirror, PathMatch, RequestMatch, Rewrite, Route
from proxy.policy.parse import ParseError, parse


def _route(filters: str, matches: str = "[{path: {type: PathPrefix, value: /foo}}]", extra: str = "") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, name: web, port: 80}}]
  rules:
    - matches: {matches}
      filters: {filters}
{extra}"""


def _rules(text: str) -> tuple[Route, ...]:
    return parse(text).services["web.shop.svc.cluster.local:80"].gateway_routes


def test_url_rewrite_parses_hostname_and_both_path_kinds():
    (route,) = _rules(_route("[{type: URLRewrite, urlRewrite: {hostname: api.internal, "
                             "path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]"))
    assert route.rewrite == Rewrite("api.internal", "prefix", "/v2")
    (route,) = _rules(_route("[{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /x}}}]",
                             matches="[{path: {type: Exact, value: /a}}]"))
    assert route.rewrite == Rewrite(None, "full", "/x")
    (route,) = _rules(_route("[{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, "
                             "replacePrefixMatch: ''}}}]"))
    assert route.rewrite == Rewrite(None, "prefix", "")


# Gateway API's ReplacePrefixMatch examples: (path, prefix match, replacement, result).
PREFIX_TABLE = [
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz/"),
    ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"),
    ("/foo", "/foo", "", "/"),
    ("/foo/", "/foo", "/", "/"),
    ("/foo", "/foo", "/", "/"),
]


@pytest.mark.parametrize(("path", "prefix", "replacement", "want"), PREFIX_TABLE)
def test_replace_prefix_match_follows_the_gateway_api_table(path, prefix, replacement, want):
    route = Route("r", matches=(RequestMatch(path=PathMatch("prefix", prefix)),),
                  rewrite=Rewrite(None, "prefix", replacement))
    assert replace_path(route, "prefix", replacement, path) == want
    assert UrlRewrite(route).target(path.encode() + b"?q=1") == want.encode() + b"?q=1"


def test_the_longest_matching_prefix_of_the_rule_is_replaced():
    route = Route("r", matches=(RequestMatch(path=PathMatch("prefix", "/a")),
                                RequestMatch(path=PathMatch("prefix", "/a/b"))),
                  rewrite=Rewrite(None, "prefix", "/z"))
    assert UrlRewrite(route).target(b"/a/b/c") == b"/z/c"
    assert UrlRewrite(route).target(b"/a/c") == b"/z/c"
    assert UrlRewrite(route).target(b"*") == b"*"


def test_request_mirror_parses_percent_fraction_and_several_mirrors():
    (route,) = _rules(_route("[{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}, "
                             "percent: 25}}, {type: RequestMirror, requestMirror: {backendRef: {name: audit, "
                             "namespace: ops}, fraction: {numerator: 1, denominator: 3}}}]"))
    assert route.mirrors == (Mirror("shadow.shop.svc.cluster.local:8080", 0.25),
                             Mirror("audit.ops.svc.cluster.local", 1 / 3))
    (route,) = _rules(_route("[{type: RequestMirror, requestMirror: {backendRef: {name: s}}}]"))
    assert route.mirrors == (Mirror("s.shop.svc.cluster.local", 1.0),)


SPLIT = """
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: web
  namespace: shop
  annotations: {{failover.linkerd.io/primary-service: {primary}}}
  labels: {{app.kubernetes.io/managed-by: {manager}}}
spec:
  service: web
  backends:
    - {{service: web-east, weight: 0}}
    - {{service: web, weight: 1}}
    - {{service: web-west, weight: 0}}
"""


def test_a_traffic_split_managed_by_linkerd_failover_becomes_a_failover_group():
    policy = parse(SPLIT.format(primary="web", manager="linkerd-failover")).services["web.shop.svc.cluster.local"]
    assert policy.failover == Failover("web.shop.svc.cluster.local",
                                       ("web-east.shop.svc.cluster.local", "web-west.shop.svc.cluster.local"))
    # Without the operator's label the annotation is not acted on (the operator ignores the document too).
    policy = parse(SPLIT.format(primary="web", manager="helm")).services["web.shop.svc.cluster.local"]
    assert policy.failover is None


def test_an_httproute_managed_by_linkerd_failover_fails_over_its_rules_with_the_primary():
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
  annotations: {failover.linkerd.io/primary-service: web-main}
  labels: {app.kubernetes.io/managed-by: linkerd-failover}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /static}}]
      backendRefs: [{name: cdn, port: 80}]
    - backendRefs: [{name: web-main, port: 80, weight: 1}, {name: web-dr, port: 80, weight: 0}]
"""
    static, main = _rules(text)
    assert static.failover is None
    assert main.failover == Failover("web-main.shop.svc.cluster.local:80", ("web-dr.shop.svc.cluster.local:80",))


def test_compact_rewrite_mirror_and_failover():
    text = """
services:
  web.shop.svc.cluster.local:80:
    failover:
      primary: web-east.shop.svc.cluster.local:80
      secondaries: [web-west.shop.svc.cluster.local:80, web-dr.shop.svc.cluster.local:80]
      minSuccessRate: 0.9
      window: 30s
      minRequests: 50
    routes:
      - name: api
        match: {pathPrefix: /api}
        rewrite: {hostname: api.internal, pathPrefix: /v2}
        mirror: {authority: shadow.shop.svc.cluster.local:80, percent: 10}
"""
    policy = parse(text).services["web.shop.svc.cluster.local:80"]
    assert policy.failover == Failover("web-east.shop.svc.cluster.local:80",
                                       ("web-west.shop.svc.cluster.local:80", "web-dr.shop.svc.cluster.local:80"),
                                       0.9, 30.0, 50)
    (route,) = policy.ordered_routes
    assert route.rewrite == Rewrite("api.internal", "prefix", "/v2")
    assert route.mirrors == (Mirror("shadow.shop.svc.cluster.local:80", 0.1),)


BAD = [
    (_route("[{type: URLRewrite, urlRewrite: {}}]"), "spec.rules[0].filters[0].urlRewrite"),
    (_route("[{type: URLRewrite, urlRewrite: {hostname: 'a b'}}]"), "spec.rules[0].filters[0].urlRewrite.hostname"),
    (_route("[{type: URLRewrite, urlRewrite: {hostname: 'a:80'}}]"), "spec.rules[0].filters[0].urlRewrite.hostname"),
    (_route("[{type: URLRewrite, urlRewrite: {path: {type: Regex}}}]"),
     "spec.rules[0].filters[0].urlRewrite.path.type"),
    (_route("[{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: 'no-slash'}}}]"),
     "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath"),
    (_route("[{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /a, "
            "replacePrefixMatch: /b}}}]"), "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch"),
    (_route("[{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]",
            matches="[{path: {type: Exact, value: /a}}]"), "spec.rules[0].filters"),
    (_route("[{type: URLRewrite, urlRewrite: {hostname: a}}, {type: URLRewrite, urlRewrite: {hostname: b}}]"),
     "spec.rules[0].filters[1]"),
    (_route("[{type: URLRewrite, urlRewrite: {hostname: a}}, "
            "{type: RequestRedirect, requestRedirect: {hostname: b}}]"), "spec.rules[0].filters"),
    (_route("[{type: RequestMirror, requestMirror: {percent: 10}}]"),
     "spec.rules[0].filters[0].requestMirror.backendRef"),
    (_route("[{type: RequestMirror, requestMirror: {backendRef: {name: s}, percent: 101}}]"),
     "spec.rules[0].filters[0].requestMirror.percent"),
    (_route("[{type: RequestMirror, requestMirror: {backendRef: {name: s}, percent: 5, "
            "fraction: {numerator: 1}}}]"), "spec.rules[0].filters[0].requestMirror.fraction"),
    (_route("[{type: RequestMirror, requestMirror: {backendRef: {name: s}, fraction: {numerator: 3, "
            "denominator: 2}}}]"), "spec.rules[0].filters[0].requestMirror.fraction.numerator"),
    (_route("[{type: RequestMirror, requestMirror: {backendRef: {name: s}, fraction: {numerator: 1, "
            "denominator: 0}}}]"), "spec.rules[0].filters[0].requestMirror.fraction.denominator"),
    (_route("[{type: RequestMirror, requestMirror: {backendRef: {kind: Bucket, name: s}}}]"),
     "spec.rules[0].filters[0].requestMirror.backendRef.kind"),
    (_route("[{type: RequestMirror, requestMirror: {backendRef: {name: s, port: 0}}}]"),
     "spec.rules[0].filters[0].requestMirror.backendRef.port"),
    (SPLIT.format(primary="web-north", manager="linkerd-failover"),
     "metadata.annotations[failover.linkerd.io/primary-service]"),
    (SPLIT.replace("  annotations: {{failover.linkerd.io/primary-service: {primary}}}\n", "")
     .format(manager="linkerd-failover"), "metadata.annotations[failover.linkerd.io/primary-service]"),
    (_route("[]", extra="") .replace("metadata: {name: r, namespace: shop}",
                                     "metadata: {name: r, namespace: shop, labels: {app.kubernetes.io/managed-by: "
                                     "linkerd-failover}, annotations: {failover.linkerd.io/primary-service: nope}}"),
     "metadata.annotations[failover.linkerd.io/primary-service]"),
    ("services: {web:80: {failover: {primary: a}}}", "services.web:80.failover.secondaries"),
    ("services: {web:80: {failover: {primary: a, secondaries: [a]}}}", "services.web:80.failover.secondaries"),
    ("services: {web:80: {failover: {primary: a, secondaries: [b], minSuccessRate: 1.5}}}",
     "services.web:80.failover.minSuccessRate"),
    ("services: {web:80: {failover: {primary: a, secondaries: [b], window: 0s}}}", "services.web:80.failover.window"),
    ("services: {web:80: {failover: {primary: a, secondaries: [b]}, backends: [{authority: a}]}}",
     "services.web:80.failover"),
    ("services: {web:80: {failover: {primary: a, secondaries: [b], bogus: 1}}}", "services.web:80.failover.bogus"),
    ("services: {web:80: {routes: [{name: r, match: {path: /a}, rewrite: {pathPrefix: /b}}]}}",
     "services.web:80.routes[0].rewrite.pathPrefix"),
    ("services: {web:80: {routes: [{name: r, rewrite: {path: /a, pathPrefix: /b}}]}}",
     "services.web:80.routes[0].rewrite.pathPrefix"),
    ("services: {web:80: {routes: [{name: r, mirror: {percent: 5}}]}}", "services.web:80.routes[0].mirror.authority"),
    ("services: {web:80: {routes: [{name: r, mirror: [{authority: m, percent: -1}]}]}}",
     "services.web:80.routes[0].mirror[0].percent"),
]


@pytest.mark.parametrize(("text", "field"), BAD)
def test_invalid_documents_are_refused_naming_the_document_and_field(text, field):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith("document 0 (")
