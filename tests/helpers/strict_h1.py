"""Strict RFC 9112 reading of captured HTTP/1 byte streams, to judge what a proxy let through.

``read_requests`` and ``read_responses`` frame a byte stream message by message
and list every way it departs from what a careful sender emits (RFC 9112 and
9110): CRLF line ends only, no obs-fold, tokens where tokens belong, at most one
framing field and a well-formed one, nothing after a message that ends its
connection, one Host that agrees with an absolute-form
target, no hop-by-hop or h2c-upgrade fields left in. Reading stops at the first
problem that makes framing unknowable, since nothing after it can be placed.

``h11_problems`` runs the independent ``h11`` parser over the same bytes as a
second opinion. h11 is laxer than these rules in places (bare LF line ends, for
one), never meant to be stricter, so a stream that passes both is sound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import h11

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(TOKEN + rb"\Z")
# field-value chars once the surrounding OWS is trimmed: VCHAR, obs-text, SP, HTAB.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb"|" + _QUOTED + rb"))?)*)\Z"
)
_PCHARS = rb"A-Za-z0-9\-._~!$&'()*+,;=:@%"
_ORIGIN_FORM = re.compile(rb"/[" + _PCHARS + rb"/]*(?:\?[" + _PCHARS + rb"/?]*)?\Z")
_ABSOLUTE_FORM = re.compile(rb"(https?)://([^/?#]*)([/?][" + _PCHARS + rb"/?]*)?\Z", re.IGNORECASE)
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?\Z")
_BAD_PCT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3}) [\t\x20-\x7e\x80-\xff]*\Z")
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
KNOWN_CODINGS = (b"chunked", b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress")
# Fields that belong to one connection (RFC 9110 7.6.1) and must not be forwarded.
HOP_BY_HOP = (b"keep-alive", b"proxy-connection", b"http2-settings")
# What a Connection field a proxy sends may still name.
CONNECTION_OPTIONS = (b"close", b"keep-alive", b"upgrade")
# Fields a trailer section must not carry: they frame, route or control the message.
NOT_IN_TRAILERS = (b"content-length", b"transfer-encoding", b"host", b"connection", b"te", b"trailer",
                   b"upgrade", b"keep-alive", b"proxy-connection", b"content-type", b"content-encoding")
MAX_CHUNK = 1 << 62


@dataclass
class Message:
    """One message as framed by the strict reading."""

    offset: int  # where its start line begins in the stream
    start_line: bytes
    fields: list[tuple[bytes, bytes]]  # (name as sent, value with OWS trimmed)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    complete: bool = False

    def get_all(self, name: str | bytes) -> list[bytes]:
        key = (name.encode() if isinstance(name, str) else name).lower()
        return [v for n, v in self.fields if n.lower() == key]

    def get(self, name: str | bytes) -> bytes | None:
        values = self.get_all(name)
        return values[0] if values else None

    def tokens(self, name: str | bytes) -> list[bytes]:
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(b",") if t.strip()]

    @property
    def parts(self) -> list[bytes]:
        return self.start_line.split(b" ", 2)

    @property
    def method(self) -> bytes:
        return self.parts[0]

    @property
    def target(self) -> bytes:
        parts = self.parts
        return parts[1] if len(parts) > 1 else b""

    @property
    def status(self) -> int:
        try:
            return int(self.parts[1])
        except (IndexError, ValueError):
            return 0


@dataclass
class Reading:
    """A stream read strictly: the messages framed, the problems found, and
    whether the bytes stop inside a message (``incomplete``)."""

    messages: list[Message] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    incomplete: bool = False
    switched: bool = False  # a 101 ended HTTP/1 on this stream

    @property
    def ok(self) -> bool:
        return not self.problems

    def complete_messages(self) -> list[Message]:
        return [m for m in self.messages if m.complete]


class _Stop(Exception):
    """Framing is unknowable from here on."""


class _Need(Exception):
    """The bytes end inside a message."""


class _Reader:
    def __init__(self, data: bytes, eof: bool) -> None:
        self.data = data
        self.eof = eof
        self.pos = 0
        self.reading = Reading()
        self.partial = (0, b"")  # where the unfinished last line starts, and its bytes

    def problem(self, at: int, text: str) -> None:
        self.reading.problems.append(f"@{at}: {text}")

    def line(self) -> tuple[int, bytes]:
        """The next CRLF-terminated line (without it); bare CR or LF stops."""
        start = self.pos
        eol = self.data.find(b"\r\n", start)
        text = self.data[start:] if eol < 0 else self.data[start:eol]
        check = text[:-1] if eol < 0 and text.endswith(b"\r") else text
        for bad in (b"\n", b"\r"):
            idx = check.find(bad)
            if idx >= 0:
                kind = "LF" if bad == b"\n" else "CR"
                self.problem(start + idx, f"bare {kind} in {_show(text)}")
                raise _Stop
        if eol < 0:
            self.partial = (start, check)
            raise _Need
        self.pos = eol + 2
        return start, text

    def field_lines(self, what: str) -> list[tuple[bytes, bytes]]:
        fields = []
        while True:
            at, text = self.line()
            if text == b"":
                return fields
            if text[:1] in (b" ", b"\t"):
                self.problem(at, f"obs-fold (line starts with whitespace) in {what}: {_show(text)}")
                raise _Stop
            name, colon, value = text.partition(b":")
            if not colon:
                self.problem(at, f"{what} line without a colon: {_show(text)}")
                raise _Stop
            if not _TOKEN.match(name):
                self.problem(at, f"{what} name is not a token: {_show(name)}")
                raise _Stop
            value = value.strip(b" \t")
            if not _FIELD_VALUE.match(value):
                self.problem(at, f"control byte in {what} value: {_show(text)}")
            fields.append((name, value))

    def take(self, count: int) -> bytes:
        if len(self.data) - self.pos < count:
            raise _Need
        out = self.data[self.pos : self.pos + count]
        self.pos += count
        return out

    def chunked(self, msg: Message) -> None:
        body = bytearray()
        while True:
            at, text = self.line()
            match = _CHUNK_LINE.match(text)
            if not match:
                self.problem(at, f"bad chunk-size line {_show(text)}")
                raise _Stop
            size = int(match.group(1), 16)
            if size >= MAX_CHUNK:
                self.problem(at, f"chunk size overflows: {_show(match.group(1))}")
                raise _Stop
            if size == 0:
                break
            body += self.take(size)
            end = self.pos
            if self.take(2) != b"\r\n":
                self.problem(end, "chunk data not followed by CRLF")
                raise _Stop
        msg.body = bytes(body)
        msg.trailers = self.field_lines("trailer")
        for name, _ in msg.trailers:
            if name.lower() in NOT_IN_TRAILERS:
                self.problem(msg.offset, f"trailer field {_show(name)} is not allowed in trailers")


def _show(data: bytes, limit: int = 80) -> str:
    text = repr(data[:limit])
    return text + ("..." if len(data) > limit else "")


# ---------------------------------------------------------------------------
# checks shared by requests and responses


def _check_fields(r: _Reader, msg: Message, forwarded: bool) -> None:
    connection = msg.tokens("connection")
    for token in connection:
        if token in (b"content-length", b"transfer-encoding", b"host"):
            r.problem(msg.offset, f"Connection names {token.decode()}")
        elif forwarded and token not in CONNECTION_OPTIONS:
            r.problem(msg.offset, f"Connection names {_show(token)}: a hop-by-hop option left in")
    if forwarded:
        present = {n.lower() for n, _ in msg.fields}
        for name in HOP_BY_HOP:
            if name in present:
                r.problem(msg.offset, f"hop-by-hop field {name.decode()} forwarded")
        for token in connection:
            if token not in CONNECTION_OPTIONS and token in present:
                r.problem(msg.offset, f"field {token.decode()} named by Connection forwarded")
        te = msg.tokens("te")
        if any(t.split(b";")[0].strip() != b"trailers" for t in te):
            r.problem(msg.offset, f"TE other than 'trailers' forwarded: {msg.get_all('te')!r}")
        upgrade = msg.tokens("upgrade")
        if any(t.split(b"/")[0] in (b"h2c", b"h2") for t in upgrade):
            r.problem(msg.offset, f"Upgrade to HTTP/2 forwarded: {msg.get_all('upgrade')!r}")


def _framing(r: _Reader, msg: Message, version: bytes, request: bool) -> tuple[str, int]:
    """("chunked"|"length"|"none"|"close", length). Raises _Stop when unknowable."""
    lengths = msg.get_all("content-length")
    codings_fields = msg.get_all("transfer-encoding")
    if len(lengths) > 1:
        r.problem(msg.offset, f"{len(lengths)} Content-Length fields: {lengths!r}")
        raise _Stop
    if len(codings_fields) > 1:
        r.problem(msg.offset, f"{len(codings_fields)} Transfer-Encoding fields: {codings_fields!r}")
        raise _Stop
    if lengths and codings_fields:
        r.problem(msg.offset, "both Content-Length and Transfer-Encoding")
        raise _Stop
    if codings_fields:
        if version != b"HTTP/1.1":
            r.problem(msg.offset, f"Transfer-Encoding in an {version.decode('latin-1')} message")
            raise _Stop
        codings = [c.strip().lower() for c in codings_fields[0].split(b",")]
        if any(c not in KNOWN_CODINGS for c in codings):
            r.problem(msg.offset, f"unknown or malformed transfer coding {codings_fields[0]!r}")
            raise _Stop
        if codings.count(b"chunked") > 1 or (b"chunked" in codings and codings[-1] != b"chunked"):
            r.problem(msg.offset, f"chunked applied twice or not last: {codings_fields[0]!r}")
            raise _Stop
        if codings[-1] == b"chunked":
            return "chunked", 0
        if request:
            r.problem(msg.offset, f"request Transfer-Encoding not ending in chunked: {codings_fields[0]!r}")
            raise _Stop
        return "close", 0
    if lengths:
        if not re.fullmatch(rb"[0-9]{1,18}", lengths[0]):
            r.problem(msg.offset, f"bad Content-Length {lengths[0]!r}")
            raise _Stop
        return "length", int(lengths[0])
    return ("none", 0) if request else ("close", 0)


def _body(r: _Reader, msg: Message, kind: str, length: int) -> None:
    if kind == "chunked":
        r.chunked(msg)
    elif kind == "length":
        msg.body = r.take(length)
    elif kind == "close":
        msg.body = r.data[r.pos :]
        r.pos = len(r.data)
        if not r.eof:
            raise _Need


# ---------------------------------------------------------------------------
# requests


def _check_host(r: _Reader, msg: Message, version: bytes) -> None:
    hosts = msg.get_all("host")
    if len(hosts) > 1:
        r.problem(msg.offset, f"{len(hosts)} Host fields: {hosts!r}")
    elif not hosts and version == b"HTTP/1.1":
        r.problem(msg.offset, "HTTP/1.1 request without Host")
    for host in hosts:
        if not _HOST.match(host):
            r.problem(msg.offset, f"invalid Host {host!r}")
    absolute = _ABSOLUTE_FORM.match(msg.target)
    if absolute and hosts and hosts[0].lower() != absolute.group(2).lower():
        r.problem(msg.offset, f"Host {hosts[0]!r} differs from the target's authority {absolute.group(2)!r}")


def _check_request_line(r: _Reader, msg: Message) -> bytes:
    """Returns the version; raises _Stop when the line cannot be a request line."""
    parts = msg.start_line.split(b" ")
    if len(parts) != 3:
        r.problem(msg.offset, f"request line is not 'method SP target SP version': {_show(msg.start_line)}")
        raise _Stop
    method, target, version = parts
    if not _TOKEN.match(method):
        r.problem(msg.offset, f"method is not a token: {_show(method)}")
    if version not in _VERSIONS:
        r.problem(msg.offset, f"version {_show(version)} is not HTTP/1.0 or HTTP/1.1")
        raise _Stop
    if method == b"CONNECT":
        ok = bool(re.fullmatch(rb"[A-Za-z0-9\-._~%!$&'()*+,;=\[\]:]+:[0-9]+", target))
    elif target == b"*":
        ok = method == b"OPTIONS"
    else:
        absolute = _ABSOLUTE_FORM.match(target)
        ok = bool(_ORIGIN_FORM.match(target)) or bool(
            absolute and absolute.group(2) and _HOST.match(absolute.group(2)) and b"@" not in absolute.group(2))
    if not ok or _BAD_PCT.search(target):
        r.problem(msg.offset, f"invalid request-target {_show(target)}")
    return version


def _persistent(msg: Message, version: bytes) -> bool:
    """RFC 9112 9.3: may another request follow this one on the connection?"""
    connection = msg.tokens("connection")
    if b"close" in connection:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in connection


def read_requests(data: bytes, forwarded: bool = True) -> Reading:
    """Requests as a server reads them. ``forwarded``: the bytes came from a
    proxy, so hop-by-hop fields must be gone as well."""
    r = _Reader(data, eof=False)
    while r.pos < len(data):
        msg = None
        try:
            at, line = r.line()
            if line == b"":
                r.problem(at, "empty line before a request line")
                raise _Stop
            msg = Message(at, line, [])
            r.reading.messages.append(msg)
            version = _check_request_line(r, msg)
            msg.fields = r.field_lines("header")
            _check_host(r, msg, version)
            _check_fields(r, msg, forwarded)
            kind, length = _framing(r, msg, version, request=True)
            _body(r, msg, kind, length)
            msg.complete = True
            if r.pos < len(data) and not _persistent(msg, version):
                r.problem(r.pos, f"bytes after a request that ends its connection: {_show(data[r.pos:])}")
                break
        except _Need:
            r.reading.incomplete = True
            _check_partial(r, start_line=msg is None)
            break
        except _Stop:
            break
    return r.reading


_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_START_LINE = re.compile(rb"[^\x20-\x7e]")


def _check_partial(r: _Reader, start_line: bool) -> None:
    """An unfinished line is still judged by the bytes it has: garbage
    cannot become a valid line by what follows."""
    at, text = r.partial
    bad = (_NOT_START_LINE if start_line else _CTL).search(text)
    if bad:
        r.problem(at + bad.start(), f"cannot start a valid line: {_show(text)}")


# ---------------------------------------------------------------------------
# responses


def read_responses(data: bytes, methods: list[str] | None = None, eof: bool = False,
                   upgrade_ok: bool = False, forwarded: bool = True) -> Reading:
    """Responses as a client reads them: ``methods`` are the requests'
    methods in order (a HEAD response has no body; GET when not given);
    ``eof``: the peer closed after these bytes (ends a body read until close)."""
    r = _Reader(data, eof=eof)
    methods = list(methods or [])
    index = 0  # which request the next final response answers
    while r.pos < len(data):
        try:
            at, line = r.line()
            msg = Message(at, line, [])
            r.reading.messages.append(msg)
            match = _STATUS_LINE.match(line)
            if not match:
                r.problem(at, f"bad status line {_show(line)}")
                raise _Stop
            status = int(match.group(1))
            version = line[:8]
            if not 100 <= status <= 599:
                r.problem(at, f"status {status} outside 100-599")
            msg.fields = r.field_lines("header")
            _check_fields(r, msg, forwarded)
            method = methods[index].upper() if index < len(methods) else "GET"
            if status == 101:
                if not upgrade_ok:
                    r.problem(at, "101 Switching Protocols to a request that asked for no upgrade")
                msg.complete = True
                r.reading.switched = True
                break
            if status < 200 or status == 204 or status == 304:
                if msg.get_all("transfer-encoding") or (status != 304 and msg.get_all("content-length")):
                    r.problem(at, f"{status} response with framing fields")
                msg.complete = True
                if status >= 200:
                    index += 1
                continue
            if method == "HEAD":
                _framing(r, msg, version, request=False)  # still checked, never read
                msg.complete = True
                index += 1
                continue
            kind, length = _framing(r, msg, version, request=False)
            _body(r, msg, kind, length)
            msg.complete = True
            index += 1
        except _Need:
            r.reading.incomplete = True
            break
        except _Stop:
            break
    return r.reading


# ---------------------------------------------------------------------------
# a second opinion: h11


def h11_problems(data: bytes, role: str, methods: list[str] | None = None, eof: bool = False) -> list[str]:
    """What h11 objects to in ``data``: ``role`` "server" reads requests,
    "client" reads responses to ``methods``. An incomplete tail is not a problem."""
    methods = list(methods or [])
    rest = data
    index = 0
    while rest:
        if role == "server":
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 22)
        else:
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 22)
            method = methods[index] if index < len(methods) else "GET"
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "h11.check")]))
            conn.send(h11.EndOfMessage())
        conn.receive_data(rest)
        if eof:
            conn.receive_data(b"")
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    return []
                if isinstance(event, h11.EndOfMessage):
                    break
        except h11.RemoteProtocolError as err:
            if "without sending complete message" in str(err):
                return []  # cut short: incomplete, not malformed
            return [f"h11 ({role}): {err}"]
        rest = conn.trailing_data[0]
        index += 1
    return []
