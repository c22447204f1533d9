"""An HTTP/2 (h2c, prior knowledge) origin for whole-proxy tests, on the ``h2`` package.

One thread per connection runs a small loop: read frames, answer streams,
send bodies as the peer's windows allow. Every request is recorded as
received (headers in order, body, trailers, a reset if one came), so a test
can check on the server's side what the proxy forwarded. Endpoints, by path:

/echo           200 after the request ends; body = request body; headers
                x-method, x-path, x-authority, x-body-length, x-body-sha256,
                every request header named x-echo-* sent back; ?trailers=1
                adds response trailers (x-body-sha256, x-trailer: done)
/bytes/N        N deterministic bytes (det_bytes(N, 7)), x-body-sha256
/name           the server's name (which backend answered), with status fail_status if set
/status/N       status N
/early-hints    103 with a link header, then 200 "after hints"
/slow?delay=S   200 "slow done" after S seconds
/head-first?delay=S  the head alone (content-length: 4) at once, the body "body" S seconds later
/never, /hold   never answered (a reset from the peer is recorded)
/reset-before?code=N   RST_STREAM at once, before any response
/reset-after?code=N    head and 1000 bytes, then RST_STREAM (&grpc=1: a gRPC head and one message)
/stall          head (gRPC's content-type with ?grpc=1) and 1000 bytes, then nothing
/refuse-once?key=K  RST_STREAM REFUSED_STREAM the first time, 200 "second try" after
/refuse-after-data?key=K  RST_STREAM REFUSED_STREAM on the first DATA of the first try
/goaway-before?code=N  a GOAWAY (code N, default NO_ERROR) whose last stream id is just below the
                request's: the stream is refused, never processed, the connection closes once the
                streams below it are answered
/goaway-once?key=K  as /goaway-before the first time, 200 "second try" after
/early-reply    200 "early" at once and RST_STREAM NO_ERROR, body never read
/table-size?size=N  a SETTINGS frame with SETTINGS_HEADER_TABLE_SIZE N, then 200 "table N"
/trailers-only?grpc=N  one HEADERS frame ending the stream (gRPC's Trailers-Only)
/grpc-trailers?grpc=N   a gRPC head, then trailers with grpc-status N (no message); with
                &message=1 one empty message between them; with &once=K status N only
                the first time (key K), 0 after
anything else   200 "ok"

``goaway_after=N`` sends a graceful GOAWAY once a connection answered N
requests, naming the highest stream received so far; streams that arrive
after it are refused (never processed) and the connection closes once every
stream it named is answered.
"""

from __future__ import annotations

import hashlib
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from . import h2 as h2c
from .servers import MAX_WAIT, ServerConn, TcpServer, det_bytes
from .wire import deadline_in

Fields = list[tuple[bytes, bytes]]


@dataclass
class H2Request:
    conn_id: int
    stream_id: int
    headers: Fields
    body: bytearray = field(default_factory=bytearray)
    trailers: Fields | None = None
    ended: bool = False
    reset_code: int | None = None  # the peer reset the stream
    local_reset: int | None = None  # we reset it
    answered: bool = False  # the whole response went out
    refused: bool = False  # above our GOAWAY's last stream id: never processed

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for n, v in self.headers if n == key]

    @property
    def path(self) -> str:
        return self.header(":path") or ""

    @property
    def names(self) -> list[str]:
        return [n.decode("latin-1") for n, _ in self.headers]


class _Out:
    """A response body (and trailers) waiting for the peer's window."""

    __slots__ = ("view", "pos", "trailers")

    def __init__(self, body: bytes, trailers: Fields | None) -> None:
        self.view = memoryview(body)
        self.pos = 0
        self.trailers = trailers


class _ConnState:
    def __init__(self, conn: ServerConn, h2conn: h2.connection.H2Connection) -> None:
        self.conn = conn
        self.h2 = h2conn
        self.reqs: dict[int, H2Request] = {}
        self.out: dict[int, _Out] = {}
        self.due: list[tuple[float, Any]] = []
        self.answered = 0
        self.goaway_last: int | None = None
        self.raw_out: list[bytes] = []


