"""Binding listeners: TCP servers on configured addresses, closed on drain."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from proxy.config import HostPort

BACKLOG = 4096


async def listen(loop: asyncio.AbstractEventLoop, addr: HostPort,
                 factory: Callable[[], asyncio.Protocol]) -> asyncio.Server:
    """Bind ``addr`` (port 0 picks a free one) and serve ``factory`` protocols."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((addr.host, addr.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return await loop.create_server(factory, sock=sock, backlog=BACKLOG)


def bound_address(server: asyncio.Server) -> HostPort:
    host, port = server.sockets[0].getsockname()[:2]
    return HostPort(host, port)


def listener_address(server) -> tuple[str, int] | None:
    """A listening server's own address when it is bound to one address (its every connection's local
    address); None for a wildcard (``0.0.0.0``, ``::``) or more than one socket."""
    sockets = server.sockets
    if len(sockets) != 1:
        return None
    host, port = sockets[0].getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        return None
    return host, port
