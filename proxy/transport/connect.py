"""Opening upstream connections: one task per new connection, bounded by the connect timeout.

The relay's pools call ``Connector`` with a ready protocol object; the
connector resolves and connects, and reports a failure back to the protocol
(``connect_failed``) instead of raising into the relay's callbacks.
"""

from __future__ import annotations

import asyncio


class Connector:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.pending: set[asyncio.Task] = set()

    def __call__(self, target, protocol) -> None:
        task = self.loop.create_task(self._connect(target.host, target.port, protocol))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _connect(self, host: str, port: int, protocol) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                transport, _ = await self.loop.create_connection(lambda: protocol, host, port)
        except (OSError, TimeoutError) as exc:
            protocol.connect_failed(exc)
            return
        except asyncio.CancelledError:
            protocol.connect_failed(TimeoutError("cancelled"))
            raise
