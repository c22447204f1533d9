"""The admin HTTP server: /live /ready /metrics /proxy-log-level /config, and /shutdown when enabled.

Small and separate from the data path: it parses with the same fast-path
parser, answers pipelined requests in order, and never proxies. It is
reachable by the pod's neighbours (``0.0.0.0:4191`` by default), so every
peer is held to limits: a request head must arrive whole within
``MESHPROXY_HEADER_TIMEOUT`` (else 408), an idle connection is closed after
``MESHPROXY_CLIENT_IDLE_TIMEOUT``, and a client that does not read its
responses stops being served (and read) once ``MESHPROXY_WRITE_BUFFER_HIGH``
bytes wait for it. ``/shutdown`` exists only when
``MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED`` is true, and is honoured only from
loopback clients even then.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import cast

from proxy.config import Config
from proxy.protocol.http1 import NEED_MORE, ParseError, RequestHead, parse_request_head
from proxy.record import record
from proxy.telemetry import logging as plog
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.admin")

MAX_HEAD = 16 * 1024
MAX_BODY = 1024
# One whole request fits in this many bytes; more unparsed input than that
# (plus one read) is never held: reading pauses until the requests are answered.
MAX_REQUEST = MAX_HEAD + MAX_BODY


class AdminHooks:
    """What the admin server can ask of the running proxy."""

    __slots__ = ("is_ready", "metrics", "shutdown", "config")

    def __init__(self, is_ready: Callable[[], bool], metrics: Callable[[], bytes], shutdown: Callable[[], None],
                 config: Callable[[], dict]) -> None:
        self.is_ready = is_ready
        self.metrics = metrics
        self.shutdown = shutdown
        self.config = config


@record
class AdminSettings:
    """The admin listener's switches and limits (from the proxy's settings)."""

    shutdown_enabled: bool = False
    header_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_high: int = 256 * 1024

    @classmethod
    def from_config(cls, config: Config) -> AdminSettings:
        limits = config.limits
        return cls(config.shutdown_endpoint_enabled, limits.header_timeout, limits.client_idle_timeout,
                   limits.write_buffer_high)


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
    """One admin connection: requests answered in order, within the limits above."""

    def __init__(self, hooks: AdminHooks, settings: AdminSettings | None = None) -> None:
        self.hooks = hooks
        self.settings = settings or AdminSettings()
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.buf = b""
        self.pos = 0  # start of the unparsed input in ``buf`` (no copy per pipelined request)
        self.client = ""
        self.writing_paused = False
        self.reading_paused = False
        self.head_timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.last_active = 0.0

    # -- asyncio protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport, by shape
        peer = transport.get_extra_info("peername") or ("", 0)
        self.client = peer[0]
        settings = self.settings
        # pause_writing past the high-water mark: nothing more is answered (or read) until it drains.
        self.transport.set_write_buffer_limits(settings.write_high, settings.write_high // 4)
        self.loop = asyncio.get_running_loop()
        self.last_active = self.loop.time()
        if settings.idle_timeout > 0:
            self.idle_timer = self.loop.call_later(settings.idle_timeout, self._idle_check)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time() if self.loop is not None else 0.0
        if self.pos:
            self.buf = self.buf[self.pos:] + data
            self.pos = 0
        else:
            self.buf += data
        self._serve()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._set_reading(False)
        self._cancel_head_timer()  # the wait is the client's reading, not its sending

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.loop is not None:
            self.last_active = self.loop.time()
        self._serve()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.transport = None
        self.buf = b""
        self.pos = 0

    # -- requests ----------------------------------------------------------------
    def _serve(self) -> None:
        """Answer every complete request in the buffer, until the client must read first."""
        transport = self.transport
        while transport is not None and not transport.is_closing() and not self.writing_paused:
            window = self.buf if self.pos == 0 else self.buf[self.pos:self.pos + MAX_REQUEST]
            if not window:
                self._cancel_head_timer()
                break
            try:
                head = parse_request_head(window, MAX_HEAD)
            except ParseError as err:
                self._finish(_response(err.status, "Bad Request", f"{err.reason}\n".encode(), close=True))
                return
            if head is NEED_MORE:
                self._arm_head_timer()
                break
            assert isinstance(head, RequestHead)  # the only other answer
            self._cancel_head_timer()
            length = max(head.content_length, 0)
            if head.chunked or length > MAX_BODY:
                self._finish(_response(413, "Content Too Large", b"admin request bodies are limited to 1 KiB\n",
                                       close=True))
                return
            end = head.consumed + length
            if len(window) < end:
                break  # the body is still coming (bounded by the idle timeout)
            body = window[head.consumed:end]
            self.pos += end
            if self.pos >= len(self.buf):
                self.buf, self.pos = b"", 0
            transport.write(self.handle(head.method, head.target.split(b"?", 1)[0], body, not head.keep_alive))
            if not head.keep_alive:
                transport.close()
                return
        # Read more only while little is waiting: one request's worth, and nothing queued for the client.
        self._set_reading(not self.writing_paused and len(self.buf) - self.pos <= MAX_REQUEST)

    def _finish(self, response: bytes) -> None:
        if self.transport is not None:
            self.transport.write(response)
            self.transport.close()

    def _set_reading(self, on: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or on != self.reading_paused:
            return
        self.reading_paused = not on
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # -- timers ------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self.head_timer is None and self.loop is not None and self.settings.header_timeout > 0:
            self.head_timer = self.loop.call_later(self.settings.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        log.info("admin request head not received in time: 408", client=self.client,
                 header_timeout_s=self.settings.header_timeout)
        self._finish(_response(408, "Request Timeout", b"request head not received in time\n", close=True))

    def _idle_check(self) -> None:
        """Re-armed for the time left since the last activity rather than reset on every read."""
        self.idle_timer = None
        if self.transport is None or self.loop is None:
            return
        left = self.last_active + self.settings.idle_timeout - self.loop.time()
        if left > 0:
            self.idle_timer = self.loop.call_later(left, self._idle_check)
            return
        log.debug("admin connection closed: idle", client=self.client, idle_timeout_s=self.settings.idle_timeout)
        self.transport.abort()

    # -- routes ------------------------------------------------------------------
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
        if path == b"/shutdown" and self.settings.shutdown_enabled:
            if method != b"POST":
                return _response(405, "Method Not Allowed", b"use POST\n", close=close)
            if not is_loopback(self.client):
                log.warning("shutdown refused: not from loopback", client=self.client)
                return _response(403, "Forbidden", b"shutdown is only accepted from loopback\n", close=close)
            log.info("shutdown requested through the admin port", client=self.client)
            asyncio.get_running_loop().call_soon(hooks.shutdown)
            return _response(200, "OK", b"shutdown\n", close=close)
        if path == b"/shutdown":
            log.debug("shutdown endpoint disabled (MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED=false): 404",
                      client=self.client)
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
            import json  # for this page only: an idle proxy does not keep the module

            body_out = json.dumps(hooks.config(), indent=2, sort_keys=True).encode() + b"\n"
            return _response(200, "OK", body_out, "application/json", close=close)
        return _response(404, "Not Found", b"not found\n", close=close)
