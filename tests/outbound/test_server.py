"""Tests of proxy/outbound/server.py's policy stage: logical service -> route -> concrete backend."""

import asyncio
import collections
import random
import time

import pytest

from proxy.config import load
from proxy.core.addr import ConnMeta, Target
from proxy.discovery.file import FileResolver
from proxy.errors import RoutingError
from proxy.exchange.core import SETTLE_CANCELLED
from proxy.outbound.policy import OutboundPolicy
from proxy.outbound.server import CACHE_LIMIT, OutboundRouter
from proxy.policy.parse import parse
from proxy.protocol.request import h2_request_line
from proxy.transport.own import OwnAddresses

POLICY = """
services:
  web.test:80:
    backends:
      - {authority: v1.test:8080, weight: 1}
      - {authority: v2.test:8081, weight: 1}
    routes:
      - {name: reads, match: {method: GET}, isRetryable: true}
"""


def Head(method=b"GET", target=b"/", host=b"web.test"):  # noqa: N802 (stands for a head class)
    # A real request line (the router's route() takes one, typed): HTTP/2's pseudo-fields build it.
    return h2_request_line([(b":method", method), (b":path", target), (b":authority", host)])


class Conn:
    rp = None


def _router():
    policy = OutboundPolicy(parse(POLICY), retry_limit=3, replay_limit=65536, route_label_limit=10)
    return OutboundRouter(OwnAddresses(frozenset()), policy=policy)


def _meta(orig_dst=None):
    return ConnMeta("outbound", ("127.0.0.1", 5000), ("127.0.0.1", 4140), orig_dst)


def test_a_request_gets_its_route_and_a_concrete_backend():
    router = _router()
    conn = Conn()
    target = router.route(Head(), _meta(), conn)
    assert (target.host, target.port) in {("v1.test", 8080), ("v2.test", 8081)}
    assert conn.rp.route.name == "reads" and conn.rp.stats.requests == 1
    assert conn.rp.budget.state(time.monotonic()).requests == 1  # a retryable route deposits in the budget
    # A passthrough backend (no discovery) is its own and only retry target.
    assert router.reroute(Head(), _meta(), target, conn) is target


def test_destinations_without_a_policy_are_untouched():
    router = _router()
    conn = Conn()
    target = router.route(Head(host=b"other.test:90"), _meta(), conn)
    assert target == Target("other.test", 90) and conn.rp is None


def test_opaque_connections_are_split_by_weight():
    router = _router()
    router.policy.lookup(Target("web.test", 80)).random = random.Random(3).random
    counts = collections.Counter(router.tunnel_target(_meta(("web.test", 80))) for _ in range(400))
    assert set(counts) == {Target("v1.test", 8080), Target("v2.test", 8081)}
    assert min(counts.values()) > 120  # 1:1 split; 400 draws, sd 10
    assert router.tunnel_target(_meta(("elsewhere.test", 80))) == Target("elsewhere.test", 80)


def test_a_forgotten_service_is_not_used_again_through_the_host_decision(tmp_path):
    # The router remembers each Host's discovered service; when the idle sweep forgets (and closes) that
    # service, the next request must look it up anew, not reach the closed one.
    path = tmp_path / "endpoints.yaml"
    path.write_text("services:\n  web.test:80:\n    endpoints:\n      - address: 127.0.0.1:8081\n")
    resolver = FileResolver(str(path))
    assert resolver.check()
    loop = asyncio.new_event_loop()
    try:
        router = OutboundRouter(OwnAddresses(frozenset()), loop, resolver, load({}).balancer)
        first = router.route(Head(), _meta(), Conn())
        assert router.route(Head(), _meta(), Conn()).service is first.service  # remembered
        for _ in range(2):
            first.service.settle(first, 0.0, SETTLE_CANCELLED)
        router.sweep(loop.time() + 3600.0)
        assert router.services == {}
        again = router.route(Head(), _meta(), Conn())
        assert again.service is not first.service and router.services[("web.test", 80)] is again.service
        assert again == Target("127.0.0.1", 8081)
        again.service.settle(again, 0.0, SETTLE_CANCELLED)
    finally:
        loop.close()


def test_a_flood_of_distinct_hosts_keeps_the_host_decisions_bounded():
    router = OutboundRouter(OwnAddresses(frozenset()))
    for i in range(CACHE_LIMIT + 500):
        assert router.route(Head(host=b"h%d.test" % i), _meta(), Conn()) == Target(f"h{i}.test", 80)
    assert 0 < len(router._hosts) <= CACHE_LIMIT
    # A malformed Host is refused every time and never remembered.
    for _ in range(2):
        with pytest.raises(RoutingError):
            router.route(Head(host=b"bad host"), _meta(), Conn())
    assert b"bad host" not in router._hosts
