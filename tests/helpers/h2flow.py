"""An HTTP/2 client that does its own flow control, for the backpressure tests.

``FlowH2Client`` is ``H2Client`` (h2c, prior knowledge) with three changes:
a stream opened with ``sink=`` hashes its body instead of keeping it; the
client grants receive credit itself, per stream and per connection, only
as the test says (``hold`` keeps a stream's window shut, ``flow`` gives back
every byte consumed, ``grant`` opens it by an amount); and ``upload``
streams the bulk pattern as the proxy's windows allow. With
``initial_window=0`` every stream starts with a zero window, so the proxy
may send no DATA until the client opens it. ``BulkH2App`` is ``BulkApp``'s
HTTP/2 twin: it streams the pattern as windows allow and reads uploads
slowly by withholding credit.
"""

from __future__ import annotations

import hashlib
import select
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from .bulk import MIB, TRANSFER_WAIT, Pauses, Transfer, pattern, pattern_sha256
from .h2client import H2Client, H2Response
from .servers import ServerConn, TcpServer
from .wire import deadline_in

GRANT_STEP = 64 * 1024  # credit given back in pieces at least this big while flowing


@dataclass
class Sink:
    """What a hashed stream received, and the credit it was given."""

    digest: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    granted: int = 0         # stream credit granted by this client beyond the initial window
    flowing: bool = False    # give back consumed bytes at once
    owed: int = 0            # consumed, not yet given back (while flowing)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


