"""Apps for the real-clients matrix on Python's servers: http.server (HTTP/1.0 responses, bodies delimited by
the close), a WSGI app for gunicorn and an ASGI app for uvicorn, with the routes of app.js beside this file.

``python pyapps.py http10 PORT`` runs the http.server one; gunicorn and uvicorn import ``wsgi`` and ``asgi``.
"""

from __future__ import annotations

import hashlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def pattern(n: int) -> bytes:
    """Byte i is i % 251, as in app.js and client.js."""
    whole, rest = divmod(n, 251)
    return bytes(range(251)) * whole + bytes(range(rest))


def route(method: str, target: str, body: bytes) -> tuple[int, bytes]:
    """(status, body) for one request; the same table as app.js."""
    url = urlsplit(target)
    if url.path == "/small":
        return 200, b"ok"
    if url.path == "/upload" and method in ("POST", "PUT"):
        return 200, f"{hashlib.sha256(body).hexdigest()} {len(body)}".encode()
    if url.path == "/download":
        return 200, pattern(int(parse_qs(url.query).get("n", ["0"])[0]))
    if url.path.startswith("/status/"):
        return int(url.path[len("/status/"):]), b""
    return 404, b"not found"


class Http10Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 answers: no Content-Length on downloads, so the close ends the body."""

    protocol_version = "HTTP/1.0"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, out = route(self.command, self.path, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if not self.path.startswith("/download"):
            self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    body = stream.read(length) if length else stream.read()  # gunicorn decodes a chunked body
    target = environ.get("PATH_INFO", "/") + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
    status, out = route(environ["REQUEST_METHOD"], target, body)
    start_response(f"{status} X", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(out)))])
    return [out]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    target = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
    status, out = route(scope["method"], target, b"".join(parts))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), Http10Handler)
    print("listening", flush=True)
    server.serve_forever()
