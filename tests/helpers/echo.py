"""An HTTP/1.1 backend for policy tests that answers with what it received (name, method, path, Host, body size).

``stop`` closes the listener and every open connection at once, as a killed
process would (a plain ThreadingHTTPServer keeps serving its keep-alive
connections after ``shutdown``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        length = self.headers.get("content-length")
        if length is not None:
            body = self.rfile.read(int(length))
        elif self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = b""
        seen = {"name": server.name, "method": self.command, "path": self.path,
                "host": self.headers.get("host"), "body": len(body)}
        with server.lock:
            server.seen.append(seen)
        if server.delay:
            time.sleep(server.delay)
        out = json.dumps(seen).encode()
        self.send_response(server.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.open: set[socket.socket] = set()

    def get_request(self):
        sock, addr = super().get_request()
        with self.lock:
            self.open.add(sock)
        return sock, addr

    def shutdown_request(self, request) -> None:
        with self.lock:
            self.open.discard(request)
        super().shutdown_request(request)


class EchoBackend:
    """``status`` answers every request with it; ``delay`` seconds before each answer."""

    def __init__(self, name: str, status: int = 200, delay: float = 0.0, port: int = 0) -> None:
        self.name = name
        server = _Server.__new__(_Server)
        server.lock = threading.Lock()
        server.seen = []
        server.name, server.status, server.delay = name, status, delay
        _Server.__init__(server, port)
        self.server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def seen(self) -> list[dict]:
        with self.server.lock:
            return list(self.server.seen)

    def stop(self) -> None:
        """Gone at once: no listener, every connection closed."""
        self.server.shutdown()
        self.server.server_close()
        with self.server.lock:
            socks = list(self.server.open)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
