"""A raw HTTP/1 origin that records every byte each connection brought and answers with scripted bytes.

Hostile-input tests point the proxy at it to see, byte for byte, what the
proxy let through. It frames requests with the independent ``h11`` parser
only to know when to answer: judging the bytes is the test's business
(``strict_h1``). A request for ``/r/<key>`` is answered with the script
registered under ``key`` (exact bytes, pauses, then keep or close), anything
else with a small 200 whose body names the connection and request
(``ok c<conn> r<n>``) and, like any origin, a close after a request that
asked for one (``Connection: close``, or HTTP/1.0 without keep-alive), so a
test can tell a genuine answer from bytes that were left over on a reused
connection.

``mark()`` and ``since(mark)`` cut the recording into windows, one per test
step; ``close_unsettled()`` closes every connection left inside a message or
rejected by h11, so that what one step left half-sent cannot be read as part
of the next step's traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import h11

from .servers import MAX_WAIT, ServerConn, TcpServer
from .wire import deadline_in

Step = bytes | float  # bytes to send, or seconds to wait
LINGER = 0.3  # seconds a connection is still read after the backend decided to close it


@dataclass
class Script:
    """The answer to ``/r/<key>``: ``steps`` in order, then close or keep the connection."""

    steps: list[Step]
    close: bool = False


@dataclass
class ConnRecord:
    """What the backend knows about one accepted connection."""

    conn: ServerConn
    settled: bool = True  # between messages, and h11 had no objection
    rejected: str | None = None  # h11's objection, if any
    requests: int = 0
    eof: bool = False  # the proxy closed its side

    @property
    def id(self) -> int:
        return self.conn.id

    @property
    def received(self) -> bytes:
        return self.conn.received


@dataclass
class Window:
    """Bytes that arrived after a mark: per connection, from where."""

    starts: dict[int, int] = field(default_factory=dict)  # conn id -> offset the window starts at
    records: list[ConnRecord] = field(default_factory=list)

    def new_bytes(self) -> dict[int, bytes]:
        out = {}
        for rec in self.records:
            data = rec.received[self.starts.get(rec.id, 0):]
            if data:
                out[rec.id] = data
        return out

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.new_bytes().values())


class RawBackend(TcpServer):
    """An HTTP/1 origin with scripted answers and windowed recordings."""

    def __init__(self, name: str = "raw-backend", **kwargs) -> None:
        self.scripts: dict[str, Script] = {}
        self.records: dict[int, ConnRecord] = {}
        self.last_byte_at = 0.0
        super().__init__(name=name, **kwargs)

    # -- windows -------------------------------------------------------------
    def mark(self) -> dict[int, int]:
        with self.changed:
            return {cid: len(rec.received) for cid, rec in self.records.items()}

    def since(self, mark: dict[int, int]) -> Window:
        with self.changed:
            recs = [rec for cid, rec in self.records.items() if cid not in mark or len(rec.received) > mark[cid]]
        return Window(starts={rec.id: mark.get(rec.id, 0) for rec in recs}, records=recs)

    def wait_quiet(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        """Return once no byte has arrived for ``quiet`` seconds (at most ``limit``)."""
        end = deadline_in(limit)
        while time.monotonic() < end:
            idle = time.monotonic() - self.last_byte_at
            if idle >= quiet:
                return
            time.sleep(quiet - idle)

    def close_unsettled(self) -> list[int]:
        """Close connections inside a message or rejected by h11; their ids."""
        with self.changed:
            recs = [rec for rec in self.records.values() if not rec.settled and not rec.conn.closed.is_set()]
        for rec in recs:
            rec.conn.close()
        return [rec.id for rec in recs]

    def close_all(self) -> None:
        with self.changed:
            recs = list(self.records.values())
        for rec in recs:
            rec.conn.close()

    # -- serving -------------------------------------------------------------
    def handle(self, conn: ServerConn) -> None:
        rec = ConnRecord(conn)
        with self.changed:
            self.records[conn.id] = rec
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 22)
        request: h11.Request | None = None
        while not self.stopping.is_set():
            try:
                got = conn.stream.fill(deadline_in(MAX_WAIT))
            except (TimeoutError, OSError):
                return
            self.last_byte_at = time.monotonic()
            if not got:
                rec.eof = True
                parser.receive_data(b"")
            else:
                parser.receive_data(bytes(conn.stream.buf))
                conn.stream.buf.clear()
            while True:
                try:
                    event = parser.next_event()
                except h11.RemoteProtocolError as err:
                    rec.settled, rec.rejected = False, str(err)
                    return
                if event is h11.NEED_DATA:
                    rec.settled = request is None and not parser.trailing_data[0]
                    break
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    request = event
                    rec.settled = False
                    if any(n == b"expect" and v.lower() == b"100-continue" for n, v in event.headers):
                        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    rec.requests += 1
                    if not self._answer(conn, request, rec.requests):
                        return  # the script cuts the connection
                    if not _persistent(request):
                        self._linger(conn, rec)
                        return
                    # The answer bypassed h11, so start a fresh parser on what is left.
                    rest, closed = parser.trailing_data
                    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 22)
                    if rest:
                        parser.receive_data(rest)
                    if closed:
                        parser.receive_data(b"")
                    request = None
                    rec.settled = not rest
            if not got:
                return

    def _linger(self, conn: ServerConn, rec: ConnRecord) -> None:
        """Before closing, keep recording (never answering) what the peer still
        sends: bytes after a request that ended the connection are evidence."""
        rec.settled = False
        end = deadline_in(LINGER)
        while not self.stopping.is_set():
            try:
                if not conn.stream.fill(end):
                    rec.eof = True
                    return
            except (TimeoutError, OSError):
                return
            self.last_byte_at = time.monotonic()

    def _answer(self, conn: ServerConn, request: h11.Request, number: int) -> bool:
        target = request.target.decode("latin-1")
        key = target[3:].split("?", 1)[0] if target.startswith("/r/") else None
        script = self.scripts.get(key) if key is not None else None
        if script is None:
            body = f"ok c{conn.id} r{number}".encode()
            head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body))
            conn.send(head if request.method == b"HEAD" else head + body)
            return True
        for step in script.steps:
            if isinstance(step, float | int):
                self.stopping.wait(float(step))
            else:
                conn.send(step)
        return not script.close


def _persistent(request: h11.Request) -> bool:
    """Whether the request lets the connection carry another one (RFC 9112 9.3)."""
    tokens = {t.strip().lower() for n, v in request.headers if n == b"connection" for t in v.split(b",")}
    if b"close" in tokens:
        return False
    return request.http_version == b"1.1" or b"keep-alive" in tokens
