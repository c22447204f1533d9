"""Server-speaks-first without configuration: connect a silent client's target early, in case its server talks first.

Protocol detection waits for the client's first bytes, which a
server-speaks-first protocol (SMTP, MySQL, a banner) never sends: without
help such a connection waits for the whole detect timeout, and Linkerd users
must list every such port as opaque. Instead, once a client has been silent
for ``MESHPROXY_SERVER_FIRST_PROBE`` (50 ms by default; real clients of
client-first protocols write with the connect), the accept stage opens the
connection it would relay to anyway and listens:

- the server speaks first: the connection is opaque, relayed at once with
  what the server said;
- the client speaks first: detection goes on as usual, and the probe's
  connection becomes the opaque relay's upstream if that is what detection
  decides, or is closed (HTTP, HTTP/2 and TLS have upstreams of their own).

The cost: one upstream connection opened and closed for a client-first
connection that stays silent longer than the probe delay (a browser's
preconnect, say), which its server sees as a connection without a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from proxy.core.addr import Target
from proxy.errors import ProxyError
from proxy.exchange.core import SETTLE_CANCELLED
from proxy.protocol import transport_header
from proxy.telemetry.logging import get_logger
from proxy.transport.connect import open_connection

log = get_logger("proxy.accept")

_TASKS: set[asyncio.Task] = set()


class Probe(asyncio.Protocol):
    """The early connection to a silent client's target: it holds what the server says until someone takes it."""

    __slots__ = ("target", "transport", "buffered", "eof", "closed", "used", "on_speak", "on_ready", "connected_at",
                 "started")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.buffered = b""
        self.eof = False
        self.closed = False
        self.used = False
        # Called once when the server sends its first bytes (or closes) unasked.
        self.on_speak: Callable[[Probe], None] | None = None
        # Called once when the connection is up (or failed), for a relay waiting on it.
        self.on_ready: Callable[[Probe], None] | None = None
        self.started = time.perf_counter()
        self.connected_at = 0.0

    def start(self, connector) -> None:
        async def connect() -> None:
            try:
                await open_connection(connector, self.target, lambda: self)
            except (OSError, TimeoutError, ProxyError) as exc:
                log.debug("server-first probe could not connect", upstream=str(self.target), error=str(exc))
                self._failed()

        task = asyncio.get_running_loop().create_task(connect())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    # -- asyncio protocol (until a tunnel adopts the transport) -----------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport, by shape
        self.connected_at = time.perf_counter()
        if self.closed:
            transport.close()
            return
        target = self.target
        if target.needs_header:
            # A peer proxy: these bytes are opaque, relay them without detection.
            self.transport.write(transport_header.encode(target.mesh_port, transport_header.PROTO_OPAQUE))
        self._ready()

    def data_received(self, data: bytes) -> None:
        self.buffered += data
        # One read is all it takes to know; the rest waits in the socket.
        self.transport.pause_reading()  # type: ignore[union-attr]
        self._spoke()

    def eof_received(self) -> bool:
        self.eof = True
        self._spoke()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.used:
            self.closed = True
            self._spoke()

    def _failed(self) -> None:
        self.closed = True
        self._settle()
        self._ready()

    def _ready(self) -> None:
        callback, self.on_ready = self.on_ready, None
        if callback is not None:
            callback(self)

    def _spoke(self) -> None:
        callback, self.on_speak = self.on_speak, None
        if callback is not None and not self.used:
            callback(self)

    # -- what the accept stage does with it -----------------------------------------
    @property
    def ready(self) -> bool:
        return self.transport is not None or self.closed

    def take(self) -> None:
        """The opaque relay adopts this connection (and what the server said)."""
        self.used = True
        self.on_speak = None

    def discard(self) -> None:
        """Not needed after all: close it and give the balancer its pick back."""
        if self.used or self.closed:
            return
        self.closed = True
        self.on_speak = self.on_ready = None
        self._settle()
        if self.transport is not None:
            self.transport.abort()

    def settle_connected(self) -> float:
        """The connect time, for the balancer (0 when it never connected)."""
        return max(self.connected_at - self.started, 1e-6) if self.connected_at else 0.0

    def _settle(self) -> None:
        target = self.target
        if target.service is not None and not self.used:
            target.service.settle(target, 0.0, SETTLE_CANCELLED)
