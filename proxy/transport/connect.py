"""Opening upstream connections: one task per new connection, bounded by the connect timeout.

The relay's pools call ``Connector`` with a ready protocol object; the
connector resolves and connects, and reports a failure back to the protocol
(``connect_failed``) instead of raising into the relay's callbacks.

A target that names a peer identity gets mutual TLS when this proxy has an
identity (the handshake is part of connecting, under the same time limit);
everything else is a plain connection. TLS that an app originates itself
is never touched: it reaches the connector as opaque bytes.
"""

from __future__ import annotations

import asyncio
import ssl

from proxy.errors import IdentityError, tls_reason


class Connector:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, identity=None, tls_stats=None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.identity = identity  # LocalIdentity or None
        self.tls_stats = tls_stats
        self.pending: set[asyncio.Task] = set()

    def __call__(self, target, protocol) -> None:
        task = self.loop.create_task(self._connect(target, protocol))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _connect(self, target, protocol) -> None:
        try:
            await open_connection(self, target, lambda: protocol)
        except (OSError, TimeoutError, IdentityError) as exc:
            protocol.connect_failed(exc)
        except asyncio.CancelledError:
            protocol.connect_failed(TimeoutError("cancelled"))
            raise

    def tls_for(self, target) -> ssl.SSLContext | None:
        """The client context for ``target``: None for plaintext; raises IdentityError when
        TLS is due but this proxy has no certificate yet."""
        if target.identity is None or self.identity is None:
            return None
        mesh = self.identity.tls
        if mesh is None:
            raise IdentityError("no identity certificate yet: cannot open mutual TLS to a meshed peer")
        return mesh.client_transport if target.needs_header else mesh.client_h2


async def open_connection(connector: Connector, target, factory):
    """Connect to ``target`` (TLS when it is a meshed peer), within the connect timeout."""
    ctx = connector.tls_for(target)
    async with asyncio.timeout(connector.timeout):
        if ctx is None:
            return await connector.loop.create_connection(factory, target.host, target.port)
        try:
            result = await connector.loop.create_connection(
                factory, target.host, target.port, ssl=ctx, server_hostname=target.identity,
                ssl_handshake_timeout=connector.timeout)
        except ssl.SSLError as err:
            if connector.tls_stats is not None:
                connector.tls_stats.failed(tls_reason(err))
            raise
    if connector.tls_stats is not None:
        connector.tls_stats.connected(target.identity)
    return result

