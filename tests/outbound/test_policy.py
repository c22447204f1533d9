"""Tests of proxy/outbound/policy.py: service lookup, route choice, backend choice, classification tables, labels."""

import collections
import random

from proxy.core.addr import Target
from proxy.outbound.policy import OTHER, OutboundPolicy
from proxy.policy.parse import parse

POLICY = """
services:
  web.shop.svc.cluster.local:80:
    retryBudget: {retryRatio: 0.5, minRetriesPerSecond: 1, ttl: 2s}
    backends:
      - {authority: web-v1.shop.svc.cluster.local, weight: 3}
      - {authority: web-v2.shop.svc.cluster.local:8080, weight: 1}
    routes:
      - name: get
        match: {method: GET}
        isRetryable: true
        timeout: 2s
        backendTimeout: 500ms
      - name: canary
        match: {method: POST, headers: {x-canary: "1"}}
        backends: [{authority: web-v2.shop.svc.cluster.local:8080}]
      - name: annotated
        match: {method: PUT}
        retry: {http: 502-503, limit: 2, timeout: 100ms}
"""


class Head:
    def __init__(self, method=b"GET", target=b"/", headers=()):
        self.method, self.target, self._headers = method, target, list(headers)

    def header_list(self):
        return self._headers


def _policy(text=POLICY, **kwargs):
    args = {"retry_limit": 3, "replay_limit": 65536, "route_label_limit": 100, **kwargs}
    return OutboundPolicy(parse(text), **args)


def test_lookup_by_full_name_short_forms_and_cache():
    policy = _policy()
    full = policy.lookup(Target("web.shop.svc.cluster.local", 80))
    assert full is not None
    assert policy.lookup(Target("web.shop", 80)) is not None
    assert policy.lookup(Target("web.shop.svc", 80)) is not None
    assert policy.lookup(Target("web.shop", 81)) is None
    assert policy.lookup(Target("other.shop", 80)) is None
    assert policy.lookup(Target("web.shop.svc.cluster.local", 80)) is full  # cached


def test_routes_match_first_wins_with_headers_and_default():
    svc = _policy().lookup(Target("web.shop", 80))
    assert svc.match(Head(b"GET"), None).route.name == "get"
    assert svc.match(Head(b"POST", headers=[(b"X-Canary", b"1")]), None).route.name == "canary"
    assert svc.match(Head(b"POST"), None).route.name == "default"
    assert svc.match(Head(b"GET", b"http://web.shop/x?y=1"), None).route.name == "get"


def test_route_settings_become_relay_fields():
    svc = _policy().lookup(Target("web.shop", 80))
    get = svc.match(Head(b"GET"), None)
    assert (get.timeout, get.attempt_timeout, get.limit) == (2.0, 0.5, 3)
    assert get.retry_status[503] and get.retry_status[500] and not get.retry_status[404]
    assert get.failure_status[500] and not get.failure_status[200]
    put = svc.match(Head(b"PUT"), None)
    assert (put.attempt_timeout, put.limit) == (0.1, 2)
    assert put.retry_status[502] and put.retry_status[503] and not put.retry_status[500]
    default = svc.match(Head(b"DELETE"), None)
    assert default.limit == 0 and not any(default.retry_status)
    assert (default.timeout, default.attempt_timeout) == (0.0, 0.0)


def test_grpc_statuses_classify_through_the_route():
    svc = _policy("""
services:
  grpc.test:80:
    routes:
      - name: calls
        match: {pathPrefix: /pkg.Svc}
        retry: {grpc: [unavailable], limit: 1}
        responseClasses: [{grpc: [unavailable, internal], isFailure: true}]
""").lookup(Target("grpc.test", 80))
    rp = svc.match(Head(b"POST", b"/pkg.Svc/Call"), None)
    assert rp.failed(200, 13) and rp.failed(200, 14) and not rp.failed(200, 0)
    assert rp.retry_on(200, 14) and not rp.retry_on(200, 13)


def test_split_weights_and_route_backends():
    svc = _policy().lookup(Target("web.shop", 80))
    svc.random = random.Random(7).random
    get = svc.match(Head(b"GET"), None)
    counts = collections.Counter(svc.backend_for(get) for _ in range(4000))
    # A backend named without a port takes the port the service was addressed on.
    assert set(counts) == {("web-v1.shop.svc.cluster.local", 80), ("web-v2.shop.svc.cluster.local", 8080)}
    # 3:1 -> 0.75; sd = sqrt(0.75 * 0.25 / 4000) = 0.0068; 5 sd of tolerance.
    assert abs(counts[("web-v1.shop.svc.cluster.local", 80)] / 4000 - 0.75) < 0.035
    canary = svc.match(Head(b"POST", headers=[(b"x-canary", b"1")]), None)
    assert {svc.backend_for(canary) for _ in range(50)} == {("web-v2.shop.svc.cluster.local", 8080)}
    assert svc.backend_for_connection() in counts


