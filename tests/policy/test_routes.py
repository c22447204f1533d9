"""Route matching: HTTPRoute (Gateway API) precedence and ServiceProfile first-match-wins."""

from __future__ import annotations

from proxy.policy.model import (
    Condition,
    HeaderMatch,
    PathMatch,
    QueryParamMatch,
    RequestMatch,
    Route,
    ServicePolicy,
)
from proxy.policy.routes import RouteTable, match


def gw(*routes: Route) -> RouteTable:
    return RouteTable(ServicePolicy("svc", gateway_routes=routes))


def r(name, *matches, order=()):
    return Route(name, matches=tuple(matches), order=order or (name,))


def name(table, method=b"GET", path=b"/", headers=()):
    found = table.match(method, path, headers)
    return found.name if found else None


def test_exact_beats_prefix_beats_regex():
    t = gw(r("regex", RequestMatch(path=PathMatch("regex", "/books/.*"))),
           r("prefix", RequestMatch(path=PathMatch("prefix", "/books"))),
           r("exact", RequestMatch(path=PathMatch("exact", "/books/1"))))
    assert name(t, path=b"/books/1") == "exact"
    assert name(t, path=b"/books/2") == "prefix"
    assert name(t, path=b"/other") is None


def test_longest_prefix_wins_and_prefix_is_element_wise():
    t = gw(r("root", RequestMatch()), r("api", RequestMatch(path=PathMatch("prefix", "/api"))),
           r("v1", RequestMatch(path=PathMatch("prefix", "/api/v1/"))))
    assert name(t, path=b"/api/v1/users") == "v1"
    assert name(t, path=b"/api/v1") == "v1"          # trailing / of the prefix is ignored
    assert name(t, path=b"/api/v2") == "api"
    assert name(t, path=b"/apix") == "root"          # /api does not match /apix
    assert name(t, path=b"/api?x=1") == "api"        # the query is not part of the path


def test_method_then_header_count_then_query_count():
    p = PathMatch("prefix", "/")
    t = gw(r("plain", RequestMatch(path=p)),
           r("one-header", RequestMatch(path=p, headers=(HeaderMatch("x-a", "exact", "1"),))),
           r("two-headers", RequestMatch(path=p, headers=(HeaderMatch("x-a", "exact", "1"),
                                                          HeaderMatch("x-b", "regex", "b+")))),
           r("method", RequestMatch(method="POST", path=p)),
           r("query", RequestMatch(path=p, query_params=(QueryParamMatch("v", "exact", "2"),))))
    both = [(b"X-A", b"1"), (b"x-b", b"bbb")]
    assert name(t, b"POST", b"/", both) == "method"          # method outranks headers
    assert name(t, b"GET", b"/", both) == "two-headers"
    assert name(t, b"GET", b"/", [(b"x-a", b"1")]) == "one-header"
    assert name(t, b"GET", b"/", {b"x-a": b"1", b"x-b": b"c"}) == "one-header"  # regex is a full match
    assert name(t, b"GET", b"/?v=2") == "query"
    assert name(t, b"GET", b"/?v=3") == "plain"


def test_ties_broken_by_age_then_name_then_rule_order():
    m = RequestMatch(path=PathMatch("prefix", "/x"))
    older = Route("older", matches=(m,), order=("2024-01-01T00:00:00Z", "ns/zzz", 0))
    newer = Route("newer", matches=(m,), order=("2025-01-01T00:00:00Z", "ns/aaa", 0))
    assert name(gw(newer, older), path=b"/x") == "older"
    a = Route("a", matches=(m,), order=("", "ns/a", 0))
    b = Route("b", matches=(m,), order=("", "ns/b", 0))
    assert name(gw(b, a), path=b"/x") == "a"
    rule0 = Route("rule0", matches=(m,), order=("", "ns/r", 0))
    rule1 = Route("rule1", matches=(m,), order=("", "ns/r", 1))
    assert name(gw(rule1, rule0), path=b"/x") == "rule0"


def test_any_of_several_matches():
    t = gw(r("multi", RequestMatch(path=PathMatch("exact", "/a")), RequestMatch(path=PathMatch("exact", "/b"))))
    assert name(t, path=b"/b") == "multi"
    assert name(t, path=b"/c") is None


def test_service_profile_first_match_wins_and_conditions():
    get_book = Route("GET /books/{id}", condition=Condition("all", children=(
        Condition("method", "GET"), Condition("path_regex", "/books/[^/]*"))))
    not_get = Route("not GET", condition=Condition("not", children=(Condition("method", "GET"),)))
    anything = Route("books any", condition=Condition("any", children=(
        Condition("path_regex", "/books/.*"), Condition("path_regex", "/authors/.*"))))
    policy = ServicePolicy("svc", ordered_routes=(get_book, not_get, anything),
                           gateway_routes=(r("ignored", RequestMatch()),))
    assert match(policy, b"GET", b"/books/1").name == "GET /books/{id}"
    assert match(policy, b"POST", b"/books/1").name == "not GET"
    assert match(policy, b"GET", b"/books/1/x").name == "books any"   # pathRegex is a full match
    assert match(policy, b"GET", b"/authors/7?x").name == "books any"
    assert match(policy, b"GET", b"/other") is None                   # HTTPRoutes shadowed


def test_match_caches_per_policy_object():
    policy = ServicePolicy("svc", gateway_routes=(r("root", RequestMatch()),))
    assert match(policy, b"GET", b"/").name == "root"
    assert match(policy, b"GET", b"/x").name == "root"


def test_regex_ranks_below_prefixes_but_above_catch_all():
    t = gw(r("all", RequestMatch()), r("root", RequestMatch(path=PathMatch("prefix", "/"))),
           r("regex", RequestMatch(path=PathMatch("regex", "/a/[0-9]+"))),
           r("prefix", RequestMatch(path=PathMatch("prefix", "/a/1"))))
    assert name(t, path=b"/a/12") == "regex"
    assert name(t, path=b"/a/1") == "prefix"
    assert name(t, path=b"/b") == "all"  # no path == PathPrefix /, tie broken by order (name here)
