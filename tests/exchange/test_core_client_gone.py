"""Exchange core: the client goes away, at every stage.

Nothing is answered, every pick is settled CANCELLED, timers stop.
"""

from __future__ import annotations

import pytest

from proxy.exchange.core import QUEUED

from .fakes import GRPC, FakePolicy, FakeService, responses


def _gone(rig, ex, down):
    ex.client_gone()
    assert down.kinds() == ["done"]  # no error, no cut: nobody to tell
    assert rig.ctx.in_flight == 0
    assert rig.loop.pending() == []
    ex.client_gone()  # a second notice changes nothing
    assert down.done_count == 1


def test_gone_while_queued_then_the_balancer_routes_it(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc, policy=FakePolicy(timeout=10.0))
    rig.router.plan = [QUEUED]
    ex, down = rig.start_h2()
    _gone(rig, ex, down)
    rig.router.wake()  # the waiter was still in the queue
    assert rig.ups() == []
    assert svc.outcomes() == ["cancelled"]
    assert rig.check_books() == []


def test_gone_while_queued_then_the_queue_gives_up(make_rig):
    rig = make_rig(service=FakeService())
    rig.router.plan = [QUEUED]
    ex, down = rig.start_h1()
    _gone(rig, ex, down)
    rig.router.give_up()
    assert down.kinds() == ["done"]
    assert responses(rig.stats, failures=True) == {}


def test_gone_before_the_attempt_reported_anything(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    ex, down = rig.start_h1()
    up = rig.disp.last
    _gone(rig, ex, down)
    assert svc.outcomes() == ["cancelled"]
    up.attach()  # the connection came up after all: the core lets it go
    assert up.cancels == 1 and up.sent == b""
    assert rig.check_books() == []


def test_gone_while_connecting(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc, response_timeout=5.0)
    ex, down = rig.start_h1()
    up = rig.disp.last
    up.connecting()
    _gone(rig, ex, down)
    assert up.cancels == 1
    assert svc.outcomes() == ["cancelled"]
    up.connect_fail()  # a late report is ignored
    assert svc.outcomes() == ["cancelled"] and len(rig.ups()) == 1


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_gone_while_waiting_for_the_response(make_rig, proto):
    svc = FakeService()
    policy = FakePolicy(limit=1, timeout=10.0, attempt_timeout=2.0)
    rig = make_rig(service=svc, policy=policy, response_timeout=5.0, auto=proto)
    ex, down = (rig.start_h1 if proto == "h1" else rig.start_h2)(method=b"POST", length=3)
    down.feed(ex, b"abc", end=True)
    up = rig.disp.last
    assert bytes(up.sent) == b"abc"
    _gone(rig, ex, down)
    assert up.cancels == 1
    assert svc.outcomes() == ["cancelled"]
    assert policy.stats.successes + policy.stats.failures == 0  # no outcome to count
    assert policy.stats.retries == 0
    rig.loop.advance(60.0)
    assert len(rig.ups()) == 1
    assert rig.check_books() == []


def test_gone_while_a_grpc_head_is_held(make_rig):
    svc = FakeService()
    policy = FakePolicy(limit=1)
    rig = make_rig(service=svc, policy=policy, auto="h2")
    ex, down = rig.start_h2()
    up = rig.disp.last
    up.head(200, [(b":status", b"200"), GRPC])
    _gone(rig, ex, down)
    assert svc.outcomes() == ["cancelled"]
    assert policy.stats.successes + policy.stats.failures == 0


def test_gone_while_a_retry_waits_for_an_endpoint(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc, policy=FakePolicy(limit=1), auto="h2")
    ex, down = rig.start_h2()
    rig.router.plan = [QUEUED]
    rig.disp.last.head(503, end=True)
    assert rig.router.queued == [ex]
    _gone(rig, ex, down)
    rig.router.wake()
    assert svc.outcomes() == ["failed", "cancelled"]
    assert len(rig.ups()) == 1
    assert rig.check_books() == []


def test_gone_during_the_response(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc, auto="h2")
    ex, down = rig.start_h2()
    up = rig.disp.last
    up.head(200)
    up.data(b"abc")
    ex.client_gone()
    assert down.kinds() == ["head", "send", "done"]
    assert up.cancels == 1
    assert svc.outcomes() == ["ok"]
    assert responses(rig.stats, failures=True) == {200: 1}  # its stream never ended (Linkerd: a failure)
    up.data(b"more", credit=0)  # already in flight from the upstream
    assert down.kinds() == ["head", "send", "done"]
    assert rig.check_books() == []


def test_gone_after_the_end_changes_nothing(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc, auto="h2")
    ex, down = rig.start_h2()
    rig.disp.last.head(204, end=True)
    ex.client_gone()
    assert down.kinds() == ["head", "end", "done"]
    assert svc.outcomes() == ["ok"]
    assert rig.disp.last.cancels == 1  # by finish, once
    assert rig.check_books() == []