class H2Origin(TcpServer):
    def __init__(self, name: str = "h2-origin", goaway_after: int | None = None, fail_status: int | None = None,
                 **kwargs: Any) -> None:
        self.fail_status = fail_status  # answer /name with this status (a broken version of a service)
        self.requests: list[H2Request] = []
        self.resets: list[tuple[int, int, int]] = []  # (conn id, stream id, error code)
        self.goaway_after = goaway_after
        self.refused_once: set[str] = set()
        super().__init__(name=name, **kwargs)

    # -- what happened ----------------------------------------------------------
    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda: len(self.requests) >= count, timeout)

    def wait_reset(self, path: str, timeout: float = 5.0) -> H2Request | None:
        """The last request for ``path`` once the peer reset it."""
        found: list[H2Request] = []

        def seen() -> bool:
            matching = [r for r in self.requests if r.path == path and r.reset_code is not None]
            found[:] = matching[-1:]
            return bool(matching)

        self.wait_for(seen, timeout)
        return found[0] if found else None

    def count(self, path_prefix: str = "/") -> int:
        with self.changed:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix) and not r.refused)

    # -- the connection loop ----------------------------------------------------
    def handle(self, conn: ServerConn) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        state = _ConnState(conn, h2.connection.H2Connection(config))
        state.h2.initiate_connection()
        self._flush(state)
        end = deadline_in(MAX_WAIT * 4)
        while not self.stopping.is_set() and time.monotonic() < end:
            wait = 0.05
            if state.due:
                wait = max(0.0, min(wait, min(t for t, _ in state.due) - time.monotonic()))
            readable, _, _ = select.select([conn.sock], [], [], wait)
            if readable:
                try:
                    chunk = conn.sock.recv(1 << 18)
                except (ConnectionResetError, OSError):
                    return
                if not chunk:
                    return
                try:
                    events = state.h2.receive_data(chunk)
                except h2.exceptions.ProtocolError as err:
                    self.errors.append(f"conn {conn.id}: h2 protocol error from the proxy: {err!r}")
                    self._flush(state)
                    return
                for event in events:
                    self._event(state, event)
            now = time.monotonic()
            for item in [d for d in state.due if d[0] <= now]:
                state.due.remove(item)
                item[1]()
            self._pump(state)
            self._flush(state)
            if state.goaway_last is not None and not state.out and all(
                    r.answered or r.reset_code is not None or r.local_reset is not None
                    for sid, r in state.reqs.items() if sid <= state.goaway_last):
                _linger(conn.sock)
                return  # graceful close: everything at or below the last id went out

    def _flush(self, state: _ConnState) -> None:
        out = state.h2.data_to_send()
        if out:
            state.conn.send(out)
        for raw in state.raw_out:
            state.conn.send(raw)
        state.raw_out.clear()

    def _event(self, state: _ConnState, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        req = state.reqs.get(sid) if sid is not None else None
        if isinstance(event, h2.events.RequestReceived):
            req = H2Request(state.conn.id, sid, list(event.headers))
            if state.goaway_last is not None and sid > state.goaway_last:
                req.refused = True
            state.reqs[sid] = req
            with self.changed:
                self.requests.append(req)
                self.changed.notify_all()
            if not req.refused:
                self._on_head(state, req)
        elif isinstance(event, h2.events.DataReceived):
            if req is not None:
                req.body += event.data
                if _split(req.path)[0] == "/refuse-after-data" and req.path not in self.refused_once:
                    # Claims it never processed the stream after part of its body came.
                    self.refused_once.add(req.path)
                    self._reset(state, req, h2c.REFUSED_STREAM)
            try:
                state.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
        elif isinstance(event, h2.events.TrailersReceived):
            if req is not None:
                req.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if req is not None:
                req.ended = True
                self.notify()
                if not req.refused:
                    self._on_end(state, req)
        elif isinstance(event, h2.events.StreamReset):
            state.out.pop(sid, None)
            if req is not None:
                req.reset_code = event.error_code
            with self.changed:
                self.resets.append((state.conn.id, sid, event.error_code))
                self.changed.notify_all()

    # -- endpoints ----------------------------------------------------------------
    def _on_head(self, state: _ConnState, req: H2Request) -> None:
        """Endpoints that act on the request head, before its body."""
        path, query = _split(req.path)
        code = int(query.get("code", ["2"])[0])
        if path == "/reset-before":
            self._reset(state, req, code)
        elif path in ("/goaway-before", "/goaway-once"):
            if path == "/goaway-before" or req.path not in self.refused_once:
                self.refused_once.add(req.path)
                req.refused = True
                self._go_away(state, req.stream_id - 2, int(query.get("code", ["0"])[0]))
        elif path == "/refuse-once":
            if req.path not in self.refused_once:  # keyed by the whole target: ?key=... per test
                self.refused_once.add(req.path)
                self._reset(state, req, h2c.REFUSED_STREAM)
        elif path == "/early-reply":
            self._respond(state, req, 200, body=b"early")
            self._pump(state)
            self._reset(state, req, h2c.NO_ERROR)
        elif path == "/reset-after":
            if query.get("grpc") == ["1"]:  # a gRPC head and one whole 100-byte message, then the reset
                state.h2.send_headers(req.stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                state.h2.send_data(req.stream_id, b"\0\0\0\0\x64" + b"m" * 100)
            else:
                state.h2.send_headers(req.stream_id, [(b":status", b"200")])
                state.h2.send_data(req.stream_id, b"x" * 1000)
            self._reset(state, req, code)
        elif path == "/stall":
            grpc = [(b"content-type", b"application/grpc")] if query.get("grpc") == ["1"] else []
            state.h2.send_headers(req.stream_id, [(b":status", b"200"), *grpc])
            state.h2.send_data(req.stream_id, b"x" * 1000)
        elif path == "/grpc-trailers":
            grpc = query.get("grpc", ["14"])[0].encode()
            once = query.get("once")
            if once is not None:
                grpc = grpc if once[0] not in self.refused_once else b"0"
                self.refused_once.add(once[0])
            state.h2.send_headers(req.stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
            if query.get("message") == ["1"]:
                state.h2.send_data(req.stream_id, b"\0\0\0\0\0")
            state.h2.send_headers(req.stream_id, [(b"grpc-status", grpc)], end_stream=True)
            self._answered(state, req)
        elif path == "/trailers-only":
            grpc = query.get("grpc", ["5"])[0].encode()
            state.h2.send_headers(req.stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc"),
                                                  (b"grpc-status", grpc), (b"grpc-message", b"not found")],
                                  end_stream=True)
            self._answered(state, req)

    def _on_end(self, state: _ConnState, req: H2Request) -> None:
        """Endpoints that answer once the whole request is in."""
        path, query = _split(req.path)
        if path in ("/reset-before", "/early-reply", "/reset-after", "/stall", "/grpc-trailers", "/trailers-only",
                    "/never", "/hold") \
                or req.reset_code is not None or req.local_reset is not None:
            return
        if path == "/echo":
            digest = hashlib.sha256(req.body).hexdigest()
            extra = [(b"x-method", _hb(req, ":method")), (b"x-path", _hb(req, ":path")),
                     (b"x-authority", _hb(req, ":authority")), (b"x-body-length", str(len(req.body)).encode()),
                     (b"x-body-sha256", digest.encode())]
            extra += [(n, v) for n, v in req.headers if n.startswith(b"x-echo-")]
            trailers = None
            if query.get("trailers") == ["1"]:
                trailers = [(b"x-body-sha256", digest.encode()), (b"x-trailer", b"done")]
            self._respond(state, req, 200, extra, bytes(req.body), trailers)
        elif path.startswith("/bytes/"):
            body = det_bytes(int(path.rsplit("/", 1)[1]), 7)
            self._respond(state, req, 200, [(b"x-body-sha256", hashlib.sha256(body).hexdigest().encode())], body)
        elif path == "/name":
            self._respond(state, req, self.fail_status or 200, body=self.name.encode())
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            bodyless = status in (204, 304)
            self._respond(state, req, status, body=b"" if bodyless else f"status {status}\n".encode())
        elif path == "/early-hints":
            state.h2.send_headers(req.stream_id, [(b":status", b"103"), (b"link", b"</style.css>; rel=preload")])
            self._respond(state, req, 200, body=b"after hints")
        elif path == "/slow":
            delay = float(query.get("delay", ["1"])[0])
            state.due.append((time.monotonic() + delay,
                              lambda: self._respond(state, req, 200, body=b"slow done")))
        elif path == "/head-first":
            delay = float(query.get("delay", ["1"])[0])
            state.h2.send_headers(req.stream_id, [(b":status", b"200"), (b"content-length", b"4")])
            out = state.out  # the body goes out with the next pump once it is due
            state.due.append((time.monotonic() + delay, lambda: out.update({req.stream_id: _Out(b"body", None)})))
        elif path in ("/refuse-once", "/goaway-once"):
            self._respond(state, req, 200, body=b"second try")
        elif path == "/table-size":
            size = int(query.get("size", ["4096"])[0])
            state.h2.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
            self._respond(state, req, 200, body=b"table %d" % size)
        else:
            self._respond(state, req, 200, body=b"ok")

    # -- sending ------------------------------------------------------------------
    def _respond(self, state: _ConnState, req: H2Request, status: int, extra: Fields | None = None,
                 body: bytes = b"", trailers: Fields | None = None) -> None:
        if req.reset_code is not None:
            return
        fields = [(b":status", str(status).encode())]
        if status != 204:
            fields.append((b"content-length", str(len(body)).encode()))
        fields += extra or []
        bare = not body and trailers is None
        try:
            state.h2.send_headers(req.stream_id, fields, end_stream=bare)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        if bare:
            self._answered(state, req)
        else:
            state.out[req.stream_id] = _Out(body, trailers)

    def _reset(self, state: _ConnState, req: H2Request, code: int) -> None:
        state.out.pop(req.stream_id, None)
        req.local_reset = code
        try:
            state.h2.reset_stream(req.stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    def _pump(self, state: _ConnState) -> None:
        for sid in list(state.out):
            out = state.out[sid]
            try:
                while out.pos < len(out.view):
                    room = min(state.h2.local_flow_control_window(sid), state.h2.max_outbound_frame_size)
                    if room <= 0:
                        break
                    chunk = bytes(out.view[out.pos : out.pos + room])
                    state.h2.send_data(sid, chunk)
                    out.pos += len(chunk)
                if out.pos < len(out.view):
                    continue
                if out.trailers is not None:
                    state.h2.send_headers(sid, out.trailers, end_stream=True)
                else:
                    state.h2.end_stream(sid)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            del state.out[sid]
            req = state.reqs.get(sid)
            if req is not None:
                self._answered(state, req)

    def _answered(self, state: _ConnState, req: H2Request) -> None:
        req.answered = True
        state.answered += 1
        if self.goaway_after is not None and state.goaway_last is None and state.answered >= self.goaway_after:
            self._go_away(state, max(state.reqs), 0)

    def _go_away(self, state: _ConnState, last: int, code: int) -> None:
        # A GOAWAY written beside h2's own frames (h2 itself refuses to send anything after a GOAWAY of its own).
        last = max(last, 0)
        state.goaway_last = last
        state.raw_out.append(h2c.frame(h2c.GOAWAY, 0, 0, last.to_bytes(4, "big") + code.to_bytes(4, "big")))


def _linger(sock: Any, timeout: float = 1.0) -> None:
    """A graceful close as real servers make it: our side shut, then the peer's late bytes (streams it sent
    before it read our GOAWAY) read and dropped until it closes. Closing with those bytes unread would
    send a TCP reset, which can discard the GOAWAY before the peer reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
            if readable and not sock.recv(1 << 16):
                return
    except OSError:
        return


def _split(target: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(target)
    return parts.path, parse_qs(parts.query)


def _hb(req: H2Request, name: str) -> bytes:
    return (req.header(name) or "").encode("latin-1")

