"""Tests of proxy/http/h1client.py's pool: idle connections per target, last released first, bounded, forgotten."""

import proxy.http.h1client as h1client
from proxy.core.target import Target
from proxy.http.h1client import H1Client, H1Pool, IdleStack
from proxy.telemetry.counters import TcpStats
from tests.exchange.fakes import Rig

assert h1client.__file__.endswith(".so"), f"compiled h1client not in use: {h1client.__file__}"

C_IDLE = 1  # the connection states (C constants of h1client.py, not exported)
C_DONE = 4


class Transport:
    def __init__(self):
        self.closing = False

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _pool(max_idle=2, idle_timeout=30.0):
    return H1Pool(None, None, TcpStats("outbound", "dst"), 65536, 65536, max_idle, idle_timeout)


def _conn(pool, target):
    conn = H1Client(pool, target, True)
    conn.transport = Transport()
    return conn


def test_idle_stack_reuses_its_slots_and_keeps_the_order():
    stack = IdleStack()
    a, b, c = (_conn(_pool(), Target("a", 1)) for _ in range(3))
    for _ in range(3):  # taken and given back: the same slots each time
        stack.push(a)
        stack.push(b)
        assert stack.conns() == [a, b]
        assert stack.pop() is b and stack.pop() is a
        assert stack.count == 0 and stack.conns() == []
    stack.push(a)
    stack.push(b)
    stack.push(c)
    assert stack.remove(b) and stack.conns() == [a, c] and stack.count == 2
    assert not stack.remove(b)
    stack.push(b)
    assert stack.pop() is b and stack.pop() is c and stack.pop() is a


def test_pool_bounds_forgets_and_sweeps_idle_connections():
    pool = _pool(max_idle=2, idle_timeout=30.0)
    target = Target("web", 80)
    a, b, c = (_conn(pool, target) for _ in range(3))
    for conn in (a, b, c):
        pool.release(conn)
    assert pool.idle_count == 2 and a.state == C_IDLE and b.state == C_IDLE
    assert c.state == C_DONE and c.transport.closing  # over the bound: closed, not kept
    pool.forget(a)  # closed by the upstream while idle
    assert pool.idle_count == 1
    pool.forget(a)
    assert pool.idle_count == 1
    b.transport.closing = True  # closing, not yet lost: never handed out again
    other = Target("other", 80)
    d = _conn(pool, other)
    pool.release(d)
    assert pool.idle_count == 2
    pool.sweep(d.idle_since + 60.0)  # past the idle timeout: both closed, the targets forgotten
    assert pool.idle_count == 0 and pool.idle == {}
    assert d.state == C_DONE and d.transport.closing


def test_pool_close_all_closes_every_idle_connection():
    pool = _pool(max_idle=4)
    conns = [_conn(pool, Target("web", 80)) for _ in range(3)] + [_conn(pool, Target("api", 80))]
    for conn in conns:
        pool.release(conn)
    assert pool.idle_count == 4
    pool.close_all()
    assert pool.idle_count == 0 and pool.idle == {}
    assert all(conn.transport.closing for conn in conns)


def test_upstream_closing_an_idle_connection_takes_it_out_of_the_pool_at_once():
    # The pool hands out connections by their state alone: an EOF on an idle one must leave it
    # before connection_lost, or a request in the same loop iteration could be written to it.
    pool = _pool(max_idle=2)
    target = Target("web", 80)
    a, b = _conn(pool, target), _conn(pool, target)
    pool.release(a)
    pool.release(b)
    assert b.eof_received() is False  # the transport closes it
    assert b.state == C_DONE and pool.idle_count == 1 and pool.idle[target].conns() == [a]
    b.connection_lost(None)
    assert pool.idle_count == 1 and pool.idle[target].conns() == [a]


def test_an_idle_connection_whose_transport_is_closing_is_not_handed_out():
    # A reset read earlier in the same loop iteration: uvloop closed the transport, connection_lost is
    # still to come and the state is still idle. A request attached to it would be lost (a POST cannot
    # be sent again): it goes out on a new connection instead.
    opened = []
    pool = H1Pool(None, lambda target, conn: opened.append((target, conn)), TcpStats("outbound", "dst"),
                  65536, 65536, 2, 30.0)
    target = Target("web", 80)
    reset = _conn(pool, target)
    pool.release(reset)
    reset.transport.closing = True
    rig = Rig()
    ex, _down = rig.exchange()
    rig.start_h1(ex)  # a request head to send (the fakes' dispatcher holds it: no up end yet)
    pool.open(ex, target, True)
    assert pool.idle_count == 0
    assert len(opened) == 1 and opened[0][0] == target and opened[0][1] is not reset
    assert ex.up is opened[0][1]  # the request waits for the new connection
