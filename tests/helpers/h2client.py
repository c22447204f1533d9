"""A precise HTTP/2 client for whole-proxy tests, on the ``h2`` package.

``H2Client`` speaks h2c (prior knowledge), runs many streams at once, and
keeps everything each stream received (1xx heads, head, body, trailers,
reset code), with flow control done right so multi-MB bodies cross the
windows both ways. Every wait has a deadline.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from .h2 import CANCEL
from .wire import deadline_in


def _b(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


@dataclass
class H2Response:
    """What one stream received."""

    stream_id: int
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] | None = None
    reset_code: int | None = None
    ended: bool = False

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for n, v in self.headers:
            if n == key:
                return v.decode("latin-1")
        return None

    def header_all(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for n, v in self.headers if n == key]

    def trailer(self, name: str) -> str | None:
        key = name.lower().encode()
        for n, v in self.trailers or []:
            if n == key:
                return v.decode("latin-1")
        return None

    def summary(self) -> str:
        return (f"stream {self.stream_id}: status={self.status} reset={self.reset_code} ended={self.ended} "
                f"headers={self.headers!r} body={bytes(self.data[:200])!r} trailers={self.trailers!r}")


class H2Client:
    """One h2c connection; many streams at once; every wait has a deadline.

    ``window`` (if given) is the stream window this client advertises and
    the amount its connection window is raised by.
    """

    def __init__(self, addr: tuple[str, int], timeout: float = 10.0, window: int | None = None) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.conn.increment_flow_control_window(window)
        self.responses: dict[int, H2Response] = {}
        self._uploads: dict[int, list[Any]] = {}  # sid -> [view, pos, end, trailers]
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.eof = False
        self.remote_settings_seen = False
        self._flush()

    # -- sending ---------------------------------------------------------------
    def request(
        self,
        method: str = "GET",
        path: str = "/",
        authority: str = "test.local",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        trailers: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream; ``end=False`` leaves the request open for ``send``."""
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", _b(method)), (b":scheme", b"http"), (b":authority", _b(authority)),
                  (b":path", _b(path))]
        fields += [(_b(n).lower(), _b(v)) for n, v in headers or []]
        bare = body is None and trailers is None and end
        self.responses[sid] = H2Response(sid)
        self.conn.send_headers(sid, fields, end_stream=bare)
        if not bare:
            self._uploads[sid] = [memoryview(body or b""), 0, end, trailers]
        self._send_uploads()
        self._flush()
        return sid

    def send(self, sid: int, payload: bytes, end: bool = False,
             trailers: list[tuple[str, str]] | None = None) -> None:
        """More request body on an open stream (queued behind what is waiting)."""
        pending = self._uploads.get(sid)
        if pending is not None:
            rest = bytes(pending[0][pending[1]:]) + payload
            pending[0], pending[1] = memoryview(rest), 0
            pending[2], pending[3] = end, trailers
        else:
            self._uploads[sid] = [memoryview(payload), 0, end, trailers]
        self._send_uploads()
        self._flush()

    def reset(self, sid: int, code: int = CANCEL) -> None:
        self._uploads.pop(sid, None)
        self.conn.reset_stream(sid, code)
        self._flush()

    def _send_uploads(self) -> None:
        for sid in list(self._uploads):
            view, pos, end, trailers = self._uploads[sid]
            try:
                while pos < len(view):
                    room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                    if room <= 0:
                        break
                    chunk = view[pos : pos + room]
                    self.conn.send_data(sid, bytes(chunk))
                    pos += len(chunk)
                self._uploads[sid][1] = pos
                if pos >= len(view) and end:
                    if trailers is not None:
                        self.conn.send_headers(sid, [(_b(n).lower(), _b(v)) for n, v in trailers], end_stream=True)
                    else:
                        self.conn.end_stream(sid)
                    del self._uploads[sid]
                elif pos >= len(view):
                    self._uploads[sid] = [memoryview(b""), 0, False, None]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                self._uploads.pop(sid, None)

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.settimeout(30)
            self.sock.sendall(out)

    # -- receiving -------------------------------------------------------------
    def pump(self, deadline: float) -> None:
        """Read once (bounded by ``deadline``) and handle what came."""
        remaining = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([self.sock], [], [], min(remaining, 0.2))
        if not readable:
            return
        try:
            chunk = self.sock.recv(1 << 18)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return
        for event in self.conn.receive_data(chunk):
            self._event(event)
        self._send_uploads()
        self._flush()

    def _event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        resp = self.responses.get(sid) if sid is not None else None
        if isinstance(event, h2.events.ResponseReceived):
            resp.headers = list(event.headers)
            resp.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.InformationalResponseReceived):
            resp.informational.append(list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            if resp is not None:
                resp.data += event.data
            try:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            except h2.exceptions.StreamClosedError:
                pass
        elif isinstance(event, h2.events.TrailersReceived):
            resp.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            resp.ended = True
        elif isinstance(event, h2.events.StreamReset):
            if resp is not None:
                resp.reset_code = event.error_code
            self._uploads.pop(event.stream_id, None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True

    def wait(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        end = deadline_in(timeout)
        while not predicate():
            if self.eof:
                raise ConnectionError(f"connection closed while waiting for {what}; goaway={self.goaway!r}")
            if time.monotonic() > end:
                raise TimeoutError(f"{what} not met within {timeout}s; goaway={self.goaway!r}")
            self.pump(end)

    def response(self, sid: int, timeout: float = 10.0) -> H2Response:
        """The stream's whole response (ended or reset)."""
        resp = self.responses[sid]
        try:
            self.wait(lambda: resp.done, timeout, f"the response on stream {sid}")
        except TimeoutError as err:
            raise TimeoutError(f"{err}; so far {resp.summary()}") from None
        return resp

    def head(self, sid: int, timeout: float = 10.0) -> H2Response:
        """Waits for the final response head (or a reset) only."""
        resp = self.responses[sid]
        self.wait(lambda: resp.status is not None or resp.reset_code is not None, timeout,
                  f"the response head on stream {sid}")
        return resp

    def exchange(self, method: str = "GET", path: str = "/", authority: str = "test.local",
                 timeout: float = 10.0, **kwargs: Any) -> H2Response:
        return self.response(self.request(method, path, authority, **kwargs), timeout)

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
