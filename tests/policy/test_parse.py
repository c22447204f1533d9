"""Parsing policy files: Linkerd documents as found in clusters, the compact format, merging, errors."""

from __future__ import annotations

import pytest

from proxy.policy.parse import ParseError, parse
from proxy.policy.routes import match

PROFILE = """
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.shop.svc.cluster.local
  namespace: shop
spec:
  routes:
  - name: GET /books/{id}
    condition:
      method: GET
      pathRegex: /books/[^/]*
    isRetryable: true
    timeout: 300ms
    responseClasses:
    - condition:
        status: {min: 500, max: 599}
      isFailure: true
  - name: POST /books
    condition:
      all:
      - method: POST
      - pathRegex: /books
      - not: {method: GET}
  retryBudget:
    retryRatio: 0.3
    minRetriesPerSecond: 5
    ttl: 15s
  dstOverrides:
  - authority: books-v1.shop.svc.cluster.local:80
    weight: 500m
"""

SPLIT_V1ALPHA1 = """
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: books-split, namespace: shop}
spec:
  service: books
  backends:
  - service: books-v1
    weight: 900m
  - service: books-v2
    weight: 100m
"""

SPLIT_V1ALPHA2 = """
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: authors-split, namespace: shop}
spec:
  service: authors
  backends:
  - {service: authors-v1, weight: 90}
  - {service: authors-v2, weight: 10}
"""

HTTPROUTE_LINKERD = """
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata:
  name: authors-route
  namespace: shop
  creationTimestamp: "2024-05-01T10:00:00Z"
  annotations:
    retry.linkerd.io/http: 5xx,429
    retry.linkerd.io/limit: "3"
    retry.linkerd.io/timeout: 200ms
    timeout.linkerd.io/request: 5s
    timeout.linkerd.io/response: 1s
spec:
  parentRefs:
  - {group: core, kind: Service, name: authors, port: 7001}
  rules:
  - matches:
    - path: {type: Exact, value: /authors/top}
      method: GET
    timeouts: {request: 2s, backendRequest: 500ms}
  - matches:
    - path: {type: PathPrefix, value: /authors}
      headers:
      - {name: x-canary, value: "true"}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-routed, value: canary}]
        remove: [x-debug]
    backendRefs:
    - {name: authors-v2, port: 7001, weight: 1}
"""

HTTPROUTE_GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web}
  rules:
  - matches:
    - path: {type: RegularExpression, value: '/items/[0-9]+'}
      queryParams: [{name: view, value: full}]
    backendRefs:
    - {name: web-v1, port: 80, weight: 90}
    - {name: web-v2, port: 80, weight: 10}
  - backendRefs:
    - {name: web, port: 80}
"""

COMPACT = """
services:
  pay.shop.svc.cluster.local:8080:
    retryBudget: {retryRatio: 0.1, minRetriesPerSecond: 2, ttl: 5s}
    failureAccrual: {consecutiveFailures: 3, minBackoff: 500ms, maxBackoff: 30s}
    backends:
      - {authority: pay-v1.shop.svc.cluster.local:8080, weight: 3}
      - {authority: pay-v2.shop.svc.cluster.local:8080, weight: 1}
    routes:
      - name: charge
        match: {method: POST, path: /charge}
        timeout: 2s
        backendTimeout: 1m30s
        retry: {http: gateway-error, grpc: [unavailable, 4], limit: 2, timeout: 300ms}
        responseClasses:
          - {status: 500-599, isFailure: true}
          - {grpc: [UNAVAILABLE], isFailure: true}
      - name: canary
        match:
          - {pathPrefix: /v2, headers: {x-canary: 1}}
          - {pathRegex: '/beta/.*', headerRegex: {x-user: 'qa-.*'}}
        isRetryable: true
        backends: [{authority: pay-v2.shop.svc.cluster.local:8080}]
