"""Weighted backend choice, statistically, and backend rules taking precedence."""

from __future__ import annotations

import random

import pytest

from proxy.policy.model import Backend, HeaderMatch, PathMatch, RequestMatch, Route, ServicePolicy
from proxy.policy.split import Splitter, WeightedBackends

N = 10_000
TOLERANCE = 1.5  # percentage points; 3 sigma at p=0.1 over 10,000 picks is 0.9


def shares(picker, picks):
    counts: dict[str, int] = {}
    for b in picks:
        counts[b.authority] = counts.get(b.authority, 0) + 1
    return {k: 100.0 * v / N for k, v in counts.items()}


def test_90_10_split_within_tolerance():
    rng = random.Random(7)
    w = WeightedBackends((Backend("v1", 90), Backend("v2", 10)))
    got = shares(w, [w.pick(rng.random()) for _ in range(N)])
    assert abs(got["v1"] - 90) <= TOLERANCE and abs(got["v2"] - 10) <= TOLERANCE


def test_three_way_fractional_weights():
    rng = random.Random(11)
    w = WeightedBackends((Backend("a", 0.5), Backend("b", 0.25), Backend("c", 0.25)))
    got = shares(w, [w.pick(rng.random()) for _ in range(N)])
    for name, want in (("a", 50), ("b", 25), ("c", 25)):
        assert abs(got[name] - want) <= TOLERANCE


def test_edges_and_zero_weights():
    w = WeightedBackends((Backend("zero", 0), Backend("a", 1), Backend("b", 1)))
    assert w.pick(0.0).authority == "a"
    assert w.pick(0.9999999).authority == "b"
    assert w.pick(1.0).authority == "b"  # tolerate rnd == 1.0
    with pytest.raises(ValueError):
        WeightedBackends((Backend("x", 0),))


def test_rules_first_then_service_split_then_service_itself():
    # Same path as "api" plus a header: more header matches wins (Gateway precedence).
    canary = Route("canary", matches=(RequestMatch(path=PathMatch("prefix", "/api"),
                                                   headers=(HeaderMatch("x-canary", "exact", "1"),)),),
                   backends=(Backend("web-v2", 1),))
    api = Route("api", matches=(RequestMatch(path=PathMatch("prefix", "/api")),))
    policy = ServicePolicy("web", gateway_routes=(canary, api), backends=(Backend("web-v1", 1),))
    s = Splitter(policy)
    assert s.pick(b"GET", b"/api/x", [(b"X-Canary", b"1")], 0.3).authority == "web-v2"
    assert s.pick(b"GET", b"/api/x", [], 0.3).authority == "web-v1"
    assert Splitter(ServicePolicy("web")).pick(b"GET", b"/", [], 0.5).authority == "web"
