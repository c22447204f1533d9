"""ExchangeContext: what one direction's exchanges share; the idle sweep and the drain walk its connections."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.exchange.context import ExchangeContext
from proxy.exchange.ends import Dispatcher
from proxy.telemetry.counters import HttpStats, TcpStats

from .fakes import FakeLoop, FakeRouter


class _Upstreams(Dispatcher):
    def __init__(self):
        self.swept = []
        self.drained = 0

    def sweep(self, now):
        self.swept.append(now)

    def drain(self):
        self.drained += 1


class _Conn:
    def __init__(self, in_flight, idle_since):
        self.in_flight = in_flight
        self.idle_since = idle_since
        self.closed = 0
        self.draining = 0
        self.idled = 0

    def close(self):
        self.closed += 1

    def idle(self):
        self.idled += 1

    def begin_drain(self):
        self.draining += 1


def _ctx(idle):
    loop = FakeLoop(start=100.0)
    limits = SimpleNamespace(response_timeout=3.0, max_header_bytes=8192, header_timeout=10.0,
                             write_buffer_high=1024, pipeline_buffer_bytes=2048, client_idle_timeout=idle)
    up = _Upstreams()
    ctx = ExchangeContext(loop, "inbound", FakeRouter(), up, HttpStats("inbound"), TcpStats("inbound", "src"),
                          TcpStats("inbound", "dst"), limits, 7)
    return loop, up, ctx


def test_limits_are_read_whole():
    _, _, ctx = _ctx(30.0)
    assert ctx.inbound and ctx.direction == "inbound"
    assert (ctx.response_timeout, ctx.max_header_bytes, ctx.write_high, ctx.pipeline_buffer) == (3.0, 8192, 1024, 2048)
    assert (ctx.max_in_flight, ctx.in_flight, ctx.policy_gen, ctx.draining) == (7, 0, 0, False)


def test_sweep_closes_only_idle_connections_past_the_limit():
    loop, up, ctx = _ctx(30.0)
    busy, fresh, stale = _Conn(True, 0.0), _Conn(False, 90.0), _Conn(False, 60.0)
    ctx.connections.update((busy, fresh, stale))
    loop.advance(5.0)
    ctx.sweep()
    assert up.swept == [105.0]
    assert (busy.closed, fresh.closed, stale.closed) == (0, 0, 1)
    # The idle ones not closed let go of what they keep for their next request.
    assert (busy.idled, fresh.idled, stale.idled) == (0, 1, 0)


def test_sweep_without_a_client_idle_limit_closes_nothing():
    _loop, up, ctx = _ctx(0.0)
    conn = _Conn(False, 0.0)
    ctx.connections.add(conn)
    ctx.sweep()
    assert conn.closed == 0 and conn.idled == 1 and len(up.swept) == 1


def test_drain_tells_every_connection_and_the_upstreams():
    _, up, ctx = _ctx(30.0)
    conns = [_Conn(True, 0.0), _Conn(False, 0.0)]
    ctx.connections.update(conns)
    ctx.drain()
    assert ctx.draining and up.drained == 1
    assert [c.draining for c in conns] == [1, 1]
