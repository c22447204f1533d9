"""Servers for whole-proxy tests: threaded, raw sockets, loopback only.

The base ``TcpServer`` and the non-HTTP peers live here (a never-answering
server, a port whose connects hang, a TCP echo with half-close, a WebSocket
echo); the HTTP/1.1 upstream built on ``TcpServer`` is in ``upstream``.

Every server records what it accepted and every byte each connection
received, so a test can assert on the upstream's side what the proxy
forwarded (or that it forwarded nothing). All waits are bounded and
``stop()`` closes every socket and joins every thread it started.
"""

from __future__ import annotations

import hashlib
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from . import wire
from .wire import Request, Stream, deadline_in

MAX_WAIT = 30.0  # upper bound for anything a handler waits for


def det_bytes(count: int, seed: int = 0) -> bytes:
    """``count`` pseudo-random bytes, the same for the same (count, seed)."""
    return random.Random(count * 7919 + seed).randbytes(count)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def response_bytes(
    status: int,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    reason: str | None = None,
    length: bool = True,
) -> bytes:
    reasons = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
               304: "Not Modified", 400: "Bad Request", 404: "Not Found",
               500: "Internal Server Error", 503: "Service Unavailable"}
    headers = list(headers or [])
    if length and status >= 200 and status not in (204, 304):
        if not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers):
            headers.append(("Content-Length", str(len(body))))
    lines = [f"HTTP/1.1 {status} {reason if reason is not None else reasons.get(status, 'Status')}"]
    lines += [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ServerConn:
    """One accepted connection; ``stream.received`` holds every byte it got."""

    def __init__(self, server: TcpServer, sock: socket.socket, conn_id: int) -> None:
        self.server = server
        self.sock = sock
        self.id = conn_id
        self.peer = sock.getpeername()
        self.stream = Stream(sock)
        self.requests: list[Request] = []
        self.idle_timeout = server.idle_timeout
        self.closed = threading.Event()

    @property
    def received(self) -> bytes:
        return bytes(self.stream.received)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(MAX_WAIT)
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.closed.set()


class TcpServer:
    """Accept loop plus one thread per connection running ``handler(conn)``."""

    def __init__(
        self,
        handler: Callable[[ServerConn], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 128,
        name: str = "upstream",
        idle_timeout: float = MAX_WAIT,
    ) -> None:
        self.handler = handler or self.handle
        self.name = name
        self.idle_timeout = idle_timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(backlog)
        self.listener.settimeout(0.1)
        self.host, self.port = self.listener.getsockname()[:2]
        self.conns: list[ServerConn] = []
        self.stopping = threading.Event()
        self.changed = threading.Condition()
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    # -- addresses -----------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -- what happened -------------------------------------------------------
    @property
    def accept_count(self) -> int:
        with self.changed:
            return len(self.conns)

    def received(self) -> bytes:
        """Every byte received on every connection, in accept order."""
        with self.changed:
            conns = list(self.conns)
        return b"".join(c.received for c in conns)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        end = deadline_in(timeout)
        with self.changed:
            while not predicate():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(min(remaining, 0.05))
        return True

    def wait_accepts(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda: len(self.conns) >= count, timeout)

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- lifecycle -------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.changed:
                conn = ServerConn(self, sock, len(self.conns) + 1)
                self.conns.append(conn)
                self.changed.notify_all()
            thread = threading.Thread(target=self._run, args=(conn,), name=f"{self.name}-conn{conn.id}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn: ServerConn) -> None:
        try:
            self.handler(conn)
        except (OSError, TimeoutError, wire.WireError) as err:
            if not self.stopping.is_set():
                self.errors.append(f"conn {conn.id}: {type(err).__name__}: {err}")
        except Exception as err:  # recorded so a test can see a helper bug
            self.errors.append(f"conn {conn.id}: {type(err).__name__}: {err}")
        finally:
            conn.close()
            self.notify()

    def handle(self, conn: ServerConn) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.changed:
            conns = list(self.conns)
        for conn in conns:
            conn.close()
        end = deadline_in(5.0)
        self._acceptor.join(max(0.0, end - time.monotonic()))
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def hold(conn: ServerConn, limit: float = MAX_WAIT) -> None:
    """Read (and keep) whatever arrives, answer nothing, until EOF or stop."""
    end = deadline_in(limit)
    server = conn.server
    while not server.stopping.is_set() and time.monotonic() < end:
        readable, _, _ = select.select([conn.sock], [], [], 0.1)
        if readable and not conn.stream.fill(end):
            return


class SilentServer(TcpServer):
    """Accepts and reads, never writes a byte: the upstream that never answers."""

    def handle(self, conn: ServerConn) -> None:
        hold(conn)


class StuckListener:
    """A port whose accept queue is full, so a new connect() hangs (no SYN-ACK).

    Used for connect timeouts on loopback: listen(0) plus one held client
    connection fills the queue and the kernel drops further SYNs.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(0)
        self.host, self.port = self.listener.getsockname()[:2]
        self.fillers = []
        for _ in range(3):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(0.3)
            try:
                sock.connect(self.address)
                self.fillers.append(sock)
            except (TimeoutError, OSError):
                sock.close()
                break
        if not self.fillers:
            raise RuntimeError("could not fill the accept queue")

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        for sock in self.fillers:
            sock.close()
        self.listener.close()


# ---------------------------------------------------------------------------
# opaque TCP


class TcpEchoServer(TcpServer):
    """Echoes every byte. ``banner`` is sent first on accept (a server-first
    protocol); on the client's half-close it sends ``bye`` and half-closes
    too, so a test can see both directions of a half-close cross the proxy."""

    def __init__(self, banner: bytes | None = None, bye: bytes | None = b"BYE\n", **kwargs: Any) -> None:
        self.banner = banner
        self.bye = bye
        self.eof_seen = threading.Event()
        super().__init__(**kwargs)

    def handle(self, conn: ServerConn) -> None:
        if self.banner:
            conn.send(self.banner)
        conn.stream.keep = True
        end = deadline_in(MAX_WAIT * 2)
        while True:
            before = len(conn.stream.buf)
            if not conn.stream.fill(end, 1 << 18):
                break
            data = bytes(conn.stream.buf[before:])
            conn.stream.buf.clear()
            conn.send(data)
        self.eof_seen.set()
        self.notify()
        if self.bye:
            conn.send(self.bye)
        conn.sock.shutdown(socket.SHUT_WR)
        # Let the peer read everything before the close.
        self.stopping.wait(0.5)


# ---------------------------------------------------------------------------
# WebSocket


class WsEchoServer:
    """A WebSocket echo server (the ``websockets`` sync server), loopback only.

    ``request_heads`` keeps the handshake request headers it received."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        from websockets.sync.server import serve

        self.request_heads: list[list[tuple[str, str]]] = []

        def record(connection: Any, request: Any) -> None:
            self.request_heads.append(list(request.headers.raw_items()))
            return None

        def echo(ws: Any) -> None:
            for message in ws:
                ws.send(message)

        self.server = serve(echo, host, 0, process_request=record, max_size=16 << 20)
        self.host, self.port = self.server.socket.getsockname()[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ws-echo", daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
