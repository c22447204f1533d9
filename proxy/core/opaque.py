"""Opaque TCP from the accept stage: connect to the target (or adopt the probe's connection) and relay bytes.

Bytes the client sent while detection ran go first; with a probe, what the
server already said goes first the other way. A balancer's pick is held for
the connection's life and settled when it ends (a failed connect counts as
a failure).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from proxy.core.addr import TRANSPORT_ROUTE, ConnMeta, Target
from proxy.errors import ProxyError, connect_error
from proxy.exchange.core import SETTLE_FAILED, SETTLE_OK
from proxy.http.tunnel import TunnelEnd
from proxy.protocol import transport_header
from proxy.telemetry.counters import TcpStats
from proxy.telemetry.logging import get_logger
from proxy.transport.connect import open_connection

if TYPE_CHECKING:
    from proxy.core.accept import AcceptStage
    from proxy.core.probe import Probe

log = get_logger("proxy.accept")

_KIND_NAMES = {1: "http/1", 2: "h2", 3: "tls", 4: "opaque"}  # proxy.protocol.detect's kinds


def open_tunnel(stage: AcceptStage, transport: asyncio.Transport, meta: ConnMeta, target: Target,
                buffered: bytes, eof: bool, kind: int, probe: Probe | None = None, tcp: TcpStats | None = None,
                opened_at: float = 0.0) -> None:
    """Relay raw bytes between the client and ``target``, starting with ``buffered``.

    With a live ``probe`` (the server-first probe's connection to the same
    target) no new connection is opened: the relay adopts it.
    """
    ctx = stage.ctx
    if tcp is None:  # counted open here, not by the accept stage
        tcp = ctx.tcp_src
        tcp.opened += 1
    tcp.read_bytes += len(buffered)  # read while detecting
    src = TunnelEnd(tcp, buffered)
    src.eof = eof
    src.adopt(transport, True, opened_at)
    transport.pause_reading()  # nothing more is read until the other side exists
    dst = TunnelEnd(ctx.tcp_dst if ctx.labels is None else ctx.labels.tcp_dst(target), b"")

    started = time.perf_counter()
    connect_time = [0.0]
    unreached = [False]  # the backend could not be reached: an unexpected close for the route's counters

    def closed(_end: TunnelEnd) -> None:
        stage.open_connections -= 1
        route = meta.stats_cache.get(TRANSPORT_ROUTE)
        if route is not None:  # an egress TCP or TLS route's connection (proxy/outbound/egress.py)
            route.close(unreached[0])
        if target.service is not None and connect_time[0]:
            # Balanced per connection: the pick is held for the connection's life.
            target.service.settle(target, connect_time[0], SETTLE_OK)

    src.on_close = closed

    def link() -> None:
        src.link(dst)
        if not transport.is_closing():
            transport.resume_reading()

    def adopt(ready: Probe) -> None:
        if ready.closed:
            start_connect()  # the probe's connection failed or ended: a fresh one
            return
        assert ready.transport is not None  # ready and not closed: connected
        ready.take()
        connect_time[0] = ready.settle_connected()
        if src.closed:
            ready.transport.close()
            return
        dst.pending = ready.buffered  # what the server said first goes to the client first
        dst.eof = ready.eof
        dst.adopt(ready.transport, False)  # the probe's connection was never counted
        ready.transport.resume_reading()
        link()

    async def connect() -> None:
        try:
            await open_connection(stage.connector, target, lambda: dst)
        except (OSError, TimeoutError, ProxyError) as exc:
            err = connect_error(exc)
            unreached[0] = True
            if target.service is not None:
                target.service.settle(target, time.perf_counter() - started, SETTLE_FAILED)
            log.warning("opaque connection failed", direction=stage.direction, client=_fmt(meta.client),
                        upstream=str(target), error=err.reason, protocol=_KIND_NAMES.get(kind, "opaque"))
            src.close()
            return
        connect_time[0] = max(time.perf_counter() - started, 1e-6)
        if src.closed:
            dst.close()
            return
        if target.needs_header and dst.transport is not None:
            # A peer proxy: tell it which app port these raw bytes are for.
            dst.transport.write(transport_header.encode(target.mesh_port, transport_header.PROTO_OPAQUE))
        link()

    def start_connect() -> None:
        task = ctx.loop.create_task(connect())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    if probe is not None and not probe.closed:
        if probe.ready:
            adopt(probe)
        else:
            probe.on_ready = adopt
        return
    start_connect()


_TASKS: set[asyncio.Task] = set()


def _fmt(addr: tuple) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else ""
