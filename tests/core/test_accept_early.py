"""The accept stage's shared timer for the first ``server_first_probe`` of every connection (proxy/core/accept.py)."""

import asyncio

from proxy.core.accept import EARLY_STEP, Accepted, AcceptStage


class _Ctx:
    def __init__(self, loop):
        self.loop = loop


class _Conn:
    """Stands for an Accepted: what the stage's queue calls."""

    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail, self.queued = log, name, fail, True

    def early_deadline(self):
        self.queued = False
        self.log.append((self.name, asyncio.get_running_loop().time()))
        if self.fail:
            raise RuntimeError("one connection's probe failed")


def _stage(loop):
    return AcceptStage(direction="outbound", ctx=_Ctx(loop), connector=None, limits=None, opaque_ports=None,
                       max_connections=10, connection_target=lambda m: None, tunnel_target=lambda m: None,
                       refuse_without_target=False)


def test_every_queued_connection_gets_its_deadline_once_in_order_and_decided_ones_none():
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: errors.append(context["exception"]))
        stage = _stage(loop)
        start = loop.time()
        a, b, c = _Conn(log, "a", fail=True), _Conn(log, "b"), _Conn(log, "c")
        decided = _Conn(log, "decided")
        stage.wait_early(a, 0.05)
        stage.wait_early(decided, 0.05)
        decided.queued = False  # handed off before its deadline (Accepted._cancel)
        stage.wait_early(b, 0.05)
        await asyncio.sleep(0.03)
        stage.wait_early(c, 0.05)
        await asyncio.sleep(0.15)
        return start

    log, errors = [], []
    start = asyncio.run(main())
    # a's failure (logged by the loop) leaves b and c their deadlines; the decided one is skipped.
    assert [name for name, _ in log] == ["a", "b", "c"]
    assert [type(e) for e in errors] == [RuntimeError]
    times = dict(log)
    assert 0.05 - 0.002 <= times["b"] - start <= 0.05 + EARLY_STEP + 0.05  # loose upper bound: a shared CI box
    assert times["c"] - start >= 0.08 - 0.002


def test_the_queue_empties_and_the_timer_stops():
    async def main():
        loop = asyncio.get_running_loop()
        stage = _stage(loop)
        for i in range(5):
            stage.wait_early(_Conn([], i), 0.01)
        await asyncio.sleep(0.1)
        return stage

    stage = asyncio.run(main())
    assert not stage._early and stage._early_timer is None


class _GoneTransport:
    """A transport whose descriptor uvloop has already closed: reading it raises EBADF."""

    def __init__(self):
        self.aborted = False

    def get_extra_info(self, name, default=None):
        if name == "socket":
            raise OSError(9, "Bad file descriptor")
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 4140)}.get(name, default)

    def abort(self):
        self.aborted = True


def test_a_connection_gone_before_its_accept_ran_is_not_left_counted():
    async def main():
        stage = _stage(asyncio.get_running_loop())
        stage.ctx.connections = {}
        conns = [Accepted(stage) for _ in range(20)]  # more than max_connections: a leak would show
        transports = [_GoneTransport() for _ in conns]
        for conn, transport in zip(conns, transports):
            conn.connection_made(transport)
            conn.connection_lost(None)  # uvloop may still report the loss: counted once
        return stage, transports

    stage, transports = asyncio.run(main())
    assert stage.open_connections == 0
    assert all(t.aborted for t in transports)
