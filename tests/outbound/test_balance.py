"""proxy/outbound/balance.py: a new pick for a request whose connect failed avoids that endpoint."""

from __future__ import annotations

import asyncio

from proxy.config import load
from proxy.discovery.model import Endpoint, snapshot
from proxy.discovery.resolver import Watch
from proxy.outbound.balance import BalancedService


def _service(addresses):
    loop = asyncio.new_event_loop()
    watch = Watch("web.test:80")
    svc = BalancedService(loop, "web.test:80", watch, load({}).balancer)
    watch.publish(snapshot("web.test:80", [Endpoint(a) for a in addresses]))
    return svc, loop


def test_a_repick_avoids_the_endpoint_that_just_failed():
    svc, loop = _service([("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)])
    try:
        for _ in range(300):
            first = svc.route(None)
            again = svc.route(None, avoid=first.endpoint)
            assert again.endpoint is not first.endpoint
            for target in (first, again):
                svc.balancer.cancel(target.endpoint)
        # Every pick undone: nothing is left counted in flight.
        assert all(ep.pending == 0 for ep in svc.balancer.endpoints())
    finally:
        svc.close()
        loop.close()


def test_with_one_endpoint_the_repick_is_that_endpoint():
    svc, loop = _service([("10.0.0.1", 80)])
    try:
        first = svc.route(None)
        assert svc.route(None, avoid=first.endpoint).endpoint is first.endpoint
    finally:
        svc.close()
        loop.close()


def test_an_identity_protocol_or_label_change_at_the_same_address_renews_the_target():
    # A pod's address given to another workload: the peer must prove the new identity, and the old
    # Target (which pools are keyed by) must not be reused.
    loop = asyncio.new_event_loop()
    watch = Watch("web.test:80")
    svc = BalancedService(loop, "web.test:80", watch, load({}).balancer)
    app, peer = ("10.0.0.1", 8080), ("10.0.0.1", 4143)
    try:
        watch.publish(snapshot("web.test:80", [Endpoint(app, peer, "a.ns.serviceaccount.identity.cluster.local")]))
        first = svc.route(None)
        svc.balancer.cancel(first.endpoint)
        assert first.identity == "a.ns.serviceaccount.identity.cluster.local" and first.mesh_port == 8080
        watch.publish(snapshot("web.test:80", [Endpoint(app, peer, "b.ns.serviceaccount.identity.cluster.local")]))
        second = svc.route(None)
        svc.balancer.cancel(second.endpoint)
        assert second.identity == "b.ns.serviceaccount.identity.cluster.local" and second != first
        watch.publish(snapshot("web.test:80", [Endpoint(app, peer, "b.ns.serviceaccount.identity.cluster.local",
                                                        protocol="h2", labels=(("pod", "web-2"),))]))
        third = svc.route(None)
        svc.balancer.cancel(third.endpoint)
        assert third.protocol == "h2" and svc.endpoint_labels(third) == (("pod", "web-2"),)
        watch.publish(snapshot("web.test:80", [Endpoint(app)]))  # no longer meshed: plain, no identity
        fourth = svc.route(None)
        svc.balancer.cancel(fourth.endpoint)
        assert fourth.identity is None and fourth.mesh_port == 0 and (fourth.host, fourth.port) == app
        # Nothing changed: the same Target object stays.
        watch.publish(snapshot("web.test:80", [Endpoint(app)]))
        assert svc.route(None) is fourth
    finally:
        svc.close()
        loop.close()
