"""The hostile HTTP/1 requests of the corpus, as data: ``Vector(id, bytes, expect)``.

``@H@`` in a vector stands for the backend's ``host:port`` (the outbound
listener routes by it; the inbound one sends everything to the backend
anyway). A request target containing ``smuggled`` marks a request hidden in
another one's body: it must never reach the backend as a request of its own.
``SPLIT_IDS`` names the vectors also sent one byte at a time and cut at
their line ends (``test_h1_split``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .expect import Expect, either, forwarded, pipelined, refused, refused_body

H = b"@H@"
# Its Host is fixed, not @H@: it sits inside bodies whose lengths are counted here.
SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: smuggled.example\r\n\r\n"
GOOD = b"GET /good HTTP/1.1\r\nHost: @H@\r\n\r\n"
# Statuses a proxy may give for a transfer coding it does not know (RFC 9112 6.1).
TE_STATUSES = (400, 501)
TOO_BIG = (400, 413, 414, 431)


@dataclass(frozen=True)
class Vector:
    id: str
    data: bytes
    expect: Expect

    def render(self, hostport: str) -> bytes:
        return self.data.replace(H, hostport.encode())


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


def head(*lines: bytes, start: bytes = b"POST / HTTP/1.1") -> bytes:
    return b"\r\n".join((start, b"Host: @H@") + lines) + b"\r\n\r\n"


VECTORS: list[Vector] = []


def add(vid: str, data: bytes, expect: Expect) -> None:
    VECTORS.append(Vector(vid, data, expect))


# ---------------------------------------------------------------------------
# request smuggling: CL.TE, TE.CL and TE.TE with obfuscated Transfer-Encoding lines

# Each is a whole "Transfer-Encoding" line (or what hides one), and whether it
# is a legal way of saying "chunked" (then TE alone must work, CL+TE is still refused).
TE_LINES: dict[str, tuple[bytes, bool]] = {
    "plain": (b"Transfer-Encoding: chunked", True),
    "xchunked": (b"Transfer-Encoding: xchunked", False),
    "chunkedx": (b"Transfer-Encoding: chunkedx", False),
    "chunked-identity": (b"Transfer-Encoding: chunked, identity", False),
    "identity-chunked": (b"Transfer-Encoding: identity, chunked", False),
    "space-before-colon": (b"Transfer-Encoding : chunked", False),
    "tab-before-colon": (b"Transfer-Encoding\t: chunked", False),
    "tab-before-value": (b"Transfer-Encoding:\tchunked", True),
    "no-space": (b"Transfer-Encoding:chunked", True),
    "vt-before-value": (b"Transfer-Encoding:\x0bchunked", False),
    "ff-before-value": (b"Transfer-Encoding:\x0cchunked", False),
    "vt-after-value": (b"Transfer-Encoding: chunked\x0b", False),
    "nul-in-value": (b"Transfer-Encoding: chun\x00ked", False),
    "nul-after-name": (b"Transfer-Encoding\x00: chunked", False),
    "quoted": (b'Transfer-Encoding: "chunked"', False),
    "with-parameter": (b"Transfer-Encoding: chunked;q=1", False),
    "chunked-twice": (b"Transfer-Encoding: chunked, chunked", False),
    "two-words": (b"Transfer-Encoding: chunked chunked", False),
    "uppercase": (b"TRANSFER-ENCODING: CHUNKED", True),
    "cyrillic-e": ("Transfer-Encoding: chunk\u0435d".encode(), False),
    "leading-comma": (b"Transfer-Encoding: , chunked", True),
    "empty-value": (b"Transfer-Encoding:", False),
    "gzip-only": (b"Transfer-Encoding: gzip", False),
    "obs-fold-line": (b"X-Pad: 1\r\n Transfer-Encoding: chunked", False),
    "obs-fold-value": (b"Transfer-Encoding:\r\n chunked", False),
    "bare-cr-before": (b"X-Pad: 1\rTransfer-Encoding: chunked", False),
    "bare-lf-before": (b"X-Pad: 1\nTransfer-Encoding: chunked", False),
    "dup-chunked-identity": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", False),
    "dup-identity-chunked": (b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked", False),
    "dup-chunked-chunked": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", False),
    "dup-empty-chunked": (b"Transfer-Encoding:\r\nTransfer-Encoding: chunked", False),
}

# CL.TE: the length covers a last-chunk plus a whole second request, so a hop
# that frames by Content-Length and one that frames by chunks disagree.
_CLTE_BODY = b"0\r\n\r\n" + SMUGGLE
# TE.CL: one chunk holds the second request; a Content-Length reader stops
# after the chunk-size line and reads the rest as a new request.
_TECL_BODY = _chunk(SMUGGLE) + b"0\r\n\r\n"
_TECL_CL = len(b"%x\r\n" % len(SMUGGLE))

for _name, (_line, _legal) in TE_LINES.items():
    add(f"smuggle-cl-te.{_name}",
        head(b"Content-Length: %d" % len(_CLTE_BODY), _line) + _CLTE_BODY, refused(*TE_STATUSES))
    add(f"smuggle-te-cl.{_name}",
        head(_line, b"Content-Length: %d" % _TECL_CL) + _TECL_BODY, refused(*TE_STATUSES))
    if _name == "plain":
        continue
    _alone = head(_line) + _chunk(b"hello") + b"0\r\n\r\n"
    add(f"smuggle-te-only.{_name}", _alone, either(*TE_STATUSES) if _legal else refused(*TE_STATUSES))

# A field that only looks like Transfer-Encoding is just a field: the length frames the body.
add("smuggle-cl-te.underscore-name",
    head(b"Content-Length: %d" % len(_CLTE_BODY), b"Transfer_Encoding: chunked") + _CLTE_BODY, either())
# With no length at all the chunk bytes are the next "request": one answered, then refused.
add("smuggle-te-only.underscore-name",
    head(b"Transfer_Encoding: chunked") + _chunk(b"hello") + b"0\r\n\r\n", pipelined(1))
add("smuggle.te-on-http10", head(b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.0")
    + _chunk(b"hello") + b"0\r\n\r\n", either(*TE_STATUSES))
add("smuggle.te-on-http10-with-cl", head(b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(_CLTE_BODY),
                                      start=b"POST / HTTP/1.0") + _CLTE_BODY, refused(*TE_STATUSES))
add("smuggle.te-on-http10-smuggled-chunk", head(b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.0")
    + b"0\r\n\r\n" + SMUGGLE, either(*TE_STATUSES))
add("smuggle.cl-cl-te", head(b"Content-Length: 5", b"Transfer-Encoding: chunked", b"Content-Length: 5")
    + b"0\r\n\r\n", refused(*TE_STATUSES))
add("smuggle.te-gzip-chunked-cl", head(b"Transfer-Encoding: gzip, chunked", b"Content-Length: 3")
    + b"0\r\n\r\n", refused(*TE_STATUSES))
add("smuggle.get-cl-te", head(b"Content-Length: %d" % len(_CLTE_BODY), b"Transfer-Encoding: chunked",
                              start=b"GET / HTTP/1.1") + _CLTE_BODY, refused(*TE_STATUSES))

# ---------------------------------------------------------------------------
# Connection naming framing or routing fields; hop-by-hop fields

add("connection.content-length", head(b"Connection: content-length", b"Content-Length: %d" % len(SMUGGLE),
                                      start=b"GET / HTTP/1.1") + SMUGGLE, either())
add("connection.content-length-upper", head(b"Connection: CONTENT-LENGTH", b"Content-Length: %d" % len(SMUGGLE))
    + SMUGGLE, either())
add("connection.close-content-length", head(b"Connection: close, Content-Length",
                                            b"Content-Length: %d" % len(SMUGGLE)) + SMUGGLE, either())
add("connection.second-field-content-length",
    head(b"Connection: keep-alive", b"Connection: content-length", b"Content-Length: %d" % len(SMUGGLE))
    + SMUGGLE, either())
add("connection.transfer-encoding", head(b"Connection: transfer-encoding", b"Transfer-Encoding: chunked")
    + _chunk(SMUGGLE) + b"0\r\n\r\n", either())
add("connection.keep-alive-transfer-encoding",
    head(b"Connection: keep-alive, Transfer-Encoding", b"Transfer-Encoding: chunked")
    + _chunk(SMUGGLE) + b"0\r\n\r\n", either())
add("connection.host", head(b"Connection: host", start=b"GET / HTTP/1.1"), either())
add("connection.host-upper", head(b"Connection: Host", start=b"GET / HTTP/1.1"), either())
add("connection.host-and-length", head(b"Connection: host, content-length", b"Content-Length: 5") + b"hello",
    either())
add("connection.custom-field", head(b"Connection: x-secret", b"X-Secret: 1", start=b"GET / HTTP/1.1"),
    forwarded())
add("connection.keep-alive-field", head(b"Connection: keep-alive", b"Keep-Alive: timeout=5",
                                        start=b"GET / HTTP/1.1"), forwarded())
add("connection.proxy-connection", head(b"Proxy-Connection: keep-alive", start=b"GET / HTTP/1.1"), forwarded())
add("connection.te-trailers", head(b"TE: trailers", b"Connection: TE", start=b"GET / HTTP/1.1"), forwarded())
add("connection.te-gzip", head(b"TE: gzip", b"Connection: TE", start=b"GET / HTTP/1.1"), forwarded())

# ---------------------------------------------------------------------------
# Content-Length: conflicting, malformed, huge

_CL_BAD = {
    "plus": b"+5", "minus-one": b"-1", "minus-zero": b"-0", "space-inside": b"1 2", "tab-inside": b"1\t2",
    "hex": b"0x10", "decimal": b"5.0", "exponent": b"5e0", "empty": b"", "quoted": b'"5"', "comma-only": b",",
    "list-different": b"5, 6", "trailing-garbage": b"5abc", "nul": b"5\x00",
    "fullwidth-digit": "\uff15".encode(), "arabic-indic-digit": "\u0665".encode(),
    "huge": b"99999999999999999999999999", "two-pow-64": b"18446744073709551616",
}
for _name, _value in _CL_BAD.items():
    _statuses = (400, 413) if _name in ("huge", "two-pow-64") else (400,)
    add(f"content-length.{_name}", head(b"Content-Length: " + _value) + b"hello", refused(*_statuses))
add("content-length.two-different", head(b"Content-Length: 5", b"Content-Length: 6") + b"hello!", refused())
add("content-length.two-same", head(b"Content-Length: 5", b"Content-Length: 5") + b"hello", either())
add("content-length.list-same", head(b"Content-Length: 5, 5") + b"hello", either())
add("content-length.leading-zeros", head(b"Content-Length: 005") + b"hello", either())
add("content-length.space-before-colon", head(b"Content-Length : 5") + b"hello", refused())
add("content-length.obs-fold", head(b"Content-Length:\r\n 5") + b"hello", refused())
add("content-length.underscore-name", head(b"Content_Length: 5") + b"hello\r\n\r\n", pipelined(1))
add("content-length.shorter-than-body", head(b"Content-Length: 5") + b"helloG@T / HTTP/1.1\r\n\r\n", pipelined(1))
add("content-length.on-get-then-garbage", head(b"Content-Length: 0", start=b"GET / HTTP/1.1")
    + b"\x16\x03\x01\x00\x05hello", pipelined(1))

# ---------------------------------------------------------------------------
# chunked bodies: sizes, extensions, data framing, trailers

_TE = b"Transfer-Encoding: chunked"
_CHUNK_BAD = {
    "size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "size-negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "size-plus": b"+5\r\nhello\r\n0\r\n\r\n",
    "size-0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size-overflow": b"fffffffffffffffffffff5\r\nhello\r\n0\r\n\r\n",
    "size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "size-leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
    "size-trailing-space": b"5 \r\nhello\r\n0\r\n\r\n",
    "size-trailing-tab": b"5\t\r\nhello\r\n0\r\n\r\n",
    "size-bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "size-bare-cr": b"5\rhello\r\n0\r\n\r\n",
    "size-underscore": b"5_0\r\n" + b"x" * 80 + b"\r\n0\r\n\r\n",
    "ext-empty-name": b"5;\r\nhello\r\n0\r\n\r\n",
    "ext-unterminated-quote": b'5;a="b\r\nhello\r\n0\r\n\r\n',
    "ext-space-in-value": b"5;a=b c\r\nhello\r\n0\r\n\r\n",
    "ext-nul": b"5;a\x00\r\nhello\r\n0\r\n\r\n",
    "ext-bare-cr": b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    "ext-bare-lf": b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    "data-longer-than-size": b"3\r\nhello\r\n0\r\n\r\n",
    "data-shorter-than-size": b"8\r\nhello\r\n0\r\n\r\n",
    "data-without-crlf": b"5\r\nhello0\r\n\r\n",
    "data-bare-lf": b"5\r\nhello\n0\r\n\r\n",
    "data-bare-cr": b"5\r\nhello\r0\r\n\r\n",
    "last-chunk-bare-lf": b"5\r\nhello\r\n0\n\r\n",
    "end-bare-lf": b"5\r\nhello\r\n0\r\n\n",
    "missing-last-chunk": b"5\r\nhello\r\n" + SMUGGLE,
    "trailer-obs-fold": b"0\r\nX-T: a\r\n b\r\n\r\n",
    "trailer-no-colon": b"0\r\nX-T\r\n\r\n",
    "trailer-bare-lf": b"0\r\nX-T: a\nX-U: b\r\n\r\n",
    "trailer-space-before-colon": b"0\r\nX-T : a\r\n\r\n",
    "trailer-nul": b"0\r\nX-T: a\x00b\r\n\r\n",
    "trailer-smuggled-request": b"0\r\n" + SMUGGLE,
}
for _name, _body in _CHUNK_BAD.items():
    add(f"chunk.{_name}", head(_TE) + _body, refused_body())
_CHUNK_ODD = {
    "ext-token": b"5;a=b\r\nhello\r\n0\r\n\r\n",
    "ext-bws": b"5 ; a = b\r\nhello\r\n0\r\n\r\n",
    "ext-quoted": b'5;a="b c"\r\nhello\r\n0\r\n\r\n',
    "ext-huge": b"5;a=" + b"x" * 70000 + b"\r\nhello\r\n0\r\n\r\n",
    "size-uppercase-hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    "size-leading-zeros": b"0000000000000000000005\r\nhello\r\n0\r\n\r\n",
    "last-chunk-00": b"5\r\nhello\r\n00\r\n\r\n",
    "trailer-valid": b"0\r\nX-T: 1\r\n\r\n",
    "trailer-content-length": b"0\r\nContent-Length: 5\r\n\r\n",
    "trailer-transfer-encoding": b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "trailer-host": b"0\r\nHost: evil.example\r\n\r\n",
    "trailer-huge": b"0\r\nX-T: " + b"t" * 70000 + b"\r\n\r\n",
}
for _name, _body in _CHUNK_ODD.items():
    _statuses = TOO_BIG if "huge" in _name else (400,)
    add(f"chunk.{_name}", head(_TE) + _body, Expect(frozenset(_statuses), "may"))

# ---------------------------------------------------------------------------
# bare CR, bare LF and obs-fold anywhere in the head

_G = b"GET / HTTP/1.1"
add("crlf.lf-after-request-line", _G + b"\nHost: @H@\r\n\r\n", refused())
add("crlf.lf-after-header", _G + b"\r\nHost: @H@\nX-A: 1\r\n\r\n", refused())
add("crlf.lf-head-end", _G + b"\r\nHost: @H@\r\n\n", refused())
add("crlf.lf-only-head", _G + b"\nHost: @H@\n\n", refused())
add("crlf.lf-cr-lf-head-end", _G + b"\r\nHost: @H@\n\r\n", refused())
add("crlf.lf-lf-inside", _G + b"\r\nHost: @H@\n\nGET /smuggled HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("crlf.cr-after-request-line", _G + b"\rHost: @H@\r\n\r\n", refused())
add("crlf.cr-after-header", _G + b"\r\nHost: @H@\rX-A: 1\r\n\r\n", refused())
add("crlf.cr-cr-lf", _G + b"\r\nHost: @H@\r\r\n\r\n", refused())
add("crlf.cr-head-end", _G + b"\r\nHost: @H@\r\n\r\r\n", refused())
add("crlf.cr-in-target", b"GET /a\rb HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("crlf.lf-in-target", b"GET /a\nb HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("crlf.cr-in-method", b"GE\rT / HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("crlf.cr-in-version", b"GET / HTTP/1.1\r\r\nHost: @H@\r\n\r\n", refused())
add("crlf.cr-in-name", _G + b"\r\nHost: @H@\r\nX-\rA: 1\r\n\r\n", refused())
add("crlf.cr-in-value", _G + b"\r\nHost: @H@\r\nX-A: a\rb\r\n\r\n", refused())
add("crlf.cr-at-line-start", _G + b"\r\nHost: @H@\r\n\rX-A: 1\r\n\r\n", refused())
add("crlf.lf-in-value-then-smuggle", _G + b"\r\nHost: @H@\r\nX-A: a\n\nGET /smuggled HTTP/1.1\r\n\r\n", refused())
add("crlf.obs-fold-first-line", _G + b"\r\n Host: @H@\r\n\r\n", refused())
add("crlf.obs-fold-host", _G + b"\r\nHost: @H@\r\n .evil\r\n\r\n", refused())
add("crlf.obs-fold-space", _G + b"\r\nHost: @H@\r\nX-A: first\r\n second\r\n\r\n", refused())
add("crlf.obs-fold-tab", _G + b"\r\nHost: @H@\r\nX-A: first\r\n\tsecond\r\n\r\n", refused())
add("crlf.obs-fold-empty-value", _G + b"\r\nHost: @H@\r\nX-A:\r\n second\r\n\r\n", refused())
add("crlf.obs-fold-many", _G + b"\r\nHost: @H@\r\nX-A: 1\r\n 2\r\n 3\r\n\t4\r\n\r\n", refused())
add("crlf.obs-fold-content-length", head(b"Content-Length: 5\r\n 0") + b"hello", refused())
add("crlf.obs-fold-connection", _G + b"\r\nHost: @H@\r\nConnection: keep-alive\r\n content-length\r\n"
    b"Content-Length: 5\r\n\r\nhello", refused())

# ---------------------------------------------------------------------------
# NUL and other control bytes; non-ASCII where tokens belong

_CTLS = {"nul": 0x00, "soh": 0x01, "bs": 0x08, "vt": 0x0B, "ff": 0x0C, "esc": 0x1B, "del": 0x7F}
for _name, _byte in _CTLS.items():
    _c = bytes([_byte])
    add(f"ctl.{_name}-in-target", b"GET /a" + _c + b"b HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
    add(f"ctl.{_name}-in-value", _G + b"\r\nHost: @H@\r\nX-A: a" + _c + b"b\r\n\r\n", refused())
    add(f"ctl.{_name}-in-name", _G + b"\r\nHost: @H@\r\nX-" + _c + b"A: 1\r\n\r\n", refused())
add("ctl.nul-in-host", _G + b"\r\nHost: 127.0.0.1\x00.evil\r\n\r\n", refused())
add("ctl.nul-line", _G + b"\r\nHost: @H@\r\n\x00\r\n\r\n", refused())
add("ctl.nul-in-version", b"GET / HTTP/1.1\x00\r\nHost: @H@\r\n\r\n", refused(400, 505))
add("ctl.high-byte-in-name", _G + b"\r\nHost: @H@\r\nX-\xe9: 1\r\n\r\n", refused())
add("ctl.high-byte-in-target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("ctl.obs-text-in-value", _G + b"\r\nHost: @H@\r\nX-A: caf\xc3\xa9\r\n\r\n", either())
add("ctl.del-in-method", b"GE\x7fT / HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())

# ---------------------------------------------------------------------------
# methods

_METHODS_BAD = {
    "at-sign": b"G@T", "nul": b"G\x00T", "trailing-nul": b"GET\x00", "paren": b"G(T", "comma": b"G,T",
    "slash": b"G/T", "colon": b"G:T", "quote": b'G"ET', "brackets": b"GET[]", "braces": b"GET{}",
    "utf8": "G\u00c9T".encode(), "semicolon": b"GET;", "equals": b"G=T", "backslash": b"G\\T",
}
for _name, _method in _METHODS_BAD.items():
    add(f"method.{_name}", _method + b" / HTTP/1.1\r\nHost: @H@\r\n\r\n", refused(400, 501))
add("method.empty", b" / HTTP/1.1\r\nHost: @H@\r\n\r\n", refused(400, 501))
add("method.lowercase", b"get / HTTP/1.1\r\nHost: @H@\r\n\r\n", either(400, 501))
add("method.huge-token", b"A" * 70000 + b" / HTTP/1.1\r\nHost: @H@\r\n\r\n", refused(400, 414, 431, 501))
add("method.connect-origin-form", b"CONNECT /path HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("method.get-asterisk", b"GET * HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("method.get-authority-form", b"GET @H@ HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())

# ---------------------------------------------------------------------------
# request line: whitespace, versions, targets

_LINE_BAD = {
    "tab-after-method": b"GET\t/ HTTP/1.1",
    "tab-before-version": b"GET /\tHTTP/1.1",
    "double-space-after-method": b"GET  / HTTP/1.1",
    "double-space-before-version": b"GET /  HTTP/1.1",
    "trailing-space": b"GET / HTTP/1.1 ",
    "trailing-tab": b"GET / HTTP/1.1\t",
    "leading-space": b" GET / HTTP/1.1",
    "leading-tab": b"\tGET / HTTP/1.1",
    "extra-word": b"GET / HTTP/1.1 extra",
    "space-in-target": b"GET /a b HTTP/1.1",
    "fragment": b"GET /a#frag HTTP/1.1",
    "quote-in-target": b'GET /a"b HTTP/1.1',
    "angle-in-target": b"GET /a<b> HTTP/1.1",
    "brace-in-target": b"GET /a{b} HTTP/1.1",
    "pipe-in-target": b"GET /a|b HTTP/1.1",
    "backslash-in-target": b"GET /a\\b HTTP/1.1",
    "caret-in-target": b"GET /a^b HTTP/1.1",
    "backtick-in-target": b"GET /a`b HTTP/1.1",
    "bad-percent": b"GET /%zz HTTP/1.1",
    "lone-percent": b"GET /100% HTTP/1.1",
    "relative-target": b"GET a/b HTTP/1.1",
    "dot-dot-target": b"GET ../etc/passwd HTTP/1.1",
    "empty-target": b"GET  HTTP/1.1",
}
for _name, _line in _LINE_BAD.items():
    add(f"line.{_name}", _line + b"\r\nHost: @H@\r\n\r\n", refused())
_VERSIONS_BAD = {
    "lowercase": b"http/1.1", "http-0.9-word": b"HTTP/0.9", "http-2.0": b"HTTP/2.0", "http-3.0": b"HTTP/3.0",
    "http-1.10": b"HTTP/1.10", "http-01.1": b"HTTP/01.1", "http-1.1.1": b"HTTP/1.1.1", "http-1": b"HTTP/1",
    "space-in-version": b"HTTP/ 1.1", "https": b"HTTPS/1.1", "http-1.1x": b"HTTP/1.1x", "mixed-case": b"Http/1.1",
    "no-slash": b"HTTP1.1", "empty": b"",
}
for _name, _version in _VERSIONS_BAD.items():
    add(f"version.{_name}", b"GET / " + _version + b"\r\nHost: @H@\r\n\r\n", refused(400, 505))
add("version.http-1.2", b"GET / HTTP/1.2\r\nHost: @H@\r\n\r\n", either(400, 505))
add("version.http-0.9", b"GET /\r\n\r\n", refused(400, 505))
add("version.http-0.9-with-headers", b"GET /\r\nHost: @H@\r\n\r\n", refused(400, 505))
add("version.http-2.0-with-body", head(b"Content-Length: 5", start=b"POST / HTTP/2.0") + b"hello", refused(400, 505))
add("line.leading-crlf", b"\r\n" + GOOD, either())
add("line.two-leading-crlf", b"\r\n\r\n" + GOOD, either())
add("line.leading-bare-lf", b"\n" + GOOD, either())
add("line.double-slash-target", b"GET //evil.example/x HTTP/1.1\r\nHost: @H@\r\n\r\n", either())

# ---------------------------------------------------------------------------
# absolute-form: the forwarded Host must be the URI's authority (or the request refused)

_ABS = b"GET http://@H@/abs HTTP/1.1"
add("absolute.host-differs", _ABS + b"\r\nHost: evil.example:81\r\n\r\n", either(host=H))
add("absolute.host-differs-port", _ABS + b"\r\nHost: 127.0.0.1:1\r\n\r\n", either(host=H))
add("absolute.host-missing", _ABS + b"\r\n\r\n", either(host=H))
add("absolute.host-empty", _ABS + b"\r\nHost:\r\n\r\n", either(host=H))
add("absolute.two-hosts", _ABS + b"\r\nHost: @H@\r\nHost: evil.example\r\n\r\n", refused())
add("absolute.uppercase-scheme", b"GET HTTP://@H@/abs HTTP/1.1\r\nHost: @H@\r\n\r\n", either(host=H))
add("absolute.no-path", b"GET http://@H@ HTTP/1.1\r\nHost: evil.example\r\n\r\n", either(host=H))
add("absolute.userinfo", b"GET http://user@@H@/abs HTTP/1.1\r\nHost: @H@\r\n\r\n", either(host=H))
add("absolute.empty-authority", b"GET http:///abs HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("absolute.fragment", b"GET http://@H@/abs#frag HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("absolute.ftp-scheme", b"GET ftp://@H@/abs HTTP/1.1\r\nHost: @H@\r\n\r\n", either(400, 501, host=H))
add("absolute.space-in-authority", b"GET http://127.0.0.1 .evil/abs HTTP/1.1\r\nHost: @H@\r\n\r\n", refused())
add("absolute.http10-host-differs", b"GET http://@H@/abs HTTP/1.0\r\nHost: evil.example\r\n\r\n", either(host=H))

# ---------------------------------------------------------------------------
# Upgrade: h2c (h2c smuggling): forwarded without the upgrade, never tunnelled

_SETTINGS = b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"
add("upgrade.h2c", head(b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings", _SETTINGS,
                        start=b"GET / HTTP/1.1"), forwarded())
add("upgrade.h2c-no-settings", head(b"Upgrade: h2c", b"Connection: Upgrade", start=b"GET / HTTP/1.1"), forwarded())
add("upgrade.h2c-uppercase", head(b"Upgrade: H2C", b"Connection: upgrade, http2-settings", _SETTINGS,
                                  start=b"GET / HTTP/1.1"), forwarded())
add("upgrade.h2c-in-list", head(b"Upgrade: websocket, h2c", b"Connection: Upgrade, HTTP2-Settings", _SETTINGS,
                                start=b"GET / HTTP/1.1"), forwarded())
add("upgrade.h2c-without-connection", head(b"Upgrade: h2c", _SETTINGS, start=b"GET / HTTP/1.1"), forwarded())
add("upgrade.h2c-post-body", head(b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings", _SETTINGS,
                                  b"Content-Length: 5") + b"hello", forwarded())
add("upgrade.h2-cleartext", head(b"Upgrade: h2", b"Connection: Upgrade", start=b"GET / HTTP/1.1"), forwarded())
add("upgrade.h2c-then-preface", head(b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings", _SETTINGS,
                                     start=b"GET / HTTP/1.1") + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    pipelined(1, 400, 505))

# ---------------------------------------------------------------------------
# oversized heads, lines and header counts (the default limit is 64 KiB)

add("big.target", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: @H@\r\n\r\n", refused(*TOO_BIG))
add("big.header-value", _G + b"\r\nHost: @H@\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n", refused(*TOO_BIG))
add("big.header-name", _G + b"\r\nHost: @H@\r\nX-" + b"n" * 70000 + b": 1\r\n\r\n", refused(*TOO_BIG))
add("big.cookie", _G + b"\r\nHost: @H@\r\nCookie: " + b"c=1; " * 20000 + b"\r\n\r\n", refused(*TOO_BIG))
add("big.many-headers", _G + b"\r\nHost: @H@\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(10000)) + b"\r\n",
    refused(*TOO_BIG))
add("big.many-small-headers-under-limit", _G + b"\r\nHost: @H@\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(2000)) + b"\r\n", either(*TOO_BIG))
add("big.head-one-over", _G + b"\r\nHost: @H@\r\nX-Pad: " + b"p" * 65536 + b"\r\n\r\n", refused(*TOO_BIG))

# ---------------------------------------------------------------------------
# Expect oddities

_POST5 = (b"Content-Length: 5",)
add("expect.100-on-get", head(b"Expect: 100-continue", start=b"GET / HTTP/1.1"), either(400, 417))
add("expect.100-on-http10", head(b"Expect: 100-continue", *_POST5, start=b"POST / HTTP/1.0") + b"hello",
    either(400, 417))
add("expect.100-body-at-once", head(b"Expect: 100-continue", *_POST5) + b"hello", either(400, 417))
add("expect.100-uppercase", head(b"Expect: 100-CONTINUE", *_POST5) + b"hello", either(400, 417))
add("expect.unknown", head(b"Expect: teapot", *_POST5) + b"hello", either(400, 417))
add("expect.list", head(b"Expect: 100-continue, teapot", *_POST5) + b"hello", either(400, 417))
add("expect.twice", head(b"Expect: 100-continue", b"Expect: 100-continue", *_POST5) + b"hello", either(400, 417))
add("expect.empty", head(b"Expect:", *_POST5) + b"hello", either(400, 417))
add("expect.chunked-body", head(b"Expect: 100-continue", _TE) + _chunk(b"hello") + b"0\r\n\r\n", either(400, 417))
add("expect.with-cl-te", head(b"Expect: 100-continue", b"Content-Length: %d" % len(_CLTE_BODY), _TE)
    + _CLTE_BODY, refused(*TE_STATUSES))
add("expect.obs-fold", head(b"Expect:\r\n 100-continue", *_POST5) + b"hello", refused())

# ---------------------------------------------------------------------------
# Host

add("host.missing", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", refused())
add("host.duplicate-same", b"GET / HTTP/1.1\r\nHost: @H@\r\nHost: @H@\r\n\r\n", refused())
add("host.duplicate-different", b"GET / HTTP/1.1\r\nHost: @H@\r\nHost: evil.example\r\n\r\n", refused())
add("host.duplicate-case", b"GET / HTTP/1.1\r\nHost: @H@\r\nhOST: evil.example\r\n\r\n", refused())
add("host.list", b"GET / HTTP/1.1\r\nHost: @H@, evil.example\r\n\r\n", refused())
add("host.space-inside", b"GET / HTTP/1.1\r\nHost: 127.0.0.1 .evil\r\n\r\n", refused())
add("host.slash", b"GET / HTTP/1.1\r\nHost: @H@/evil\r\n\r\n", refused())
add("host.userinfo", b"GET / HTTP/1.1\r\nHost: user@@H@\r\n\r\n", refused())
add("host.http10-duplicate", b"GET / HTTP/1.0\r\nHost: @H@\r\nHost: evil.example\r\n\r\n", refused())

# ---------------------------------------------------------------------------
# pipelines: the valid requests ahead are answered, nothing after the bad one is forwarded

add("pipeline.good-good-cl-te", GOOD + GOOD + head(b"Content-Length: %d" % len(_CLTE_BODY), _TE) + _CLTE_BODY
    + GOOD, pipelined(2, *TE_STATUSES))
add("pipeline.good-bare-lf", GOOD + b"GET / HTTP/1.1\nHost: @H@\r\n\r\n" + GOOD, pipelined(1))
add("pipeline.good-bad-method", GOOD + b"G@T / HTTP/1.1\r\nHost: @H@\r\n\r\n" + GOOD, pipelined(1, 400, 501))
add("pipeline.good-obs-fold", GOOD + b"GET / HTTP/1.1\r\nHost: @H@\r\nX-A: 1\r\n 2\r\n\r\n" + GOOD, pipelined(1))
add("pipeline.good-http09", GOOD + b"GET /\r\n\r\n" + GOOD, pipelined(1, 400, 505))
add("pipeline.good-te-obfuscated", GOOD + head(b"Transfer-Encoding: xchunked", b"Content-Length: 5") + b"hello"
    + GOOD, pipelined(1, *TE_STATUSES))
add("pipeline.post-then-bad-cl", head(b"Content-Length: 5") + b"hello" + head(b"Content-Length: +5") + b"hello",
    pipelined(1))
add("pipeline.good-tls-bytes", GOOD + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", pipelined(1))
add("pipeline.good-h2-preface", GOOD + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", pipelined(1, 400, 505))
add("pipeline.chunked-then-te-cl", head(_TE) + _chunk(b"hello") + b"0\r\n\r\n"
    + head(_TE, b"Content-Length: %d" % _TECL_CL) + _TECL_BODY, pipelined(1, *TE_STATUSES))

# ---------------------------------------------------------------------------
# the subset also sent byte by byte and cut at every line end

SPLIT_IDS = [
    "smuggle-cl-te.plain", "smuggle-te-cl.plain", "smuggle-cl-te.xchunked", "smuggle-cl-te.space-before-colon",
    "smuggle-cl-te.obs-fold-value", "smuggle-te-cl.chunked-identity", "smuggle-cl-te.dup-chunked-identity",
    "smuggle-cl-te.bare-lf-before", "connection.content-length", "connection.transfer-encoding",
    "connection.host", "content-length.two-different", "content-length.plus", "content-length.list-different",
    "chunk.size-bare-lf", "chunk.data-longer-than-size", "chunk.ext-bare-cr", "chunk.trailer-obs-fold",
    "crlf.lf-after-request-line", "crlf.cr-after-header", "crlf.cr-cr-lf", "crlf.lf-head-end",
    "crlf.obs-fold-space", "ctl.nul-in-value", "method.at-sign", "line.tab-after-method", "line.leading-space",
    "version.lowercase", "absolute.host-differs", "upgrade.h2c", "host.duplicate-different",
    "pipeline.good-bare-lf",
]

_ids = [v.id for v in VECTORS]
assert len(_ids) == len(set(_ids)), "vector ids must be unique"
assert set(SPLIT_IDS) <= set(_ids), set(SPLIT_IDS) - set(_ids)
BY_ID = {v.id: v for v in VECTORS}
