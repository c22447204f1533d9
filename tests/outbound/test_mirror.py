"""The mirror's hold (proxy/outbound/mirror.py) driven through the exchange core: copies wait for the primary.

The primary exchange runs on the exchange tests' rig (fake loop, ends and
dispatcher); the copies get a context of their own on the same loop, as
outbound.build gives them, with a dispatcher recording what reaches the
mirror. Time moves when the test advances the fake loop; its ready
callbacks run when the test turns it (``tick``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from proxy.core.target import Target
from proxy.exchange.context import ExchangeContext
from proxy.outbound.mirror import COPY_HOLD, DRAIN_BATCH, MirrorHub, MirrorRule
from proxy.telemetry.counters import HttpStats, TcpStats
from tests.exchange.conftest import make_rig  # noqa: F401 - the fixture
from tests.exchange.fakes import FakeDispatcher, FakePolicy

MIRROR = ("10.7.7.7", 80)
LIMITS = SimpleNamespace(response_timeout=0.0, max_header_bytes=65536, header_timeout=10.0, write_buffer_high=65536,
                         pipeline_buffer_bytes=65536, client_idle_timeout=0.0)


class _Ready:
    """The loop's ready queue (``call_soon``), turned by the test: one turn runs what was queued before it."""

    def __init__(self, loop) -> None:
        self.callbacks: list = []
        loop.call_soon = lambda callback, *args: self.callbacks.append((callback, args))

    def tick(self) -> int:
        turn, self.callbacks = self.callbacks, []
        for callback, args in turn:
            callback(*args)
        return len(turn)


class _Router:
    def concrete_endpoint(self, address, ex):
        return Target(*address)


def _mirrored(make_rig, max_in_flight: int = 100, max_body: int = 1024):  # noqa: F811
    rig = make_rig(auto="h1", policy=FakePolicy())
    hub = MirrorHub(max_in_flight, max_body)
    copies = FakeDispatcher(auto="h1")
    hub.ctx = ExchangeContext(rig.loop, "outbound", hub, copies, HttpStats("outbound"),
                              TcpStats("outbound", "src"), TcpStats("outbound", "dst"), LIMITS, 0)
    hub.ctx.log_errors = False
    hub.router = _Router()
    counters = hub.counters_for("svc.ns:80", "mirror.ns:80")
    rig.policy.mirror = MirrorRule(hub, [(MIRROR, 1.0, counters)])
    return rig, hub, copies, counters, _Ready(rig.loop)


def test_the_copy_goes_once_the_primary_answer_was_written(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig)
    ex, down = rig.start_h1(path=b"/a")
    assert len(rig.ups()) == 1 and rig.ups()[0].ended == 1  # the primary's request is with its upstream
    assert copies.opened == [] and hub.in_flight == 1  # its copy only holds a slot
    rig.ups()[0].head(200, length=0, end=True)
    assert down.kinds()[-1] == "done"
    # Sent in the same turn as the answer: no ready callback, no timer of its own.
    assert [up.target.host for up in copies.opened] == [MIRROR[0]] and copies.last.ended == 1
    assert counters.requests == 1 and ready.tick() == 0
    copies.last.head(503, length=0, end=True)  # the mirror's answer: counted on the mirror only
    assert hub.in_flight == 0 and counters.failures == 1 and rig.policy.stats.requests == 1
    rig.loop.advance(COPY_HOLD)  # the hub's timer finds nothing left to send, and stops
    assert not hub.queue and hub.timer is None and len(copies.opened) == 1


def test_copies_of_primaries_still_running_go_after_the_hold_a_few_per_turn(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig)
    for i in range(DRAIN_BATCH * 2 + 1):
        rig.start_h1(path=b"/%d" % i)
    assert len(rig.ups()) == DRAIN_BATCH * 2 + 1 and not copies.opened
    rig.loop.advance(COPY_HOLD / 2)
    assert not copies.opened
    rig.loop.advance(COPY_HOLD / 2)
    sent = [len(copies.opened)]
    while ready.tick():
        sent.append(len(copies.opened))
    assert sent == [DRAIN_BATCH, DRAIN_BATCH * 2, DRAIN_BATCH * 2 + 1]
    assert counters.requests == hub.in_flight == DRAIN_BATCH * 2 + 1
    for up in rig.ups():  # the primaries end later: their copies are not sent twice
        up.head(200, length=0, end=True)
    assert len(copies.opened) == DRAIN_BATCH * 2 + 1


