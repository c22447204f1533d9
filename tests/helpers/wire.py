"""HTTP/1 messages read off a socket, with every received byte kept.

Both sides of the tests use this: upstream servers to see exactly what the
proxy forwarded, clients to see exactly what the proxy answered. It parses
just enough to find message boundaries (Content-Length, chunked, read until
close, no body for HEAD/1xx/204/304) and refuses to guess beyond that.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"


class WireError(Exception):
    """The peer sent something these helpers cannot frame."""


class PeerClosed(WireError):
    """EOF arrived before the message was complete."""


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


class Stream:
    """A connected socket with a receive buffer; ``received`` keeps every byte."""

    def __init__(self, sock: socket.socket, keep: bool = True) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.received = bytearray()
        self.keep = keep
        self.eof = False

    def fill(self, deadline: float, size: int = 65536) -> bool:
        """Receive once; False on EOF. Raises TimeoutError past the deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed while waiting for bytes")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            raise TimeoutError("deadline passed while waiting for bytes") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        if self.keep:
            self.received += data
        return True

    def read_until(self, delim: bytes, deadline: float, limit: int = 1 << 20) -> bytes:
        start = 0
        while True:
            idx = self.buf.find(delim, start)
            if idx >= 0:
                end = idx + len(delim)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise WireError(f"no {delim!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self.fill(deadline):
                raise PeerClosed(f"EOF before {delim!r}; buffered {bytes(self.buf[:200])!r}")

    def read_exact(self, count: int, deadline: float) -> bytes:
        while len(self.buf) < count:
            if not self.fill(deadline, max(65536, count - len(self.buf))):
                raise PeerClosed(f"EOF after {len(self.buf)} of {count} bytes")
        out = bytes(self.buf[:count])
        del self.buf[:count]
        return out

    def read_until_close(self, deadline: float, limit: int = 64 << 20) -> bytes:
        while self.fill(deadline, 1 << 18):
            if len(self.buf) > limit:
                raise WireError(f"more than {limit} bytes before EOF")
        out = bytes(self.buf)
        self.buf.clear()
        return out


@dataclass
class Head:
    """A request or response head exactly as received."""

    raw: bytes  # start line .. blank line, CRLFs included
    start_line: bytes
    headers: list[tuple[bytes, bytes]]  # name as sent (case kept), value trimmed

    def get(self, name: str | bytes) -> bytes | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str | bytes) -> list[bytes]:
        key = (name.encode() if isinstance(name, str) else name).lower()
        return [v for n, v in self.headers if n.lower() == key]

    def names(self) -> list[bytes]:
        return [n for n, _ in self.headers]

    def has_token(self, name: str, token: str) -> bool:
        want = token.lower().encode()
        return any(
            part.strip().lower() == want for v in self.get_all(name) for part in v.split(b",")
        )


def parse_head(raw: bytes) -> Head:
    if not raw.endswith(HEAD_END):
        raise WireError("head does not end with CRLFCRLF")
    lines = raw[: -len(HEAD_END)].split(CRLF)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise WireError(f"header line without colon: {line!r}")
        headers.append((name, value.strip(b" \t")))
    return Head(raw=raw, start_line=lines[0], headers=headers)


@dataclass
class Body:
    data: bytes = b""
    raw: bytes = b""  # framing included (chunk sizes, trailers)
    chunked: bool = False
    until_close: bool = False
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


def read_chunked(stream: Stream, deadline: float) -> Body:
    data = bytearray()
    raw = bytearray()
    while True:
        line = stream.read_until(CRLF, deadline, limit=4096)
        raw += line
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise WireError(f"bad chunk size line {line!r}") from None
        if size == 0:
            break
        chunk = stream.read_exact(size + 2, deadline)
        raw += chunk
        if chunk[-2:] != CRLF:
            raise WireError("chunk not followed by CRLF")
        data += chunk[:-2]
    trailers = []
    while True:
        line = stream.read_until(CRLF, deadline, limit=65536)
        raw += line
        if line == CRLF:
            break
        name, colon, value = line[:-2].partition(b":")
        if not colon:
            raise WireError(f"bad trailer line {line!r}")
        trailers.append((name, value.strip(b" \t")))
    return Body(data=bytes(data), raw=bytes(raw), chunked=True, trailers=trailers)


