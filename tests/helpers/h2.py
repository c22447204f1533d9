"""Raw HTTP/2 for whole-proxy tests: hand-built frames and a frame-level client.

``RawH2`` sends exact bytes (``frame`` lies about lengths on request) and
reads the proxy's frames with its own parser, decoding header blocks with
the independent ``hpack`` package, for abuse and malformed input: the
proxy's own frame code never judges the proxy. The constants are RFC 9113's.
The precise client for well-formed traffic is ``h2client.H2Client``.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import hpack

from .wire import deadline_in

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
TYPE_NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
              6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}
# Flags.
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Error codes (RFC 9113 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
               8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
               12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}
# SETTINGS identifiers.
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6


# ---------------------------------------------------------------------------
# hand-built frames


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """One frame; ``length`` overrides the header's length field (to lie)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def settings(pairs: list[tuple[int, int]] | tuple = (), ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(opaque: bytes = b"12345678", ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, opaque)


def rst(stream_id: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def data(stream_id: int, payload: bytes = b"", end: bool = False) -> bytes:
    return frame(DATA, END_STREAM if end else 0, stream_id, payload)


def headers(stream_id: int, block: bytes, end_stream: bool = True, end_headers: bool = True) -> bytes:
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, stream_id, block)


def continuation(stream_id: int, block: bytes, end_headers: bool = False) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)


def request_block(encoder: Any, method: str = "GET", path: str = "/", authority: str = "test.local",
                  extra: list[tuple[str, str]] | None = None) -> bytes:
    """An HPACK block for a request head (``encoder`` is an ``hpack.Encoder``)."""
    fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
    return encoder.encode(fields + list(extra or []))


