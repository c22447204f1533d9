"""The tap server: Linkerd's tap API (``io.linkerd.proxy.tap.Tap/Observe``), gRPC over the proxy's own HTTP/2.

Listens on ``MESHPROXY_TAP_LISTEN`` (``0.0.0.0:4190``, as Linkerd). Who may
tap, as Linkerd's proxy decides it: a client that proves, over mesh TLS this
server terminates, the identity ``MESHPROXY_TAP_IDENTITY``; or a plaintext
client on loopback. Any other client still gets HTTP/2, and every call it
makes is answered ``UNAUTHENTICATED`` with the reason. Each ``Observe``
opens a ``TapSession`` on the hub (proxy/telemetry/tap.py): requests
matching it are reported until ``limit`` of them have ended, then the
stream ends with ``grpc-status: 0``. ``ObserveTrace`` and any other method
are ``UNIMPLEMENTED``.

Every peer is held to limits: ``MESHPROXY_TAP_MAX_SESSIONS`` taps open at
once (more: ``RESOURCE_EXHAUSTED``); a request message of at most 64 KiB;
the first request within ``MESHPROXY_HEADER_TIMEOUT`` of connecting and no
connection idle (no tap open) past ``MESHPROXY_CLIENT_IDLE_TIMEOUT``; a tap
client that reads slowly leaves its events in the session's buffer
(``MESHPROXY_TAP_BUFFER_BYTES``), where what does not fit is dropped and
counted, never waited for; HTTP/2 abuse limits are h2conn's. Events leave
every ``FLUSH_INTERVAL`` in one batch per tap: requests never wake the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from proxy.admin.server import is_loopback
from proxy.config import Config, TapSettings
from proxy.protocol.h2conn import (
    ConnectionTerminated,
    DataReceived,
    H2Connection,
    H2Settings,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from proxy.telemetry.logging import get_logger
from proxy.telemetry.metrics import render_tap
from proxy.telemetry.tap import TapHub, TapSession
from proxy.telemetry.tapproto import InvalidTap, parse_observe
from proxy.transport import tls

log = get_logger("proxy.tap")

OBSERVE_PATH = b"/io.linkerd.proxy.tap.Tap/Observe"
MAX_REQUEST = 64 * 1024
# gRPC status codes
OK = 0
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAUTHENTICATED = 16

FLUSH_INTERVAL = 0.01  # seconds between two batches of events to a tap client
# Events leave in pieces of HTTP/2's smallest maximum frame size (every peer accepts it): one DATA frame each,
# queued as taken from the session's buffer instead of cut into frames (copied) a second time.
CHUNK = 16384
_NO_ERROR = 0
_TLS_HANDSHAKE = 0x16
_H2_SETTINGS = H2Settings(max_concurrent_streams=8, initial_window_size=65535, max_header_list_size=16384,
                          connection_buffer=MAX_REQUEST)


class TapServer:
    """What every tap connection shares: the hub, the settings, this proxy's current mesh TLS."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: Config, hub: TapHub,
                 mesh: Callable[[], Any]) -> None:
        self.loop = loop
        self.settings: TapSettings = config.tap
        self.header_timeout = config.limits.header_timeout
        self.idle_timeout = config.limits.client_idle_timeout
        self.handshake_timeout = config.identity.handshake_timeout
        self.write_high = config.limits.write_buffer_high
        self.hub = hub
        self.mesh = mesh  # -> proxy.transport.tls.MeshTls, or None (no identity, or no certificate yet)
        self.refused = 0  # calls answered with an error status (unauthenticated, invalid, too many)

    def protocol(self) -> asyncio.Protocol:
        return TapAccept(self)

    def render(self, out: list[str]) -> None:
        hub = self.hub
        render_tap(out, hub.live, hub.opened, self.refused, hub.events, hub.dropped)