"""


def test_service_profile():
    ps = parse(PROFILE)
    p = ps.get("books.shop.svc.cluster.local:80")  # port falls back to the profile's name
    assert p is not None and p.authority == "books.shop.svc.cluster.local"
    get = match(p, b"GET", b"/books/12")
    assert (get.name, get.timeout, get.is_retryable) == ("GET /books/{id}", 0.3, True)
    assert (get.response_classes[0].status_min, get.response_classes[0].is_failure) == (500, True)
    assert match(p, b"POST", b"/books").name == "POST /books"
    assert match(p, b"DELETE", b"/books") is None
    assert (p.retry_budget.retry_ratio, p.retry_budget.min_retries_per_second, p.retry_budget.ttl) == (0.3, 5, 15.0)
    assert p.backends[0].weight == 0.5


def test_traffic_split_both_versions_and_precedence_over_dst_overrides():
    ps = parse("---\n".join([PROFILE, SPLIT_V1ALPHA1, SPLIT_V1ALPHA2]))
    books = ps.get("books.shop.svc.cluster.local")
    assert [(b.authority, b.weight) for b in books.backends] == [
        ("books-v1.shop.svc.cluster.local", 0.9), ("books-v2.shop.svc.cluster.local", 0.1)]
    assert books.ordered_routes  # the profile's routes are kept
    authors = ps.get("authors.shop.svc.cluster.local")
    assert [b.weight for b in authors.backends] == [90.0, 10.0]


def test_linkerd_httproute_with_annotations_and_filter():
    ps = parse(HTTPROUTE_LINKERD + "---\n" + SPLIT_V1ALPHA2)
    p = ps.get("authors.shop.svc.cluster.local:7001")
    assert p.authority == "authors.shop.svc.cluster.local:7001"
    top = match(p, b"GET", b"/authors/top")
    assert (top.timeout, top.backend_timeout) == (2.0, 0.5)          # rule timeouts beat annotations
    assert top.retry.limit == 3 and top.retry.http_statuses == ((500, 599), (429, 429))
    assert top.retry.timeout == 0.2 and top.is_retryable
    canary = match(p, b"GET", b"/authors/9", [(b"x-canary", b"true")])
    assert (canary.timeout, canary.backend_timeout) == (5.0, 1.0)    # from the annotations
    assert canary.backends[0].authority == "authors-v2.shop.svc.cluster.local:7001"
    assert canary.request_header_modifier.set == (("x-routed", "canary"),)
    assert canary.request_header_modifier.remove == ("x-debug",)
    assert match(p, b"GET", b"/authors/9") is None
    # The port-qualified service inherits the TrafficSplit of the plain name.
    assert [b.weight for b in p.backends] == [90.0, 10.0]


def test_gateway_api_httproute():
    p = parse(HTTPROUTE_GATEWAY).get("web.shop.svc.cluster.local")
    items = match(p, b"GET", b"/items/42?view=full")
    assert [b.weight for b in items.backends] == [90.0, 10.0]
    assert match(p, b"GET", b"/items/42").backends[0].authority == "web.shop.svc.cluster.local:80"
    assert match(p, b"GET", b"/items/x?view=full").name == "shop/web-route#1"


def test_compact_format():
    ps = parse(COMPACT)
    p = ps.get("pay.shop.svc.cluster.local:8080")
    assert (p.retry_budget.retry_ratio, p.retry_budget.ttl) == (0.1, 5.0)
    assert (p.failure_accrual.consecutive_failures, p.failure_accrual.min_backoff) == (3, 0.5)
    charge = match(p, b"POST", b"/charge")
    assert (charge.timeout, charge.backend_timeout) == (2.0, 90.0)
    assert charge.retry.http_statuses == ((502, 504),) and charge.retry.grpc_codes == {14, 4}
    assert charge.response_classes[1].grpc_codes == {14}
    assert match(p, b"GET", b"/v2/x", [(b"x-canary", b"1")]).name == "canary"
    assert match(p, b"GET", b"/beta/x", [(b"x-user", b"qa-7")]).name == "canary"
    assert match(p, b"GET", b"/beta/x", [(b"x-user", b"bob")]) is None


def test_profile_shadows_httproutes_with_a_warning():
    route = HTTPROUTE_GATEWAY.replace("name: web}", "name: books}")
    ps = parse(PROFILE + "---\n" + route)
    p = ps.get("books.shop.svc.cluster.local")
    assert p.gateway_routes and match(p, b"GET", b"/items/1?view=full") is None
    assert any("HTTPRoutes ignored" in w for w in ps.warnings)


def test_empty_documents_and_defaults():
    assert parse("").services == {}
    p = parse("---\n---\nservices: {a.b.svc.cluster.local: {}}\n").get("a.b.svc.cluster.local")
    assert p.retry_budget.retry_ratio == 0.2 and p.retry_budget.min_retries_per_second == 10
    assert p.retry_budget.ttl == 10.0 and p.backends == () and p.failure_accrual is None


def fails(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(text)
    return info.value


BAD = [
    # (document text, index, kind, name, field)
    ("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: d}\n", 0, "Deployment", "d", "kind"),
    ("apiVersion: linkerd.io/v9\nkind: ServiceProfile\nmetadata: {name: x}\nspec: {}\n", 0, "ServiceProfile", "x",
     "apiVersion"),
    ("foo: 1\n", 0, "", "", "kind"),
    ("- a\n", 0, "", "", ""),
    (PROFILE.replace("pathRegex: /books/[^/]*", "pathRegex: '/books/['"), 0, "ServiceProfile",
     "books.shop.svc.cluster.local", "spec.routes[0].condition.pathRegex"),
    (PROFILE.replace("timeout: 300ms", "timeout: soon"), 0, "ServiceProfile",
     "books.shop.svc.cluster.local", "spec.routes[0].timeout"),
    (PROFILE.replace("isRetryable: true", "isRetryable: yes-please"), 0, "ServiceProfile",
     "books.shop.svc.cluster.local", "spec.routes[0].isRetryable"),
    (PROFILE.replace("min: 500", "min: 700"), 0, "ServiceProfile",
     "books.shop.svc.cluster.local", "spec.routes[0].responseClasses[0].condition.status.min"),
    (PROFILE.replace("retryRatio: 0.3", "retryRatio: -1"), 0, "ServiceProfile",
     "books.shop.svc.cluster.local", "spec.retryBudget.retryRatio"),
    (PROFILE.replace("ttl: 15s", "ttl: 0s"), 0, "ServiceProfile", "books.shop.svc.cluster.local",
     "spec.retryBudget.ttl"),
    (PROFILE.replace("    condition:\n      all:", "    conditoin:\n      all:"), 0, "ServiceProfile",
     "books.shop.svc.cluster.local", "spec.routes[1].conditoin"),
    (PROFILE.replace("- not: {method: GET}", "- not: {}"), 0, "ServiceProfile",
     "books.shop.svc.cluster.local", "spec.routes[1].condition.all[2].not"),
    (SPLIT_V1ALPHA1.replace("900m", "lots"), 0, "TrafficSplit", "books-split", "spec.backends[0].weight"),
    (SPLIT_V1ALPHA2.replace("weight: 90", "weight: 90m"), 0, "TrafficSplit", "authors-split",
     "spec.backends[0].weight"),
    (SPLIT_V1ALPHA2 + "  matches: [{kind: HTTPRouteGroup, name: g}]\n", 0, "TrafficSplit", "authors-split",
     "spec.matches"),
    (HTTPROUTE_LINKERD.replace("type: Exact", "type: Glob"), 0, "HTTPRoute", "authors-route",
     "spec.rules[0].matches[0].path.type"),
    (HTTPROUTE_LINKERD.replace("type: RequestHeaderModifier", "type: ExtensionRef"), 0, "HTTPRoute",
     "authors-route", "spec.rules[1].filters[0].type"),
    (HTTPROUTE_LINKERD.replace("set: [{name: x-routed,", "set: [{name: Content-Length,"), 0, "HTTPRoute",
     "authors-route", "spec.rules[1].filters[0].requestHeaderModifier.set[0].name"),
    (HTTPROUTE_LINKERD.replace("remove: [x-debug]", "remove: [x-debug, Transfer-Encoding]"), 0, "HTTPRoute",
     "authors-route", "spec.rules[1].filters[0].requestHeaderModifier.remove[1]"),
    (HTTPROUTE_LINKERD.replace("set: [{name: x-routed,", "set: [{name: 'x routed',"), 0, "HTTPRoute",
     "authors-route", "spec.rules[1].filters[0].requestHeaderModifier.set[0].name"),
    (HTTPROUTE_LINKERD.replace("value: canary}", "value: \"a\\r\\nx-injected: 1\"}"), 0, "HTTPRoute",
     "authors-route", "spec.rules[1].filters[0].requestHeaderModifier.set[0].value"),
    (HTTPROUTE_LINKERD.replace("value: canary}]", "value: a}, {name: X-Routed, value: b}]"), 0, "HTTPRoute",
     "authors-route", "spec.rules[1].filters[0].requestHeaderModifier.set[1].name"),
    (HTTPROUTE_LINKERD.replace("        remove: [x-debug]\n", "        remove: [x-debug]\n"
                               "    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}}\n"),
     0, "HTTPRoute", "authors-route", "spec.rules[1].filters[1]"),
    (HTTPROUTE_LINKERD.replace("        remove: [x-debug]\n", "        remove: [x-debug]\n"
                               "    - {type: ResponseHeaderModifier, "
                               "responseHeaderModifier: {remove: [Connection]}}\n"),
     0, "HTTPRoute", "authors-route", "spec.rules[1].filters[1].responseHeaderModifier.remove[0]"),
    (HTTPROUTE_LINKERD.replace("retry.linkerd.io/http: 5xx,429", "retry.linkerd.io/http: 6xx"), 0, "HTTPRoute",
     "authors-route", "metadata.annotations[retry.linkerd.io/http]"),
    (HTTPROUTE_LINKERD.replace('retry.linkerd.io/limit: "3"', 'retry.linkerd.io/limit: "many"'), 0, "HTTPRoute",
     "authors-route", "metadata.annotations[retry.linkerd.io/limit]"),
    (HTTPROUTE_LINKERD.replace("timeout.linkerd.io/response", "timeout.linkerd.io/responce"), 0, "HTTPRoute",
     "authors-route", "metadata.annotations[timeout.linkerd.io/responce]"),
    (HTTPROUTE_LINKERD.replace("backendRequest: 500ms", "backendRequest: 5s"), 0, "HTTPRoute", "authors-route",
     "spec.rules[0].timeouts.backendRequest"),
    (HTTPROUTE_LINKERD.replace("{group: core, kind: Service, name: authors, port: 7001}",
                               "{group: policy.linkerd.io, kind: Server, name: authors-http}"),
     0, "HTTPRoute", "authors-route", "spec.parentRefs"),
    (HTTPROUTE_GATEWAY.replace("port: 80, weight: 90", "port: 80, weight: -1"), 0, "HTTPRoute", "web-route",
     "spec.rules[0].backendRefs[0].weight"),
    (HTTPROUTE_GATEWAY.replace("queryParams: [{name: view, value: full}]", "queryParams: [{value: full}]"),
     0, "HTTPRoute", "web-route", "spec.rules[0].matches[0].queryParams[0].name"),
    (COMPACT.replace("method: POST, path: /charge", "path: /charge, pathPrefix: /c"), 0, "", "",
     "services.pay.shop.svc.cluster.local:8080.routes[0].match"),
    (COMPACT.replace("grpc: [UNAVAILABLE]", "grpc: [SOMETIMES]"), 0, "", "",
     "services.pay.shop.svc.cluster.local:8080.routes[0].responseClasses[1].grpc[0]"),
    (COMPACT.replace("retryBudget:", "retryBudgit:"), 0, "", "",
     "services.pay.shop.svc.cluster.local:8080.retryBudgit"),
    (COMPACT.replace("weight: 3", "weight: heavy"), 0, "", "",
     "services.pay.shop.svc.cluster.local:8080.backends[0].weight"),
]


@pytest.mark.parametrize("text,index,kind,name,field", BAD, ids=[b[4] or "root" for b in BAD])
def test_invalid_documents_name_document_and_field(text, index, kind, name, field):
    err = fails(text)
    assert (err.index, err.kind, err.name, err.field) == (index, kind, name, field)
    assert f"document {index}" in str(err) and field in str(err)


def test_error_names_the_right_document_in_a_stream():
    err = fails(PROFILE + "---\n" + SPLIT_V1ALPHA2.replace("service: authors\n", "service: 7\n"))
    assert (err.index, err.kind, err.name, err.field) == (1, "TrafficSplit", "authors-split", "spec.service")


def test_duplicates_of_the_same_rank_are_rejected():
    err = fails(PROFILE + "---\n" + PROFILE)
    assert err.index == 1 and err.field == "metadata.name" and "already has a ServiceProfile" in str(err)
    err = fails(SPLIT_V1ALPHA1 + "---\n" + SPLIT_V1ALPHA1)
    assert err.index == 1 and "TrafficSplit" in str(err)


def test_yaml_syntax_error():
    assert "not valid YAML" in str(fails("a: [1,\n"))


def test_idle_timeouts_from_the_compact_format_and_linkerd_annotations():
    p = parse("services:\n  web.shop:80:\n    routes:\n"
              "      - {name: r, match: {pathPrefix: /}, idleTimeout: 1500ms}\n")
    assert match(p.get("web.shop:80"), b"GET", b"/x").idle_timeout == 1.5
    annotated = HTTPROUTE_LINKERD.replace("timeout.linkerd.io/response", "timeout.linkerd.io/idle")
    top = match(parse(annotated).get("authors.shop.svc.cluster.local:7001"), b"GET", b"/authors/top")
    assert top.idle_timeout == 1.0


REDIRECT_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moves, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
"""


@pytest.mark.parametrize("old,new,field", [
    ("scheme: https", "scheme: ftp", "requestRedirect.scheme"),
    ("statusCode: 301", "statusCode: 305", "requestRedirect.statusCode"),
    ("replacePrefixMatch: /new", "replacePrefixMatch: 'new path'", "requestRedirect.path.replacePrefixMatch"),
    ("{type: PathPrefix, value: /old}", "{type: Exact, value: /old}", "spec.rules[0].filters"),
    ("statusCode: 301}\n", "statusCode: 301}\n      backendRefs: [{name: web, port: 80}]\n",
     "spec.rules[0].backendRefs"),
])
def test_invalid_redirects_name_the_field(old, new, field):
    assert REDIRECT_ROUTE.count(old) == 1
    err = fails(REDIRECT_ROUTE.replace(old, new))
    assert err.field.endswith(field), err


def test_redirect_is_parsed():
    route = match(parse(REDIRECT_ROUTE).get("web.shop.svc.cluster.local:80"), b"GET", b"/old/x")
    assert route.redirect is not None
    assert (route.redirect.scheme, route.redirect.path_kind, route.redirect.path, route.redirect.status) == (
        "https", "prefix", "/new", 301)
