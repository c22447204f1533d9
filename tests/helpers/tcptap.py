"""A recording TCP relay: put it in front of a server to keep every byte a client sent it.

Servers built on a protocol library (``h2server.H2Origin``) see parsed
events, not bytes; a test that must judge the bytes themselves (did the
proxy forward a malformed HTTP/2 header block?) points the proxy at this
relay instead. Each accepted connection is relayed both ways to ``target``
and what the client sent is kept in order, per connection, with marks for
cutting it into windows the way ``rawbackend`` does.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from .servers import MAX_WAIT, ServerConn, TcpServer


class TapConn:
    """One relayed connection: ``up`` holds every byte the client sent."""

    def __init__(self, conn: ServerConn) -> None:
        self.conn = conn
        self.up = bytearray()
        self.lock = threading.Lock()

    @property
    def id(self) -> int:
        return self.conn.id

    def sent(self) -> bytes:
        with self.lock:
            return bytes(self.up)


class RecordingTap(TcpServer):
    def __init__(self, target: tuple[str, int], name: str = "tap", **kwargs) -> None:
        self.target = target
        self.taps: dict[int, TapConn] = {}
        self.last_byte_at = 0.0
        super().__init__(name=name, **kwargs)

    def mark(self) -> dict[int, int]:
        with self.changed:
            taps = list(self.taps.values())
        return {t.id: len(t.sent()) for t in taps}

    def connections(self) -> list[TapConn]:
        with self.changed:
            return list(self.taps.values())

    def wait_quiet(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            idle = time.monotonic() - self.last_byte_at
            if idle >= quiet:
                return
            time.sleep(quiet - idle)

    def handle(self, conn: ServerConn) -> None:
        tap = TapConn(conn)
        with self.changed:
            self.taps[conn.id] = tap
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            return
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.monotonic() + MAX_WAIT * 4
        try:
            while not self.stopping.is_set() and time.monotonic() < end:
                readable, _, _ = select.select([conn.sock, upstream], [], [], 0.1)
                for sock in readable:
                    try:
                        data = sock.recv(1 << 16)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    if sock is conn.sock:
                        with tap.lock:
                            tap.up += data
                        self.last_byte_at = time.monotonic()
                        upstream.sendall(data)
                    else:
                        conn.sock.sendall(data)
        finally:
            upstream.close()