class FlowH2Client(H2Client):
    def __init__(self, addr: tuple[str, int], timeout: float = 30.0, initial_window: int | None = None) -> None:
        super().__init__(addr, timeout=timeout)
        self.sinks: dict[int, Sink] = {}
        self.conn_owed = 0
        if initial_window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
            self._flush()
            # The new window applies to streams opened once the proxy acknowledged it.
            self.wait(lambda: self.conn.local_settings.initial_window_size == initial_window, 10,
                      "the proxy's SETTINGS ACK")

    # -- streams ---------------------------------------------------------------
    def open(self, method: str = "GET", path: str = "/", authority: str = "test.local",
             headers: list[tuple[str, str]] | None = None, flowing: bool = True, end: bool = True) -> int:
        """A stream whose response body is hashed, not kept; ``flowing=False`` holds its window."""
        sid = self.conn.get_next_available_stream_id()
        self.sinks[sid] = Sink(flowing=flowing)
        got = self.request(method, path, authority, headers=headers, end=end)
        assert got == sid, (got, sid)
        return sid

    def hold(self, sid: int) -> None:
        self.sinks[sid].flowing = False

    def flow(self, sid: int, window: int = MIB) -> None:
        """Open the stream's window by ``window`` and from now on give back every byte consumed."""
        sink = self.sinks[sid]
        sink.flowing = True
        self.grant(sid, window)
        self._give_back(sid, force=True)

    def grant(self, sid: int, amount: int) -> None:
        """Open the stream's window (and the connection's) by ``amount`` bytes."""
        if amount <= 0:
            return
        try:
            self.conn.increment_flow_control_window(amount, stream_id=sid)
            self.sinks[sid].granted += amount
        except (h2.exceptions.StreamClosedError, KeyError):
            pass
        self.conn.increment_flow_control_window(amount)
        self._flush()

    def _give_back(self, sid: int, force: bool = False) -> None:
        sink = self.sinks.get(sid)
        if sink is None or not sink.flowing:
            return
        if sink.owed and (force or sink.owed >= GRANT_STEP):
            amount, sink.owed = sink.owed, 0
            try:
                self.conn.increment_flow_control_window(amount, stream_id=sid)
            except (h2.exceptions.StreamClosedError, KeyError):
                pass
        if self.conn_owed and (force or self.conn_owed >= GRANT_STEP):
            amount, self.conn_owed = self.conn_owed, 0
            self.conn.increment_flow_control_window(amount)

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.DataReceived) and event.stream_id in self.sinks:
            sink = self.sinks[event.stream_id]
            sink.digest.update(event.data)
            sink.received += len(event.data)
            size = event.flow_controlled_length
            if sink.flowing:
                sink.owed += size
                self.conn_owed += size
                self._give_back(event.stream_id)
            else:
                # The connection's credit comes back at once: only the stream's window holds.
                self.conn_owed += size
                if self.conn_owed >= GRANT_STEP:
                    amount, self.conn_owed = self.conn_owed, 0
                    self.conn.increment_flow_control_window(amount)
            return
        super()._event(event)
        if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            self._give_conn_back()

    def _give_conn_back(self) -> None:
        if self.conn_owed:
            amount, self.conn_owed = self.conn_owed, 0
            self.conn.increment_flow_control_window(amount)

    # -- reading with pauses ---------------------------------------------------
    def read_paced(self, sid: int, pauses: Pauses, timeout: float = 300.0) -> H2Response:
        """Zero window, then ``pauses.count`` times: open it by ``every`` bytes, read them, sleep;
        then open it for good and read the rest fast."""
        sink = self.sinks[sid]
        resp = self.responses[sid]
        end = deadline_in(timeout)
        sink.flowing = False
        for _ in range(pauses.count):
            want = sink.received + pauses.every
            self.grant(sid, pauses.every)
            self.wait(lambda want=want: sink.received >= want or resp.done, max(1.0, end - time.monotonic()),
                      f"{pauses.every} more bytes on stream {sid}")
            if resp.done:
                break
            time.sleep(pauses.seconds)
        self.flow(sid)
        return self.response(sid, max(1.0, end - time.monotonic()))

    # -- uploading ---------------------------------------------------------------
    def upload_until_stuck(self, sid: int, total: int, stuck_after: float = 0.5, limit_s: float = 30.0) -> int:
        """Send pattern bytes on ``sid`` until no window opened for ``stuck_after`` s; the stream stays open."""
        end = deadline_in(limit_s)
        sent = 0
        for block in pattern(total):
            view, pos = memoryview(block), 0
            while pos < len(view):
                room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                           len(view) - pos)
                if room <= 0:
                    self._flush()
                    stuck = deadline_in(stuck_after)
                    while self.conn.local_flow_control_window(sid) <= 0 and time.monotonic() < stuck:
                        self.pump(stuck)
                        if self.eof:
                            return sent
                    if self.conn.local_flow_control_window(sid) <= 0 or time.monotonic() > end:
                        return sent
                    continue
                self.conn.send_data(sid, view[pos:pos + room].tobytes())
                pos += room
                sent += room
            self._flush()
        return sent

    def upload(self, sid: int, total: int, timeout: float = 300.0, stall_limit: float = 30.0) -> None:
        """Send ``total`` pattern bytes on the open stream ``sid`` as the windows allow, then end it.
        Raises TimeoutError when no window opens for ``stall_limit`` s (a wedge) or past ``timeout``."""
        end = deadline_in(timeout)
        stall_end = deadline_in(stall_limit)
        sent = 0
        resp = self.responses[sid]
        for block in pattern(total):
            view, pos = memoryview(block), 0
            while pos < len(view):
                if resp.reset_code is not None:
                    raise ConnectionError(f"stream {sid} reset by the proxy ({resp.reset_code}) after"
                                          f" {pos} bytes of a block; {resp.summary()}")
                room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                           len(view) - pos)
                if room <= 0:
                    if time.monotonic() > stall_end:
                        raise TimeoutError(f"upload on stream {sid} stalled: no window for {stall_limit}s"
                                           f" after {sent} bytes")
                    if time.monotonic() > end:
                        raise TimeoutError(f"upload on stream {sid} not done in {timeout}s ({sent} bytes sent)")
                    self._flush()  # what is queued must leave before we wait for the window it frees
                    self.pump(end)
                    if self.eof:
                        raise ConnectionError(f"connection closed during the upload; goaway={self.goaway!r}")
                    continue
                self.conn.send_data(sid, view[pos:pos + room].tobytes())
                pos += room
                sent += room
                stall_end = deadline_in(stall_limit)
            self._flush()
        self.conn.end_stream(sid)
        self._flush()



