"""What an HTTP/2 client sent, decoded from captured bytes, and judged strictly as requests (RFC 9113 8.2-8.3).

``decode_requests`` walks the frames of one connection (after the preface),
reassembles header blocks across CONTINUATION, decodes them in order with the
independent ``hpack`` package (its dynamic table follows the stream), and
keeps per stream the request head, trailers, DATA length and how the stream
ended. ``request_problems`` lists what makes a stream malformed: pseudo-header
rules, names that are not lowercase tokens, connection-specific fields, CR,
LF or NUL in values, a ``host`` that disagrees with ``:authority``, a body
that does not match its ``content-length``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, CONTINUATION = 0x0, 0x1, 0x3, 0x9
END_STREAM, END_HEADERS, PADDED, PRIORITY = 0x1, 0x4, 0x8, 0x20

_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 3986 path and query characters: no space, CTL, '#', or other delimiter.
_PATH = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*)?\Z")
_AUTHORITY = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?\Z")
CONNECTION_SPECIFIC = (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
                       b"http2-settings")
REQUEST_PSEUDO = (b":method", b":scheme", b":authority", b":path", b":protocol")

Fields = list[tuple[bytes, bytes]]


@dataclass
class H2Stream:
    """One client stream as it crossed the wire."""

    id: int
    offset: int  # where its first HEADERS frame starts in the captured bytes
    headers: Fields
    trailers: Fields | None = None
    data_length: int = 0
    ended: bool = False
    reset: bool = False
    never_indexed: list[bytes] = field(default_factory=list)  # names sent as never-indexed literals

    def get(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


@dataclass
class Decoded:
    streams: dict[int, H2Stream] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # frame or HPACK level


def decode_requests(data: bytes) -> Decoded:
    out = Decoded()
    pos = len(PREFACE) if data.startswith(PREFACE) else 0
    decoder = hpack.Decoder()
    decoder.max_header_list_size = 1 << 24
    block: tuple[int, int, int, bytearray] | None = None  # (stream, offset, flags of HEADERS, fragment)
    while len(data) - pos >= 9:
        length = int.from_bytes(data[pos : pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if len(data) - pos - 9 < length:
            break
        payload = data[pos + 9 : pos + 9 + length]
        offset = pos
        pos += 9 + length
        if ftype == HEADERS:
            block = (sid, offset, flags, bytearray(_fragment(flags, payload)))
        elif ftype == CONTINUATION and block is not None:
            block[3].extend(payload)
        elif ftype == DATA and sid in out.streams:
            pad = payload[0] + 1 if flags & PADDED and payload else 0
            stream = out.streams[sid]
            stream.data_length += length - pad
            stream.ended = stream.ended or bool(flags & END_STREAM)
        elif ftype == RST_STREAM and sid in out.streams:
            out.streams[sid].reset = True
        if ftype in (HEADERS, CONTINUATION) and flags & END_HEADERS and block is not None:
            bsid, boffset, bflags, fragment = block
            block = None
            try:
                got = decoder.decode(bytes(fragment), raw=True)
                fields = [(bytes(n), bytes(v)) for n, v in got]
                never = [bytes(f[0]) for f in got if isinstance(f, hpack.NeverIndexedHeaderTuple)]
            except hpack.HPACKError as err:
                out.problems.append(f"stream {bsid}: undecodable header block: {err!r}")
                return out
            if bsid in out.streams:
                out.streams[bsid].trailers = fields
                out.streams[bsid].ended = out.streams[bsid].ended or bool(bflags & END_STREAM)
            else:
                out.streams[bsid] = H2Stream(bsid, boffset, fields, ended=bool(bflags & END_STREAM),
                                             never_indexed=never)
    return out


def _fragment(flags: int, payload: bytes) -> bytes:
    start, end = 0, len(payload)
    if flags & PADDED and payload:
        start, end = 1, len(payload) - payload[0]
    if flags & PRIORITY:
        start += 5
    return payload[start:end]


def _field_problems(fields: Fields, where: str) -> list[str]:
    out = []
    for name, value in fields:
        if name.startswith(b":"):
            continue
        if not _NAME.match(name):
            out.append(f"{where}: field name {name!r} is not a lowercase token")
        if name in CONNECTION_SPECIFIC:
            out.append(f"{where}: connection-specific field {name!r}")
        if name == b"te" and value.strip() != b"trailers":
            out.append(f"{where}: te {value!r}")
        if any(c in value for c in b"\x00\r\n"):
            out.append(f"{where}: NUL, CR or LF in {name!r}: {value!r}")
        if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
            out.append(f"{where}: whitespace around the value of {name!r}: {value!r}")
    return out


def request_problems(stream: H2Stream) -> list[str]:
    where = f"stream {stream.id}"
    out = []
    pseudo: dict[bytes, bytes] = {}
    regular_seen = False
    for name, value in stream.headers:
        if name.startswith(b":"):
            if regular_seen:
                out.append(f"{where}: pseudo-header {name!r} after a regular field")
            if name not in REQUEST_PSEUDO:
                out.append(f"{where}: pseudo-header {name!r} in a request")
            if name in pseudo:
                out.append(f"{where}: {name!r} twice")
            pseudo[name] = value
            if any(c in value for c in b"\x00\r\n"):
                out.append(f"{where}: NUL, CR or LF in {name!r}: {value!r}")
        else:
            regular_seen = True
    out += _field_problems(stream.headers, where)
    method = pseudo.get(b":method")
    if method is None or not _TOKEN.match(method):
        out.append(f"{where}: :method {method!r}")
    if b":protocol" in pseudo and method != b"CONNECT":
        out.append(f"{where}: :protocol on a {method!r} request (RFC 8441 allows it on CONNECT only)")
    if method == b"CONNECT":
        if b":authority" not in pseudo or b":path" in pseudo or b":scheme" in pseudo:
            out.append(f"{where}: malformed CONNECT pseudo-headers {sorted(pseudo)!r}")
    else:
        path = pseudo.get(b":path")
        if path is None or not (_PATH.match(path) or (path == b"*" and method == b"OPTIONS")):
            out.append(f"{where}: :path {path!r}")
        if pseudo.get(b":scheme") not in (b"http", b"https"):
            out.append(f"{where}: :scheme {pseudo.get(b':scheme')!r}")
    authority = pseudo.get(b":authority")
    if authority is not None and (not _AUTHORITY.match(authority)):
        out.append(f"{where}: :authority {authority!r}")
    hosts = [v for n, v in stream.headers if n == b"host"]
    if len(hosts) > 1 or (hosts and authority is not None and hosts[0] != authority):
        out.append(f"{where}: host {hosts!r} with :authority {authority!r}")
    lengths = [v for n, v in stream.headers if n == b"content-length"]
    if lengths:
        if len(lengths) > 1 or not lengths[0].isdigit():
            out.append(f"{where}: content-length {lengths!r}")
        else:
            declared = int(lengths[0])
            if stream.data_length > declared or (stream.ended and stream.data_length != declared):
                out.append(f"{where}: {stream.data_length} DATA bytes for content-length {declared}"
                           f"{' (ended)' if stream.ended else ''}")
    if stream.trailers is not None:
        if any(n.startswith(b":") for n, _ in stream.trailers):
            out.append(f"{where}: pseudo-header in trailers")
        out += _field_problems(stream.trailers, f"{where} trailers")
    return out
