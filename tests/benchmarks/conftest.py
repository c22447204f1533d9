"""Fixtures for the benchmark harness tests: a run CA and a throwaway TLS server on loopback."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator

import pytest

from benchmarks.lib import meshtls

OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> meshtls.MeshCerts:
    return meshtls.make(tmp_path_factory.mktemp("certs"))


class TlsServer:
    """Python's ssl module terminating TLS 1.3 with ``leaf``; every connection reads one
    request head, writes ``reply`` and closes. Records the SNI names and whether a
    session was ever resumed."""

    def __init__(self, leaf: meshtls.Leaf, reply: bytes = OK_REPLY, tls: bool = True) -> None:
        self.reply, self.tls = reply, tls
        self.server_names: list[str | None] = []
        self.handshakes = 0
        self.resumed = 0
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(str(leaf.chain), str(leaf.key))
        self.ctx.sni_callback = lambda obj, name, ctx: self.server_names.append(name)
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        try:
            conn = self.ctx.wrap_socket(sock, server_side=True) if self.tls else sock
            if self.tls:
                with self._lock:
                    self.handshakes += 1
                    self.resumed += bool(conn.session_reused)
            data = b""
            # Without TLS, whatever came (a ClientHello) gets the HTTP answer at once.
            while b"\r\n\r\n" not in data and (self.tls or not data):
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(self.reply)
            conn.close()
        except (OSError, ssl.SSLError):
            pass  # the load tool abandons its last connections when its time is up

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def tls_server(certs: meshtls.MeshCerts) -> Iterator:
    """``tls_server(reply=..., tls=...)`` starts a server with B's certificate; all are closed after the test."""
    started: list[TlsServer] = []

    def start(reply: bytes = OK_REPLY, tls: bool = True) -> TlsServer:
        server = TlsServer(certs[meshtls.SERVER_ID], reply, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()