# ---------------------------------------------------------------------------
# the HTTP/2 app


@dataclass
class _AppStream:
    transfer: Transfer
    pacer_every: int = 0
    pause_s: float = 0.0
    pauses_left: int = 0
    next_pause: int = 0
    paused_until: float = 0.0
    unacked: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    blocks: Any = None        # what is left to send: a download's pattern, or a reply's body
    pending: memoryview | None = None
    reply: bool = False       # ``blocks`` is a short reply, not a recorded download


class BulkH2App(TcpServer):
    """An h2c (prior knowledge) app for large bodies, with the same endpoints as ``BulkApp``:

    /download?n=N                N pattern bytes, sent as the peer's windows allow
    /upload[?every=B&pause=S&pauses=K]  hashes the body; a slow reader: after every B
                                 bytes that stream gets no credit back for S seconds,
                                 K times (the connection's credit always comes back);
                                 answers 200 with x-body-length and x-body-sha256
    /upload-early                a whole answer, 200 "early", as soon as the head came, then
                                 RST_STREAM NO_ERROR (RFC 9113 8.1: send no more of the body)
    anything else                200 "ok"
    """

    def __init__(self, **kwargs: Any) -> None:
        self.downloads: list[Transfer] = []
        self.uploads: list[Transfer] = []
        kwargs.setdefault("idle_timeout", TRANSFER_WAIT)
        kwargs.setdefault("name", "bulk-h2-app")
        super().__init__(**kwargs)

    def last_download(self, timeout: float = 10.0) -> Transfer:
        assert self.wait_for(lambda: bool(self.downloads), timeout), "the app got no download request"
        return self.downloads[-1]

    def handle(self, conn: ServerConn) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        h2c = h2.connection.H2Connection(config)
        h2c.initiate_connection()
        h2c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: MIB})
        h2c.increment_flow_control_window(16 * MIB)
        streams: dict[int, _AppStream] = {}
        conn_owed = 0
        conn.sock.settimeout(TRANSFER_WAIT)
        conn.sock.sendall(h2c.data_to_send())
        end = deadline_in(TRANSFER_WAIT * 5)
        while not self.stopping.is_set() and time.monotonic() < end:
            can_send = any(st.blocks is not None and h2c.local_flow_control_window(sid) > 0
                           for sid, st in streams.items())
            readable, _, _ = select.select([conn.sock], [], [], 0 if can_send else 0.05)
            if readable:
                try:
                    chunk = conn.sock.recv(1 << 18)
                except OSError:
                    return
                if not chunk:
                    return
                try:
                    events = h2c.receive_data(chunk)
                except h2.exceptions.ProtocolError as err:
                    self.errors.append(f"conn {conn.id}: h2 protocol error from the proxy: {err!r}")
                    return
                try:
                    for event in events:
                        conn_owed += self._event(conn, h2c, streams, event)
                except h2.exceptions.ProtocolError as err:  # e.g. answering after the proxy's GOAWAY
                    self.errors.append(f"conn {conn.id}: {err!r}")
                    conn.sock.sendall(h2c.data_to_send())
                    return
                if conn_owed >= 65536:
                    h2c.increment_flow_control_window(conn_owed)
                    conn_owed = 0
            now = time.monotonic()
            for sid, st in list(streams.items()):
                if st.unacked and now >= st.paused_until:
                    amount, st.unacked = st.unacked, 0
                    try:
                        h2c.increment_flow_control_window(amount, stream_id=sid)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                        pass
            self._send_downloads(h2c, streams)
            out = h2c.data_to_send()
            if out:
                conn.sock.sendall(out)

    def _event(self, conn: ServerConn, h2c: Any, streams: dict[int, _AppStream], event: Any) -> int:
        """Handle one event; returns the connection credit it consumed."""
        sid = getattr(event, "stream_id", None)
        if isinstance(event, h2.events.RequestReceived):
            fields = dict(event.headers)
            url = urlsplit(fields.get(b":path", b"/").decode("latin-1"))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/download":
                total = int(query["n"])
                st = _AppStream(Transfer(conn.id, url.geturl(), total))
                st.blocks = pattern(total)
                with self.changed:
                    self.downloads.append(st.transfer)
                    self.changed.notify_all()
                streams[sid] = st
                h2c.send_headers(sid, [(b":status", b"200"), (b"content-length", str(total).encode())],
                                 end_stream=total == 0)
            elif url.path == "/upload-early":
                h2c.send_headers(sid, [(b":status", b"200"), (b"content-length", b"5")])
                h2c.send_data(sid, b"early", end_stream=True)
                if not event.stream_ended:
                    h2c.reset_stream(sid, 0)
            else:
                length = fields.get(b"content-length")
                st = _AppStream(Transfer(conn.id, url.geturl(), int(length) if length is not None else None))
                if url.path == "/upload" and "pause" in query:
                    st.pacer_every = int(query.get("every", str(MIB)))
                    st.pause_s = float(query["pause"])
                    st.pauses_left = int(query.get("pauses", "10"))
                    st.next_pause = st.pacer_every
                if url.path == "/upload":
                    with self.changed:
                        self.uploads.append(st.transfer)
                        self.changed.notify_all()
                streams[sid] = st
        elif isinstance(event, h2.events.DataReceived):
            st = streams.get(sid)
            if st is None:
                return event.flow_controlled_length
            st.digest.update(event.data)
            st.transfer.done += len(event.data)
            st.unacked += event.flow_controlled_length
            if st.pauses_left and st.transfer.done >= st.next_pause:
                st.pauses_left -= 1
                st.next_pause += st.pacer_every
                st.paused_until = time.monotonic() + st.pause_s
            return event.flow_controlled_length
        elif isinstance(event, h2.events.StreamEnded) and sid in streams:
            st = streams[sid]
            if st.blocks is None:
                st.transfer.sha256 = st.digest.hexdigest()
                st.transfer.finished_at = time.monotonic()
                st.transfer.finished.set()
                body = b"uploaded" if "/upload" in st.transfer.path else b"ok"
                h2c.send_headers(sid, [(b":status", b"200"), (b"content-length", str(len(body)).encode()),
                                       (b"x-body-length", str(st.transfer.done).encode()),
                                       (b"x-body-sha256", st.transfer.sha256.encode())])
                # The body goes out as the windows allow, like a download's.
                st.blocks, st.reply = iter([body]), True
                self.notify()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.errors.append(f"conn {conn.id}: GOAWAY from the proxy: code {event.error_code},"
                               f" last stream {event.last_stream_id}, {event.additional_data!r}")
        elif isinstance(event, h2.events.StreamReset) and sid in streams:
            st = streams.pop(sid)
            st.transfer.error = f"reset by the peer ({event.error_code})"
            st.transfer.finished_at = time.monotonic()
            st.transfer.finished.set()
            self.notify()
        return 0

    def _send_downloads(self, h2c: Any, streams: dict[int, _AppStream]) -> None:
        budget = 4 * MIB  # per loop turn, so reads and credit keep flowing
        for sid, st in list(streams.items()):
            if st.blocks is None:
                continue
            try:
                while budget > 0:
                    if st.pending is None or not len(st.pending):
                        block = next(st.blocks, None)
                        if block is None:
                            h2c.end_stream(sid)
                            del streams[sid]
                            st.blocks = None
                            if not st.reply:
                                st.transfer.sha256 = pattern_sha256(st.transfer.total or 0)
                                st.transfer.finished_at = time.monotonic()
                                st.transfer.finished.set()
                            self.notify()
                            break
                        st.pending = memoryview(block)
                    room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size, len(st.pending))
                    if room <= 0:
                        break
                    h2c.send_data(sid, st.pending[:room].tobytes())
                    st.pending = st.pending[room:]
                    if not st.reply:
                        st.transfer.done += room
                    budget -= room
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as err:
                streams.pop(sid, None)
                st.blocks = None
                if st.reply:
                    continue
                st.transfer.error = repr(err)
                st.transfer.finished_at = time.monotonic()
                st.transfer.finished.set()
                self.notify()
