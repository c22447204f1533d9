"""H1Server's exchanges (proxy/http/h1server.py, proxy/exchange/core.py take_exchange/spare_exchange): a
connection the sweep finds idle, or a closed one, gives its exchange to the context's bounded spares, which
the next request of any connection takes; a spare holds nothing of its last connection."""

from __future__ import annotations

import sys

import pytest

from proxy.core.addr import ConnMeta
from proxy.http.h1server import H1Server
from tests.exchange.fakes import FakeLoop, Rig, patched

# proxy/exchange/core.py's bound on spare exchanges (a C constant, not visible from Python).
SPARE_EXCHANGES = 32


class _Loop(FakeLoop):
    def call_soon(self, callback, *args):
        return self.call_at(self.now, callback, *args)


class _Transport:
    """What H1Server asks of a transport; the bytes written are kept."""

    def __init__(self):
        self.written = bytearray()
        self.closed = False

    def write(self, data):
        self.written += data

    def set_write_buffer_limits(self, high, low):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    abort = close


def _connect(rig, port):
    meta = ConnMeta("outbound", ("10.0.0.9", port), ("10.0.0.8", 4140), None)
    conn = H1Server(rig.ctx, meta)
    transport = _Transport()
    conn.connection_made(transport)
    return conn, transport


def _request(rig, conn, transport):
    conn.data_received(b"GET / HTTP/1.1\r\nHost: svc.ns\r\n\r\n")
    up = rig.disp.last
    ex = up.ex
    up.head(200, [(b":status", b"200"), (b"content-length", b"2")], 2)
    up.data(b"ok", end=True)
    rig.loop.advance(0)
    assert bytes(transport.written).endswith(b"\r\n\r\nok")
    return ex


@pytest.fixture
def rig():
    rig = Rig(auto="h1")
    rig.ctx.loop = rig.loop = _Loop()
    rig.disp.sweep = lambda now: None  # the upstreams' part of the sweep is not under test here
    with patched(rig):
        yield rig


def test_an_idle_connection_gives_its_exchange_to_the_next_connection(rig):
    first, first_t = _connect(rig, 40001)
    ex = _request(rig, first, first_t)
    # Kept for the connection's next request (no cost per request) until the sweep finds it idle.
    assert first.ex is ex and ex.down is first and rig.ctx.spare_exchanges == []
    assert _request(rig, first, first_t) is ex
    rig.ctx.sweep()
    assert first.ex is None and rig.ctx.spare_exchanges == [ex]
    # Nothing of the idle connection stays on the spare: not the connection, its addresses or authorization.
    assert ex.down is not first and ex.meta is None and ex.authz is None and ex.tap_base is None
    second, second_t = _connect(rig, 40002)
    assert _request(rig, second, second_t) is ex
    assert second.ex is ex and ex.down is second and ex.meta is second.meta
    assert rig.ctx.spare_exchanges == []
    third = _request(rig, first, first_t)  # the second's is kept by it: a new exchange
    assert third is not ex and first.ex is third
    # A closed connection's goes to the spares at once.
    second.connection_lost(None)
    assert second.ex is None and rig.ctx.spare_exchanges == [ex] and ex.down is not second


def test_the_spares_are_bounded(rig):
    conns = [_connect(rig, 41000 + i) for i in range(SPARE_EXCHANGES + 5)]
    for conn, t in conns:
        _request(rig, conn, t)
    rig.ctx.sweep()
    assert len(rig.ctx.spare_exchanges) == SPARE_EXCHANGES
    # Past the bound an idle connection's is freed all the same.
    assert all(conn.ex is None for conn, _t in conns)


def test_a_closed_connection_is_freed_without_the_cyclic_collector(rig):
    conn, transport = _connect(rig, 40003)
    _request(rig, conn, transport)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: svc.ns\r\n\r\n")  # in flight when the client goes
    up = rig.disp.last
    conn.connection_lost(None)
    up.head(200, [(b":status", b"200"), (b"content-length", b"0")], 0, True)  # ends after the client left
    assert conn.ex is None and all(u.ex.down is not conn for u in rig.disp.opened)
    # Only this frame refers to it: freed by reference counting once the test lets go.
    assert sys.getrefcount(conn) == 2


def test_a_closed_connection_with_the_spares_full_keeps_its_exchange_without_a_cycle(rig):
    conn, transport = _connect(rig, 40004)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: svc.ns\r\n\r\n")
    rig.ctx.spare_exchanges.extend(rig.exchange()[0] for _ in range(SPARE_EXCHANGES))  # the list is full
    up = rig.disp.last
    conn.connection_lost(None)  # in flight: the exchange ends after the client left
    up.head(200, [(b":status", b"200"), (b"content-length", b"0")], 0, True)
    ex = conn.ex
    assert ex is not None and ex.down is not conn and ex.meta is None
    rig.disp.opened.clear()
    del up
    assert sys.getrefcount(conn) == 2
