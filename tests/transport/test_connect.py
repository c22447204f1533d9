"""Tests of proxy/transport/connect.py's socket connect: no resolver thread for a numeric address."""

from __future__ import annotations

import os
import socket

import pytest
import uvloop

from proxy.transport.connect import sock_connect
from tests.helpers.ports import free_port


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _connect(port: int) -> socket.socket:
    async def main() -> socket.socket:
        import asyncio

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await sock_connect(asyncio.get_running_loop(), sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return sock

    return uvloop.run(main())


def test_connects_without_starting_a_thread():
    """uvloop's sock_connect would start libuv's four resolver threads at the first connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        before = _threads()
        sock = _connect(server.getsockname()[1])
        try:
            peer, _ = server.accept()
            peer.close()
            assert sock.getpeername() == server.getsockname()
        finally:
            sock.close()
        assert _threads() == before


def test_a_refused_connection_is_connection_refused():
    with pytest.raises(ConnectionRefusedError):
        _connect(free_port())