def test_budget_and_counters_survive_an_update_and_labels_are_bounded():
    policy = _policy(route_label_limit=2)
    svc = policy.lookup(Target("web.shop", 80))
    get = svc.match(Head(b"GET"), None)
    get.stats.requests += 5
    # Three routes plus the default: two get their own labels, the rest share "other".
    labels = {(rp.stats.dst, rp.stats.route) for rp in (*svc.routes.values(), svc.default)}
    assert (OTHER, OTHER) in labels and len(labels) == 3
    policy.update(parse(POLICY))
    again = policy.lookup(Target("web.shop", 80))
    assert again is not svc
    new_get = again.match(Head(b"GET"), None)
    assert new_get.stats is get.stats and new_get.stats.requests == 5
    assert new_get.budget is get.budget


def test_budget_caps_withdrawals():
    svc = _policy().lookup(Target("web.shop", 80))
    rp = svc.match(Head(b"GET"), None)
    # 0.5 ratio, 1/s x 2 s reserve, no requests: two retries, then none.
    assert [rp.withdraw() for _ in range(3)] == [True, True, False]


REDIRECTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moves, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web, port: 8080}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
    - matches: [{path: {type: PathPrefix, value: /gone}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /home},
                                                          statusCode: 301}}]
    - matches: [{path: {type: PathPrefix, value: /secure}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: secure.example.com}}]
    - matches: [{path: {type: PathPrefix, value: /elsewhere}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: other.shop, port: 80}}]
"""


def _location(target: bytes, host: bytes | None = b"web.shop:8080") -> str:
    from proxy.outbound.policy import _request_path, redirect_location
    from proxy.policy.routes import match

    route = match(parse(REDIRECTS).get("web.shop.svc.cluster.local:8080"), b"GET", _request_path(target))
    return redirect_location(route, target, host, Target("web.shop", 8080))


def test_redirect_locations_follow_the_gateway_api_rules():
    assert _location(b"/old/a/b?x=1") == "http://web.shop:8080/new/a/b?x=1"  # prefix replaced, query kept
    assert _location(b"/old") == "http://web.shop:8080/new"
    assert _location(b"/gone/deep?q") == "http://web.shop:8080/home?q"  # the whole path
    assert _location(b"/secure/x") == "https://secure.example.com/secure/x"  # a new scheme: its own port
    assert _location(b"/elsewhere") == "http://other.shop/elsewhere"  # port 80 is http's: not written
    assert _location(b"/old/x", host=None) == "http://web.shop:8080/new/x"  # no Host: the logical name
    assert _location(b"http://web.shop:8080/old/y") == "http://web.shop:8080/new/y"  # absolute form


class _Conn:
    backend = None


def test_each_pick_hands_the_exchange_its_backends_counters():
    svc = _policy().lookup(Target("web.shop", 80))
    svc.random = random.Random(3).random
    get = svc.match(Head(b"GET"), None)
    picked = collections.Counter()
    for _ in range(200):
        conn = _Conn()
        address = svc.backend_for(get, conn)
        picked[address] += 1
        assert conn.backend is dict(get.concretes)[address]
    for address, backend in get.concretes:
        assert backend.requests == picked[address]
        assert backend.labels.startswith('parent_group="core",parent_kind="Service",parent_namespace="shop",'
                                         'parent_name="web",parent_port="80",parent_section_name="",'
                                         'route_group="",route_kind="compact",route_namespace="",route_name="get",')
        assert f'backend_name="{address[0].split(".")[0]}",backend_port="{address[1]}"' in backend.labels
        assert "hostname" not in backend.labels


def test_a_service_profiles_routes_and_routes_past_the_label_limit_count_no_backend():
    profiled = """
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes: [{name: get, condition: {method: GET}}]
"""
    svc = OutboundPolicy(parse(profiled), 1, 65536, 100).lookup(Target("web.shop.svc.cluster.local", 80))
    for rp in (svc.match(Head(b"GET"), None), svc.default):
        conn = _Conn()
        svc.backend_for(rp, conn)
        assert conn.backend is None and rp.concretes[0][1] is None
    limited = _policy(route_label_limit=2)
    svc = limited.lookup(Target("web.shop", 80))
    counted = [b for rp in (*svc.routes.values(), svc.default) for _, b in rp.concretes if b is not None]
    assert len(limited.registry.backends) == len(counted) == 2  # the rest: counted on their route only
    conn = _Conn()
    svc.backend_for(svc.match(Head(b"PUT"), None), conn)  # a route past the limit: nothing to hand over
    assert conn.backend is None