def hpack_int(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with the first octet's high bits ``flags``."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([flags | value])
    out = [flags | top]
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(value: bytes) -> bytes:
    """An HPACK string literal, not Huffman-coded."""
    return hpack_int(len(value), 7) + value


def literal_block(fields: list[tuple[str, str]]) -> bytes:
    """Fields as literals without indexing: a block that neither reads nor
    changes the dynamic table, so it decodes the same whatever came before."""
    return b"".join(b"\x00" + hpack_str(n.encode("latin-1")) + hpack_str(v.encode("latin-1")) for n, v in fields)


def literal_request(method: str = "GET", path: str = "/", authority: str = "test.local",
                    extra: list[tuple[str, str]] | None = None) -> bytes:
    return literal_block([(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
                         + list(extra or []))


@dataclass
class Frame:
    type: int
    flags: int
    stream_id: int
    payload: bytes
    headers: list[tuple[bytes, bytes]] | None = None  # HEADERS: the decoded block (once complete)

    def __repr__(self) -> str:
        name = TYPE_NAMES.get(self.type, f"type{self.type}")
        extra = ""
        if self.type in (RST_STREAM, GOAWAY) and len(self.payload) >= 4:
            extra = f" {ERROR_NAMES.get(self.error_code, hex(self.error_code))}"
        return f"<{name} flags={self.flags:#x} stream={self.stream_id} len={len(self.payload)}{extra}>"

    @property
    def error_code(self) -> int:
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        raise ValueError(f"{self!r} has no error code")

    @property
    def last_stream_id(self) -> int:
        assert self.type == GOAWAY
        return struct.unpack(">I", self.payload[:4])[0] & 0x7FFFFFFF

    @property
    def debug(self) -> bytes:
        assert self.type == GOAWAY
        return self.payload[8:]

    def header(self, name: str) -> str | None:
        for n, v in self.headers or []:
            if n == name.encode():
                return v.decode("latin-1")
        return None


class RawH2:
    """A client connection that sends exact bytes and reads frames.

    Starts with the preface and a SETTINGS frame (the proxy requires
    SETTINGS first) and, with ``handshake``, waits for the proxy's SETTINGS
    and acknowledges it before returning, so that no ACK of ours can land in
    the middle of a header block a test sends later.
    """

    def __init__(self, addr: tuple[str, int], client_settings: list[tuple[int, int]] | tuple = (),
                 timeout: float = 5.0, handshake: bool = True, preface: bool = True) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.frames: list[Frame] = []
        self.decoder = hpack.Decoder()  # the proxy's header blocks, decoded in order
        self.decoder.max_header_list_size = 1 << 24
        self._block: tuple[Frame, bytearray] | None = None
        self.eof = False
        self.send_failed: OSError | None = None
        self.ack_settings = handshake
        if preface:
            self.send(PREFACE + settings(client_settings))
        if preface and handshake:
            got = self.wait_frame(lambda f: f.type == SETTINGS and not f.flags & ACK, timeout)
            assert got is not None, f"the proxy sent no SETTINGS; frames: {self.frames!r}"
            self.ack_settings = False  # later SETTINGS are the test's business

    def send(self, payload: bytes) -> bool:
        """Send all of it; False (and ``send_failed`` set) if the proxy closed first."""
        if self.send_failed is not None:
            return False
        try:
            self.sock.settimeout(10)
            self.sock.sendall(payload)
            return True
        except OSError as err:
            self.send_failed = err
            return False

    def flood(self, chunks: list[bytes] | Any, limit: float = 10.0) -> int:
        """Send chunk after chunk, reading between them, until done or a
        GOAWAY/EOF/send error; returns how many chunks went out. Reading as
        we go keeps the proxy's GOAWAY from being lost to a TCP reset."""
        sent = 0
        end = deadline_in(limit)
        for chunk in chunks:
            if time.monotonic() > end or not self.send(chunk):
                break
            sent += 1
            self._read_available(0)
            if self.eof or any(f.type == GOAWAY for f in self.frames):
                break
        return sent

    def _read_available(self, wait: float) -> None:
        if self.eof:
            return
        readable, _, _ = select.select([self.sock], [], [], wait)
        if not readable:
            return
        try:
            chunk = self.sock.recv(1 << 18)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return
        self.buf += chunk
        self._parse()

    def _parse(self) -> None:
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.buf[9 : 9 + length])
            del self.buf[: 9 + length]
            got = Frame(ftype, flags, sid, payload)
            self.frames.append(got)
            if ftype == SETTINGS and not flags & ACK and self.ack_settings:
                self.send(settings(ack=True))
            elif ftype == HEADERS:
                self._block = (got, bytearray(_header_fragment(flags, payload)))
            elif ftype == CONTINUATION and self._block is not None:
                self._block[1].extend(payload)
            if ftype in (HEADERS, CONTINUATION) and flags & END_HEADERS and self._block is not None:
                head, block = self._block
                self._block = None
                head.headers = [(bytes(n), bytes(v)) for n, v in self.decoder.decode(bytes(block), raw=True)]

    def wait_frame(self, predicate, timeout: float = 5.0) -> Frame | None:
        """The first frame received (ever, on this connection) that matches;
        None on EOF or timeout."""
        end = deadline_in(timeout)
        seen = 0
        while True:
            for got in self.frames[seen:]:
                if predicate(got):
                    return got
            seen = len(self.frames)
            remaining = end - time.monotonic()
            if self.eof or remaining <= 0:
                return None
            self._read_available(min(remaining, 0.1))

    def goaway(self, timeout: float = 5.0) -> Frame:
        """The GOAWAY the proxy sent (waits for it); fails listing what came instead."""
        got = self.wait_frame(lambda f: f.type == GOAWAY, timeout)
        assert got is not None, (
            f"no GOAWAY within {timeout}s (eof={self.eof}, send error={self.send_failed!r}); "
            f"frames: {self.frames[-20:]!r}"
        )
        return got

    def closed_within(self, timeout: float = 3.0) -> bool:
        """True once the proxy closes the TCP connection within ``timeout``
        (whatever frames it sends before that are kept)."""
        end = deadline_in(timeout)
        while not self.eof:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            self._read_available(min(remaining, 0.1))
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _header_fragment(flags: int, payload: bytes) -> bytes:
    # A HEADERS payload without its padding and priority fields.
    start, end = 0, len(payload)
    if flags & PADDED:
        start, end = 1, len(payload) - payload[0]
    if flags & PRIORITY_FLAG:
        start += 5
    return payload[start:end]


def rss_kib(pid: int) -> int:
    """The resident set size of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