class TapAccept(asyncio.Protocol):
    """A new connection until its first bytes say TLS (terminated here) or plaintext HTTP/2."""

    def __init__(self, server: TapServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client = ("", 0)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client = transport.get_extra_info("peername") or ("", 0)
        self.timer = self.server.loop.call_later(self.server.header_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is not None:
            log.info("tap connection closed: nothing received in time", client=_fmt(self.client))
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or not data:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None  # from here the connection belongs to the TLS layer or to the HTTP/2 protocol
        server = self.server
        if data[0] == _TLS_HANDSHAKE:
            mesh = server.mesh()
            if mesh is None:
                log.info("tap connection closed: mesh TLS before this proxy has a certificate",
                         client=_fmt(self.client))
                transport.abort()
                return
            app = TapConnection(server, self.client, True)

            def done(err: BaseException | None) -> None:
                if err is not None:
                    log.info("tap mesh TLS handshake failed", client=_fmt(self.client), error=str(err))

            tls.serve_handshake(server.loop, transport, data, app, mesh.server, server.handshake_timeout, done)
            return
        app = TapConnection(server, self.client, False)
        transport.set_protocol(app)
        app.connection_made(transport)
        app.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None


class _Call:
    """One HTTP/2 stream: the request message being read, then its tap's session and unsent bytes."""

    __slots__ = ("sid", "body", "session", "pending", "answered")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.body = bytearray()
        self.session: TapSession | None = None
        self.pending: list[bytes] = []  # taken from the session, not yet accepted by the stream's window
        self.answered = False


class TapConnection(asyncio.Protocol):
    """One tap client's HTTP/2 connection (plaintext, or the decrypted side of mesh TLS)."""

    def __init__(self, server: TapServer, client: tuple, over_tls: bool) -> None:
        self.server = server
        self.client = client
        self.over_tls = over_tls
        self.transport: asyncio.Transport | None = None
        self.conn = H2Connection(False, _H2_SETTINGS)
        self.calls: dict[int, _Call] = {}
        self.denied: str | None = None  # why this client may not tap (None: it may)
        self.peer_id: str | None = None
        self.paused = False
        self.served = False  # some call was answered: the first-request deadline is met
        self.timer: asyncio.TimerHandle | None = None
        self.ticker: asyncio.TimerHandle | None = None  # drains the taps every FLUSH_INTERVAL while one is open
        self.last_active = 0.0

    # -- the connection ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        if self.over_tls:
            self.peer_id = tls.peer_identity(transport.get_extra_info("ssl_object"))
            if self.peer_id is None:
                self.denied = "no client identity"
            elif server.settings.identity is None or self.peer_id != server.settings.identity:
                self.denied = f"Unauthorized peer: {self.peer_id}"
        elif not is_loopback(self.client[0] if self.client else ""):
            self.denied = "plaintext tap clients must be on loopback"
        self.transport.set_write_buffer_limits(server.write_high, server.write_high // 4)
        self.last_active = server.loop.time()
        self.timer = server.loop.call_later(server.header_timeout, self._check_timers)
        self.conn.initiate()
        self._flush()

    def data_received(self, data: bytes) -> None:
        loop = self.server.loop
        self.last_active = loop.time()
        events = self.conn.receive_data(data, int(self.last_active * 1000))
        for event in events:
            if isinstance(event, RequestReceived):
                self._request(event.stream_id, event.headers, event.end_stream)
            elif isinstance(event, DataReceived):
                self._data(event.stream_id, event.data, event.flow_controlled_length, event.end_stream)
            elif isinstance(event, TrailersReceived):
                call = self.calls.get(event.stream_id)
                if call is not None and not call.answered:
                    self._serve(call)
            elif isinstance(event, WindowUpdated):
                self._drain_all()
            elif isinstance(event, StreamReset):
                self._forget(event.stream_id, "the client reset the stream")
            elif isinstance(event, ConnectionTerminated):
                self._close_all("the connection ended")
        self._flush()
        if self.conn.dead and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        self._close_all("the client closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_all("the connection was lost")
        for handle in (self.timer, self.ticker):
            if handle is not None:
                handle.cancel()
        self.timer = self.ticker = None
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._drain_all()

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _check_timers(self) -> None:
        """The first request must come within the header timeout; a connection without a tap may idle only so long."""
        self.timer = None
        server = self.server
        if self.transport is None:
            return
        if not self.served:
            log.info("tap connection closed: no request in time", client=_fmt(self.client),
                     header_timeout_s=server.header_timeout)
            self.transport.abort()
            return
        if any(call.session is not None for call in self.calls.values()):
            self.timer = server.loop.call_later(server.idle_timeout, self._check_timers)
            return
        left = self.last_active + server.idle_timeout - server.loop.time()
        if left > 0:
            self.timer = server.loop.call_later(left, self._check_timers)
            return
        log.debug("tap connection closed: idle", client=_fmt(self.client))
        self.conn.close(_NO_ERROR)
        self._flush()
        self.transport.close()

    # -- calls ------------------------------------------------------------------------
    def _request(self, sid: int, headers: list, end_stream: bool) -> None:
        call = self.calls[sid] = _Call(sid)
        fields = {name: value for name, value in headers}
        if not fields.get(b"content-type", b"").startswith(b"application/grpc"):
            call.answered = True
            self._mark_served()
            self.conn.send_headers(sid, [(b":status", b"415"), (b"content-length", b"0")], True)
            self._end_call(call, reset=not end_stream)
            return
        if fields.get(b":method") != b"POST" or fields.get(b":path") != OBSERVE_PATH:
            path = fields.get(b":path", b"").decode("latin-1")
            self._error(call, UNIMPLEMENTED, f"unknown method {path}", reset=not end_stream)
            return
        if end_stream:
            self._serve(call)

    def _data(self, sid: int, data: bytes, flow: int, end_stream: bool) -> None:
        self.conn.acknowledge_received(sid, flow)  # buffered in call.body, itself bounded below
        call = self.calls.get(sid)
        if call is None or call.answered:
            return
        if len(call.body) + len(data) > MAX_REQUEST:
            self._error(call, RESOURCE_EXHAUSTED, f"request message larger than {MAX_REQUEST} bytes", reset=True)
            return
        call.body += data
        if end_stream:
            self._serve(call)

    def _serve(self, call: _Call) -> None:
        """The whole request is in: open the tap, or say why not."""
        server = self.server
        self._mark_served()
        if self.denied is not None:
            log.info("tap refused", client=_fmt(self.client), reason=self.denied)
            self._error(call, UNAUTHENTICATED, self.denied)
            return
        body = bytes(call.body)
        call.body = bytearray()
        if len(body) < 5:
            self._error(call, INVALID_ARGUMENT, "missing request message")
            return
        if body[0] != 0:
            self._error(call, UNIMPLEMENTED, "compressed request messages are not supported")
            return
        if int.from_bytes(body[1:5], "big") != len(body) - 5:
            self._error(call, INVALID_ARGUMENT, "expected exactly one request message")
            return
        try:
            spec = parse_observe(body[5:])
        except InvalidTap as err:
            log.info("invalid tap request", client=_fmt(self.client), error=str(err))
            self._error(call, INVALID_ARGUMENT, str(err))
            return
        hub = server.hub
        if hub.live >= server.settings.max_sessions:
            self._error(call, RESOURCE_EXHAUSTED,
                        f"{server.settings.max_sessions} taps are open already (MESHPROXY_TAP_MAX_SESSIONS)")
            return
        call.answered = True
        self.conn.send_headers(call.sid, [(b":status", b"200"), (b"content-type", b"application/grpc")], False)
        call.session = hub.open(spec.match, spec.limit, spec.extract_headers, server.settings.buffer_bytes)
        if self.ticker is None:
            self.ticker = server.loop.call_later(FLUSH_INTERVAL, self._tick)
        log.info("tap opened", client=_fmt(self.client), client_id=self.peer_id, limit=spec.limit,
                 headers=spec.extract_headers)

    def _mark_served(self) -> None:
        if not self.served:
            self.served = True
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.server.loop.call_later(self.server.idle_timeout, self._check_timers)

    def _error(self, call: _Call, code: int, message: str, reset: bool = False) -> None:
        """A trailers-only gRPC answer."""
        call.answered = True
        self.server.refused += 1
        self.conn.send_headers(call.sid, [(b":status", b"200"), (b"content-type", b"application/grpc"),
                                          (b"grpc-status", str(code).encode()),
                                          (b"grpc-message", _percent(message))], True)
        self._end_call(call, reset)

    def _end_call(self, call: _Call, reset: bool) -> None:
        if reset:  # answered before the client finished sending: it may stop (RFC 9113 8.1)
            self.conn.reset_stream(call.sid, _NO_ERROR)
        self.calls.pop(call.sid, None)

    def _drain(self, call: _Call) -> None:
        """Send what the session holds as far as the stream's window and the socket allow; end it when complete.
        What the window or the socket does not take stays in ``pending`` (at most one batch), and meanwhile new
        events wait in the session's bounded buffer."""
        session = call.session
        if session is None or self.calls.get(call.sid) is not call or self.transport is None:
            return
        if self.paused:
            return  # resume_writing drains again
        conn = self.conn
        try:
            # What the window left last time first; if all of it went, what the session holds now (one take
            # is all there is: nothing records events while this runs).
            if _send(conn, call.sid, call.pending):
                call.pending = session.take_chunks(CHUNK)
                _send(conn, call.sid, call.pending)
            if not call.pending and session.complete:
                conn.send_headers(call.sid, [(b"grpc-status", b"0")], True)
                self.calls.pop(call.sid, None)
                session.close()
                log.info("tap complete", client=_fmt(self.client), events=session.events, dropped=session.dropped)
        except Exception as err:  # the stream is gone (reset, connection dead): nothing more to send
            log.debug("tap stream ended while sending", client=_fmt(self.client), error=str(err))
            self._forget(call.sid, "the stream ended")
        self._flush()

    def _drain_all(self) -> None:
        for call in list(self.calls.values()):
            if call.session is not None:
                self._drain(call)

    def _tick(self) -> None:
        """Events leave in batches on this clock, not per request: the data path never schedules anything."""
        self.ticker = None
        live = False  # some tap is still open after this batch: tick again
        for call in list(self.calls.values()):
            if call.session is not None:
                self._drain(call)
                live = live or self.calls.get(call.sid) is call
        if live and self.transport is not None:
            self.ticker = self.server.loop.call_later(FLUSH_INTERVAL, self._tick)

    def _forget(self, sid: int, why: str) -> None:
        call = self.calls.pop(sid, None)
        if call is not None and call.session is not None:
            call.session.close()
            log.info("tap closed", client=_fmt(self.client), reason=why, events=call.session.events,
                     dropped=call.session.dropped)

    def _close_all(self, why: str) -> None:
        for sid in list(self.calls):
            self._forget(sid, why)


def _send(conn: H2Connection, sid: int, pending: list[bytes]) -> bool:
    """Queue ``pending``'s pieces on stream ``sid`` as far as its window allows, removing what went from the list:
    True when all of it did."""
    sent = 0
    for chunk in pending:
        n = conn.send_data(sid, chunk, False)
        if n < len(chunk):  # the client's window is closed: WindowUpdated drains again
            if n:
                pending[sent] = chunk[n:]
            del pending[:sent]
            return False
        sent += 1
    pending.clear()
    return True


def _percent(message: str) -> bytes:
    """grpc-message's percent-encoding: printable ASCII other than % as is, every other byte %XX."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def _fmt(addr: tuple) -> str:
    if not addr:
        return ""
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