def test_a_later_request_answered_first_sends_its_copy_first(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig)
    slow, _ = rig.start_h1(path=b"/slow")
    fast, _ = rig.start_h1(path=b"/fast")
    rig.ups()[1].head(200, length=0, end=True)
    assert [up.ex.head for up in copies.opened] == [fast.head]
    rig.loop.advance(COPY_HOLD)  # the first one's primary is still running: its copy goes from the timer
    assert [up.ex.head for up in copies.opened] == [fast.head, slow.head]
    assert hub.timer is None and not hub.queue


def test_the_queue_of_held_copies_stays_bounded_behind_a_long_primary(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig, max_in_flight=4)
    rig.start_h1(path=b"/long")  # never answered within the test
    for i in range(40):
        rig.start_h1(path=b"/%d" % i)
        rig.ups()[-1].head(200, length=0, end=True)
        copies.last.head(200, length=0, end=True)
        assert len(hub.queue) <= 2 * hub.max_in_flight
    assert counters.requests == 40 and hub.in_flight == 1


@pytest.mark.parametrize("trailers", [False, True])
def test_the_body_read_before_the_copy_went_reaches_it_whole(make_rig, trailers):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig)
    ex, down = rig.start_h1(method=b"POST", chunked=True)
    down.feed(ex, b"a" * 100)
    down.feed(ex, b"b" * 50)
    rig.loop.advance(COPY_HOLD)  # the copy goes with what was read, and takes the rest as the primary reads it
    down.feed(ex, b"c" * 10, end=not trailers)
    if trailers:
        ex.request_trailers([(b"x-sum", b"1")])
    copy = copies.last
    assert bytes(copy.sent) == b"a" * 100 + b"b" * 50 + b"c" * 10 and copy.ended == 1
    assert copy.trailers == ([(b"x-sum", b"1")] if trailers else None)
    assert bytes(rig.ups()[0].sent) == bytes(copy.sent)
    assert down.released == down.issued  # the copy took no credit of the client's


def test_a_whole_body_read_before_the_answer_goes_with_the_copy(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig)
    ex, down = rig.start_h1(method=b"POST", chunked=True)
    down.feed(ex, b"a" * 100)
    down.feed(ex, b"b" * 5, end=True)
    rig.ups()[0].head(201, length=0, end=True)
    assert bytes(copies.last.sent) == b"a" * 100 + b"b" * 5 and copies.last.ended == 1


def test_a_body_that_outgrows_the_limit_while_held_is_never_sent(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig, max_body=100)
    ex, down = rig.start_h1(method=b"POST", chunked=True)
    down.feed(ex, b"x" * 80)
    down.feed(ex, b"y" * 80, end=True)
    assert hub.in_flight == 0 and counters.skipped["body_too_large"] == 1
    rig.loop.advance(COPY_HOLD)
    rig.ups()[0].head(200, length=0, end=True)
    assert copies.opened == [] and counters.requests == 0


def test_a_primary_that_ends_before_its_request_did_abandons_its_held_copy(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig)
    ex, down = rig.start_h1(method=b"POST", chunked=True)
    down.feed(ex, b"x" * 10)
    rig.ups()[0].head(413, length=0, end=True)  # answered before the body ended
    ex.client_gone()
    assert hub.in_flight == 0 and counters.skipped["request_incomplete"] == 1
    rig.loop.advance(COPY_HOLD)
    assert copies.opened == []


def test_held_copies_hold_their_in_flight_slots(make_rig):  # noqa: F811
    rig, hub, copies, counters, ready = _mirrored(make_rig, max_in_flight=2)
    for i in range(3):
        rig.start_h1(path=b"/%d" % i)
    assert hub.in_flight == 2 and counters.skipped["in_flight_limit"] == 1
    rig.loop.advance(COPY_HOLD)
    assert len(copies.opened) == 2
