"""The admin HTTP server: /live /ready /metrics /shutdown /proxy-log-level /config.

Small and separate from the data path: it parses with the same fast-path
parser, answers one request at a time per connection, and never proxies.
``/shutdown`` is honoured only from loopback clients, so that a pod's
neighbours cannot stop its proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from proxy.protocol.http1 import NEED_MORE, ParseError, parse_request_head
from proxy.telemetry import logging as plog

log = structlog.get_logger("proxy.admin")

MAX_HEAD = 16 * 1024
MAX_BODY = 1024


@dataclass(slots=True)
class AdminHooks:
    """What the admin server can ask of the running proxy."""

    is_ready: Callable[[], bool]
    metrics: Callable[[], bytes]
    shutdown: Callable[[], None]
    config: Callable[[], dict]


def _response(status: int, phrase: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
        + ("connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body


def is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class AdminProtocol(asyncio.Protocol):
    def __init__(self, hooks: AdminHooks) -> None:
        self.hooks = hooks
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.client = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.client = peer[0]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            try:
                head = parse_request_head(self.buf, MAX_HEAD)
            except ParseError as err:
                self._send(_response(err.status, "Bad Request", f"{err.reason}\n".encode(), close=True))
                self.transport.close()
                return
            if head is NEED_MORE:
                return
            length = max(head.content_length, 0)
            if head.chunked or length > MAX_BODY:
                self._send(_response(413, "Content Too Large", b"admin request bodies are limited to 1 KiB\n",
                                     close=True))
                self.transport.close()
                return
            end = head.consumed + length
            if len(self.buf) < end:
                return
            body = self.buf[head.consumed:end]
            self.buf = self.buf[end:]
            self._send(self.handle(head.method, head.target.split(b"?", 1)[0], body, not head.keep_alive))
            if not head.keep_alive:
                self.transport.close()

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def handle(self, method: bytes, path: bytes, body: bytes, close: bool) -> bytes:
        hooks = self.hooks
        if path == b"/live":
            return _response(200, "OK", b"live\n", close=close)
        if path == b"/ready":
            if hooks.is_ready():
                return _response(200, "OK", b"ready\n", close=close)
            return _response(503, "Service Unavailable", b"not ready\n", close=close)
        if path == b"/metrics":
            from proxy.telemetry.metrics import CONTENT_TYPE

            return _response(200, "OK", hooks.metrics(), CONTENT_TYPE, close=close)
        if path == b"/shutdown":
            if method != b"POST":
                return _response(405, "Method Not Allowed", b"use POST\n", close=close)
            if not is_loopback(self.client):
                log.warning("shutdown refused: not from loopback", client=self.client)
                return _response(403, "Forbidden", b"shutdown is only accepted from loopback\n", close=close)
            log.info("shutdown requested through the admin port", client=self.client)
            asyncio.get_running_loop().call_soon(hooks.shutdown)
            return _response(200, "OK", b"shutdown\n", close=close)
        if path == b"/proxy-log-level":
            if method == b"GET":
                return _response(200, "OK", f"{plog.current_level()}\n".encode(), close=close)
            if method in (b"PUT", b"POST"):
                try:
                    plog.set_level(body.decode("ascii", "replace"))
                except ValueError as err:
                    return _response(400, "Bad Request", f"{err}\n".encode(), close=close)
                log.info("log level changed", level=plog.current_level(), client=self.client)
                return _response(204, "No Content", b"", close=close)
            return _response(405, "Method Not Allowed", b"use GET or PUT\n", close=close)
        if path == b"/config":
            body_out = json.dumps(hooks.config(), indent=2, sort_keys=True).encode() + b"\n"
            return _response(200, "OK", body_out, "application/json", close=close)
        return _response(404, "Not Found", b"not found\n", close=close)
