"""RouteClock: a route's whole-request and idle timeouts on a fake loop."""

from __future__ import annotations

from proxy import errors
from proxy.exchange.clock import RouteClock

from .fakes import FakeLoop


def _clock(timeout, idle):
    loop = FakeLoop()
    fired = []
    return loop, fired, RouteClock(loop, timeout, idle, fired.append)


def test_timeout_fires_once():
    loop, fired, _ = _clock(5.0, 0.0)
    loop.advance(4.99)
    assert fired == []
    loop.advance(0.01)
    assert len(fired) == 1 and isinstance(fired[0], errors.RouteTimeout)
    assert fired[0].reason == "request timed out (route timeout 5s)"
    loop.advance(100.0)
    assert len(fired) == 1 and loop.pending() == []


def test_idle_timeout_moves_with_io_and_keeps_one_timer():
    loop, fired, clock = _clock(0.0, 2.0)
    for _ in range(10):
        loop.advance(1.5)
        clock.touch()
        assert len(loop.pending()) == 1
    assert fired == []
    loop.advance(1.99)
    assert fired == []
    loop.advance(0.01)
    assert len(fired) == 1 and fired[0].reason == "request timed out (stream idle for 2s)"
    assert loop.pending() == []


def test_idle_without_io_fires_at_the_limit():
    loop, fired, _ = _clock(0.0, 3.0)
    loop.advance(3.0)
    assert len(fired) == 1


def test_whole_timeout_wins_over_a_busy_stream():
    loop, fired, clock = _clock(4.0, 1.0)
    for _ in range(8):
        loop.advance(0.5)
        clock.touch()
    assert [e.reason for e in fired] == ["request timed out (route timeout 4s)"]


def test_stop_disarms_both():
    loop, fired, clock = _clock(4.0, 1.0)
    clock.stop()
    assert loop.pending() == []
    clock.touch()
    loop.advance(10.0)
    assert fired == []


def test_zero_disables():
    loop, fired, clock = _clock(0.0, 0.0)
    assert loop.pending() == []
    clock.touch()
    loop.advance(10.0)
    assert fired == []