def _framing(head: Head) -> tuple[bool, int | None]:
    chunked = head.has_token("transfer-encoding", "chunked")
    lengths = head.get_all("content-length")
    length = int(lengths[0]) if lengths else None
    return chunked, length


@dataclass
class Request:
    head: Head
    method: str
    target: str
    version: str
    body: Body
    conn_id: int = 0
    index: int = 0  # position on its connection, from 0

    @property
    def path(self) -> str:
        return urlsplit(self.target).path or self.target

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}

    @property
    def raw(self) -> bytes:
        return self.head.raw + self.body.raw


def read_request_head(stream: Stream, deadline: float, limit: int = 1 << 20) -> Head:
    return parse_head(stream.read_until(HEAD_END, deadline, limit))


def split_request_line(head: Head) -> tuple[str, str, str]:
    parts = head.start_line.split(b" ")
    if len(parts) != 3:
        raise WireError(f"bad request line {head.start_line!r}")
    method, target, version = (p.decode("latin-1") for p in parts)
    return method, target, version


def read_request_body(stream: Stream, head: Head, deadline: float) -> Body:
    chunked, length = _framing(head)
    if chunked:
        return read_chunked(stream, deadline)
    if length:
        data = stream.read_exact(length, deadline)
        return Body(data=data, raw=data)
    return Body()


@dataclass
class Response:
    head: Head
    version: str
    status: int
    reason: str
    body: Body

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.head.headers

    def header(self, name: str) -> str | None:
        value = self.head.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def data(self) -> bytes:
        return self.body.data


def read_response(
    stream: Stream, deadline: float, method: str = "GET", limit: int = 1 << 20
) -> Response:
    """The next response on the stream (1xx included; see ``read_final``)."""
    head = parse_head(stream.read_until(HEAD_END, deadline, limit))
    parts = head.start_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise WireError(f"bad status line {head.start_line!r}")
    version = parts[0].decode()
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    tunnel = method.upper() == "CONNECT" and 200 <= status < 300
    if status < 200 or status in (204, 304) or method.upper() == "HEAD" or tunnel:
        body = Body()
    else:
        chunked, length = _framing(head)
        if chunked:
            body = read_chunked(stream, deadline)
        elif length is not None:
            data = stream.read_exact(length, deadline)
            body = Body(data=data, raw=data)
        else:
            data = stream.read_until_close(deadline)
            body = Body(data=data, raw=data, until_close=True)
    return Response(head=head, version=version, status=status, reason=reason, body=body)


def read_final(stream: Stream, deadline: float, method: str = "GET") -> tuple[list[Response], Response]:
    """Interim (1xx other than 101) responses and the final one."""
    interim = []
    while True:
        resp = read_response(stream, deadline, method)
        if 100 <= resp.status < 200 and resp.status != 101:
            interim.append(resp)
            continue
        return interim, resp


def request_bytes(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """Serialize a request exactly as given; adds Content-Length only for a body
    when the caller gave no framing header."""
    headers = list(headers or [])
    names = {n.lower() for n, _ in headers}
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    lines = [f"{method} {target} {version}"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked_bytes(chunks: list[bytes], trailers: list[tuple[str, str]] | None = None) -> bytes:
    out = bytearray()
    for chunk in chunks:
        if chunk:
            out += f"{len(chunk):x}\r\n".encode() + chunk + CRLF
    out += b"0\r\n"
    for name, value in trailers or []:
        out += f"{name}: {value}\r\n".encode("latin-1")
    out += CRLF
    return bytes(out)
