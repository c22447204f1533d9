"""HTTP/1.1 response framing for the Kubernetes API client, sans-IO: heads, chunked bodies, watch lines.

Bytes in, values out; no socket, loop or clock. Everything a server sends is
bounded: the head (``MAX_HEAD``), a chunk-size line (``MAX_CHUNK_LINE``) and a
watch line (the caller's limit, ``MESHPROXY_K8S_MAX_EVENT_BYTES``). A
malformed or oversized input raises ``WireError`` (or ``LineTooLong``), the
server's fault, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD = 64 * 1024  # the API server's heads are a few hundred bytes
MAX_CHUNK_LINE = 1024  # hex size plus any chunk extensions
_HEX = frozenset(b"0123456789abcdefABCDEF")


class WireError(Exception):
    """The server broke HTTP/1.1 framing; the connection cannot be used further."""


class LineTooLong(WireError):
    """A watch line (one event) exceeds the limit."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's values joined with ", "
    version: str  # "HTTP/1.1" or "HTTP/1.0"

    @property
    def chunked(self) -> bool:
        return self.headers.get("transfer-encoding", "").lower().rsplit(",", 1)[-1].strip() == "chunked"

    @property
    def length(self) -> int | None:
        """Content-Length, or None when the body is chunked or runs to the connection's end."""
        if self.chunked or "content-length" not in self.headers:
            return None
        return int(self.headers["content-length"])  # validated by parse_head

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def parse_head(raw: bytes) -> ResponseHead:
    """A response head, from the status line to the blank line (``\\r\\n\\r\\n`` included)."""
    if len(raw) > MAX_HEAD:
        raise WireError(f"response head over {MAX_HEAD} bytes")
    lines = raw.decode("latin-1").split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise WireError("empty response head")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit() or rest[3:4] not in ("", " "):
        raise WireError(f"malformed status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in " \t"):
            raise WireError(f"malformed header line {line[:60]!r}")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise WireError(f"bad Content-Length {headers['content-length'][:40]!r}")
        headers["content-length"] = values.pop()
    head = ResponseHead(int(code), headers, version)
    encoding = headers.get("transfer-encoding")
    if encoding is not None and not head.chunked:
        raise WireError(f"unsupported Transfer-Encoding {encoding[:40]!r}")
    return head


# Chunked body states: what the next bytes must be.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Feed the bytes after a chunked head; get the body's pieces back. ``done`` after the last chunk."""

    def __init__(self) -> None:
        self._state = _SIZE
        self._buffer = bytearray()
        self._remaining = 0  # data bytes left in the current chunk
        self.trailing = b""  # bytes received after the end of the body
        self.error: WireError | None = None  # a framing error found after pieces that were returned

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> list[bytes]:
        """The body's pieces in ``data``. A framing error raises WireError, after the pieces before it
        were returned (by this call; the error then comes with the next)."""
        if self.error is not None:
            raise self.error
        if self._state == _DONE:
            self.trailing += data
            return []
        self._buffer += data
        pieces: list[bytes] = []
        try:
            while self._step(pieces):
                pass
        except WireError as err:
            self.error = err
            if not pieces:
                raise
        return pieces

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CHUNK_LINE:
                raise WireError(f"chunk size line over {MAX_CHUNK_LINE} bytes")
            return None
        if end > MAX_CHUNK_LINE:
            raise WireError(f"chunk size line over {MAX_CHUNK_LINE} bytes")
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 2]
        return line

    def _step(self, pieces: list[bytes]) -> bool:
        """One transition; False when more bytes are needed (or the body ended)."""
        state = self._state
        if state == _DATA:
            if not self._buffer:
                return False
            take = min(self._remaining, len(self._buffer))
            pieces.append(bytes(self._buffer[:take]))
            del self._buffer[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._state = _DATA_END
            return True
        if state == _DATA_END:
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                raise WireError("chunk data not followed by CRLF")
            del self._buffer[:2]
            self._state = _SIZE
            return True
        line = self._line()
        if line is None:
            return False
        if state == _SIZE:
            size_text = line.split(b";", 1)[0].rstrip(b" \t")
            if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
                raise WireError(f"bad chunk size {size_text[:20]!r}")
            self._remaining = int(size_text, 16)
            self._state = _DATA if self._remaining else _TRAILER
            return True
        # _TRAILER: header lines (ignored) until the empty line that ends the message
        if line == b"":
            self._state = _DONE
            self.trailing = bytes(self._buffer)
            self._buffer.clear()
            return False
        return True


class LineSplitter:
    """Newline-delimited watch events, each at most ``limit`` bytes (without its newline)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        start = len(self._buffer)
        self._buffer += data
        if self._buffer.find(b"\n", start) < 0:  # the common case inside a large event: no scan of the rest
            self._check()
            return []
        *lines, rest = bytes(self._buffer).split(b"\n")
        self._buffer = bytearray(rest)
        for line in lines:
            if len(line) > self.limit:
                raise LineTooLong(f"watch event of {len(line)} bytes, over {self.limit}")
        self._check()
        return [line for line in lines if line.strip()]

    def finish(self) -> bytes:
        """What is left once the body has ended (an event without its newline), or b""."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest if rest.strip() else b""

    def _check(self) -> None:
        if len(self._buffer) > self.limit:
            raise LineTooLong(f"watch event over {self.limit} bytes")
