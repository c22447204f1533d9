"""Sends finished spans to an OTLP collector in batches, over gRPC or HTTP/protobuf, never blocking a request.

``offer`` is all a request pays: an append to a buffer bounded by
``MESHPROXY_TRACE_MAX_BUFFERED_SPANS`` (a full buffer drops the span and
counts it). A batch leaves when ``MESHPROXY_TRACE_BATCH_SIZE`` spans wait or
``MESHPROXY_TRACE_BATCH_INTERVAL`` after the first one, one export at a time;
an export that fails or outlives ``MESHPROXY_TRACE_EXPORT_TIMEOUT`` drops
its spans (counted) and the next batch tries again. Metrics:
``trace_spans_exported_total``, ``trace_spans_dropped_total{reason}``.

With ``MESHPROXY_TRACE_COLLECTOR_IDENTITY`` the connection (gRPC or HTTP) is mesh TLS:
this proxy's current certificate (the identity's client context, so a
rotated certificate is used from the next connection on, and a kept
connection made with the old one is replaced) and the collector verified to
hold that identity (SNI and DNS SAN), as Linkerd sends spans to a meshed
collector. Until this proxy has a certificate, exports fail and are counted.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import proxy
from proxy.telemetry import otlp, pbwire
from proxy.telemetry.logging import get_logger

if TYPE_CHECKING:
    from proxy.config import TracingSettings
    from proxy.transport.tls import MeshTls

log = get_logger("proxy.tracing")

DROP_REASONS = ("buffer_full", "export_failed")
WARN_INTERVAL = 60.0  # seconds between two "export failed" log lines


class ExportError(Exception):
    """The collector did not take a batch (connection, protocol or status)."""


class HttpTransport:
    """OTLP/HTTP with binary protobuf: ``POST /v1/traces``, one connection per export (exports are infrequent).

    Plaintext, or mesh TLS when ``identity`` (the collector's) is given, as for gRPC: this proxy's current
    certificate, ALPN ``http/1.1``, the collector verified to hold that identity."""

    def __init__(self, host: str, port: int, path: str, identity: str | None = None,
                 mesh_tls: Callable[[], MeshTls | None] | None = None) -> None:
        self.host, self.port, self.path = host, port, path
        self.identity = identity
        self.mesh_tls = mesh_tls
        self._tls: tuple[MeshTls, ssl.SSLContext] | None = None  # the current certificate and its context

    def _context(self) -> ssl.SSLContext:
        current = _current_tls(self.mesh_tls)
        if self._tls is None or self._tls[0] is not current:  # first use, or the certificate rotated
            self._tls = (current, current.client(["http/1.1"]))
        return self._tls[1]

    async def export(self, payload: bytes) -> None:
        if self.identity is not None:
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._context(),
                                                           server_hostname=self.identity)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            head = (f"POST {self.path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-protobuf\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\nUser-Agent: meshproxy/"
                    f"{proxy.__version__}\r\n\r\n")
            writer.write(head.encode("latin-1") + payload)
            line = await reader.readline()
            parts = line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ExportError(f"not an HTTP response: {line[:80]!r}")
            status = int(parts[1])
            if not 200 <= status < 300:
                raise ExportError(f"collector answered HTTP {status}")
        finally:
            writer.close()


def _current_tls(mesh_tls: Callable[[], MeshTls | None] | None) -> MeshTls:
    current = mesh_tls() if mesh_tls is not None else None
    if current is None:
        raise ExportError("no identity certificate yet: spans go to the collector over mutual TLS only")
    return current


class GrpcTransport:
    """OTLP/gRPC: ``TraceService/Export`` over one kept HTTP/2 connection, re-opened when it fails.

    h2c, or mesh TLS when ``identity`` (the collector's) is given: ``mesh_tls()``
    answers this proxy's current ``MeshTls`` (None while it has no certificate).
    The HTTP/2 is the proxy's own compiled client side (``proxy.protocol.h2conn``).
    """

    def __init__(self, host: str, port: int, identity: str | None = None,
                 mesh_tls: Callable[[], MeshTls | None] | None = None) -> None:
        self.host, self.port = host, port
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.identity = identity
        self.mesh_tls = mesh_tls
        self.scheme = b"https" if identity is not None else b"http"
        self._conn: Any = None  # an h2conn.H2Connection while connected
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tls: MeshTls | None = None  # the certificate the kept connection was made with

    async def _open(self) -> None:
        from proxy.protocol import h2conn

        if self.identity is not None:
            mesh = _current_tls(self.mesh_tls)
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=mesh.client_h2, server_hostname=self.identity)
            self._tls = mesh
        else:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        conn = h2conn.H2Connection(True, h2conn.H2Settings())
        conn.initiate()
        self._writer.write(conn.data_to_send())
        self._conn = conn

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._conn = self._reader = self._writer = None
        self._tls = None

    async def export(self, payload: bytes) -> None:
        if self._conn is not None and self.identity is not None and self._tls is not _current_tls(self.mesh_tls):
            self.close()  # the certificate rotated: the next connection presents the new one
        reused = self._conn is not None
        try:
            await self._export(payload)
        except (OSError, ExportError, asyncio.IncompleteReadError) as err:
            self.close()
            if not reused or isinstance(err, _GrpcStatusError):
                raise
            # A kept connection the collector closed while idle: once more on a new one.
            await self._export(payload)

    async def _export(self, payload: bytes) -> None:
        from proxy.protocol import h2conn

        if self._conn is None:
            await self._open()
        conn, reader, writer = self._conn, self._reader, self._writer
        assert conn is not None and reader is not None and writer is not None
        try:
            sid = conn.send_request(
                [(b":method", b"POST"), (b":scheme", self.scheme), (b":path", otlp.GRPC_PATH),
                 (b":authority", self.authority.encode()), (b"content-type", b"application/grpc"),
                 (b"te", b"trailers"), (b"user-agent", f"meshproxy/{proxy.__version__}".encode())], False)
        except h2conn.H2UsageError as err:  # the collector's GOAWAY or stream limit: a new connection
            raise ExportError(f"collector connection closing: {err}") from None
        body = pbwire.grpc_frame(payload)
        status = None
        fields: list = []
        ended = False
        while True:
            # Send what the flow-control windows allow (the stream ends with the last byte), then read
            # until the stream ends; a window update lets the rest go on the next turn.
            if body:
                body = body[conn.send_data(sid, body, True):]
            writer.write(conn.data_to_send())
            await writer.drain()
            if ended:
                break
            data = await reader.read(65536)
            if not data:
                raise ExportError("collector closed the connection")
            for event in conn.receive_data(data, int(time.monotonic() * 1000)):
                kind = type(event)
                mine = getattr(event, "stream_id", 0) == sid
                if kind is h2conn.ResponseReceived and mine:
                    fields.extend(event.headers)
                    status = _status(event.headers)
                elif kind is h2conn.TrailersReceived and mine:
                    fields.extend(event.headers)
                    ended = True
                elif kind is h2conn.DataReceived:
                    conn.acknowledge_received(event.stream_id, event.flow_controlled_length)
                elif kind is h2conn.StreamReset and mine:
                    raise ExportError(f"collector reset the stream ({event.error_code})")
                elif kind is h2conn.ConnectionTerminated and (event.error_code or event.last_stream_id < sid):
                    raise ExportError("collector closed the connection (GOAWAY)")
                if mine and getattr(event, "end_stream", False):
                    ended = True
            if conn.dead:
                raise ExportError("HTTP/2 protocol error from the collector")
        if status != 200:
            raise ExportError(f"collector answered HTTP {status}")
        code, message = pbwire.grpc_status(fields)
        if code != 0:
            raise _GrpcStatusError(f"collector answered grpc-status {code} {message}".rstrip())


def _status(fields: list) -> int | None:
    for name, value in fields:
        if name == b":status":
            return int(value) if value.isdigit() else None
    return None


class _GrpcStatusError(ExportError):
    """The collector answered and refused the batch: sending it again on a new connection would not help."""


class SpanExporter:
    """The bounded span buffer and the batch loop that empties it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: TracingSettings, transport=None,
                 mesh_tls: Callable[[], MeshTls | None] | None = None) -> None:
        self.loop = loop
        self.settings = settings
        self.transport = transport if transport is not None else _transport(settings, mesh_tls)
        self.resource = otlp.encode_resource(settings.resource)
        self.buffer: collections.deque = collections.deque()
        self.exported = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._warned = -WARN_INTERVAL

    def offer(self, span: otlp.SpanRecord) -> None:
        """A finished span: buffered, or dropped (and counted) when the buffer is full."""
        buffer = self.buffer
        if len(buffer) >= self.settings.max_buffered_spans:
            self.dropped["buffer_full"] += 1
            return
        buffer.append(span)
        if self._task is not None:
            return  # the running export loop takes it
        if len(buffer) >= self.settings.batch_size:
            self._start()
        elif self._timer is None:
            self._timer = self.loop.call_later(self.settings.batch_interval, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None and self.buffer:
            self._task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.buffer:
                batch = [self.buffer.popleft() for _ in range(min(len(self.buffer), self.settings.batch_size))]
                payload = otlp.export_request(self.resource, batch, proxy.__version__)
                try:
                    await asyncio.wait_for(self.transport.export(payload), self.settings.export_timeout)
                except Exception as err:  # whatever went wrong, the batch is lost and counted
                    self.dropped["export_failed"] += len(batch)
                    now = self.loop.time()
                    if now - self._warned >= WARN_INTERVAL:  # a collector that is down is one line a minute
                        self._warned = now
                        log.warning("trace export failed: spans dropped", spans=len(batch),
                                    error=str(err) or repr(err), collector=str(self.settings.collector))
                    if isinstance(self.transport, GrpcTransport):
                        self.transport.close()
                    if not self._closing:
                        break  # the rest waits for the next interval instead of hammering a dead collector
                else:
                    self.exported += len(batch)
                if not self._closing and 0 < len(self.buffer) < self.settings.batch_size:
                    break  # a partial batch waits for its interval
        finally:
            self._task = None
            if self.buffer and not self._closing and self._timer is None:
                self._timer = self.loop.call_later(self.settings.batch_interval, self._start)

    async def close(self, timeout: float) -> None:
        """Send what is buffered (within ``timeout``), then stop."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self._task is None and self.buffer:
                self._task = self.loop.create_task(self._run())
            if self._task is not None:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            pass
        if isinstance(self.transport, GrpcTransport):
            self.transport.close()

    def render(self, out: list[str]) -> None:
        out.append("# HELP trace_spans_exported_total Spans the collector accepted.")
        out.append("# TYPE trace_spans_exported_total counter")
        out.append(f"trace_spans_exported_total {self.exported}")
        out.append("# HELP trace_spans_dropped_total Spans never sent: the buffer was full (buffer_full) or the "
                   "collector did not take their batch (export_failed).")
        out.append("# TYPE trace_spans_dropped_total counter")
        for reason in DROP_REASONS:
            out.append(f'trace_spans_dropped_total{{reason="{reason}"}} {self.dropped[reason]}')
        out.append("# HELP trace_spans_buffered Spans waiting to be exported.")
        out.append("# TYPE trace_spans_buffered gauge")
        out.append(f"trace_spans_buffered {len(self.buffer)}")


def _transport(settings: TracingSettings, mesh_tls: Callable[[], MeshTls | None] | None):
    collector = settings.collector
    assert collector is not None
    if collector.protocol == "http/protobuf":
        return HttpTransport(collector.host, collector.port, collector.path, settings.collector_identity, mesh_tls)
    return GrpcTransport(collector.host, collector.port, settings.collector_identity, mesh_tls)
