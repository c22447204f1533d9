"""The hostile HTTP/1 responses of the corpus: what the backend answers a valid request with.

Each ``ResponseVector`` is the backend's script for ``GET /r/<id>`` (or HEAD):
bytes and pauses, then the connection kept or closed. ``kind`` says what the
client may see. "bad-head": nothing of the response went out yet, so a 502
with ``l5d-proxy-error``. "bad-body": the head may have gone out, then the
connection is cut before a byte that fails the strict reading (or a 502).
"valid-or-502": a proxy may repair this (unfold, drop a duplicate) or refuse
it, and what the client gets is strictly valid either way. "stray": bytes
left after a complete response; no later request, on the same client
connection or another, may be answered with them (``STRAY`` marks them).
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.rawbackend import Step


@dataclass(frozen=True)
class ResponseVector:
    id: str
    steps: tuple[Step, ...]
    kind: str
    method: str = "GET"
    close: bool = False


OK = b"HTTP/1.1 200 OK\r\n"
FAKE = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSTRAYED"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
RESPONSES: list[ResponseVector] = []


def add(rid: str, data: bytes | tuple[Step, ...], kind: str, method: str = "GET", close: bool = False) -> None:
    steps = data if isinstance(data, tuple) else (data,)
    RESPONSES.append(ResponseVector(rid, steps, kind, method, close))


def resp(*lines: bytes, body: bytes = b"", start: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return b"\r\n".join((start,) + lines) + b"\r\n\r\n" + body


# ---------------------------------------------------------------------------
# ambiguous framing

add("resp-framing.cl-te", resp(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), "bad-head")
add("resp-framing.te-cl", resp(b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n"), "bad-head")
add("resp-framing.te-gzip-cl", resp(b"Transfer-Encoding: gzip", b"Content-Length: 5", body=b"hello"), "bad-head")
add("resp-framing.te-xchunked-cl", resp(b"Transfer-Encoding: xchunked", b"Content-Length: 5", body=b"hello"),
    "bad-head")
add("resp-framing.te-space-before-colon-cl", resp(b"Transfer-Encoding : chunked", b"Content-Length: 5",
                                             body=b"0\r\n\r\n"), "bad-head")
add("resp-framing.te-chunked-identity", resp(b"Transfer-Encoding: chunked, identity", body=b"5\r\nhello\r\n0\r\n\r\n"),
    "bad-head")
add("resp-framing.te-chunked-twice", resp(b"Transfer-Encoding: chunked, chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
    "bad-head")
add("resp-framing.te-two-fields-cl", resp(b"Transfer-Encoding: identity", b"Transfer-Encoding: chunked",
                                     b"Content-Length: 5", body=b"0\r\n\r\n"), "bad-head")
add("resp-framing.te-gzip-until-close", resp(b"Transfer-Encoding: gzip", body=b"not really gzip"), "valid-or-502",
    close=True)
add("resp-framing.te-on-http10", resp(CHUNKED.strip(), body=b"5\r\nhello\r\n0\r\n\r\n", start=b"HTTP/1.0 200 OK"),
    "valid-or-502", close=True)
add("resp-framing.connection-content-length", resp(b"Connection: Content-Length", b"Content-Length: 5", body=b"hello"),
    "valid-or-502")
add("resp-framing.connection-transfer-encoding", resp(b"Connection: Transfer-Encoding", CHUNKED.strip(),
                                                 body=b"5\r\nhello\r\n0\r\n\r\n"), "valid-or-502")
add("resp-framing.connection-close-content-length", resp(b"Connection: close, content-length", b"Content-Length: 5",
                                                    body=b"hello"), "valid-or-502", close=True)
add("resp-framing.cl-twice-same", resp(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"), "valid-or-502")
add("resp-framing.cl-list-same", resp(b"Content-Length: 5, 5", body=b"hello"), "valid-or-502")
add("resp-framing.cl-leading-zeros", resp(b"Content-Length: 005", body=b"hello"), "valid-or-502")
add("resp-framing.cl-on-204", resp(b"Content-Length: 5", start=b"HTTP/1.1 204 No Content"), "valid-or-502")
add("resp-framing.no-length-until-close", resp(b"Content-Type: text/plain", body=b"until close"), "valid-or-502",
    close=True)
for _name, _value in {"conflict": b"5\r\nContent-Length: 6", "list-conflict": b"5, 6", "plus": b"+5",
                      "minus": b"-5", "hex": b"0x5", "space-inside": b"5 5", "empty": b"",
                      "huge": b"99999999999999999999999999", "trailing-garbage": b"5abc"}.items():
    add(f"resp-framing.cl-{_name}", resp(b"Content-Length: " + _value, body=b"hello"), "bad-head")

# ---------------------------------------------------------------------------
# status lines

_STATUS_BAD = {
    "letters": b"HTTP/1.1 2OO OK", "two-digits": b"HTTP/1.1 20 OK", "four-digits": b"HTTP/1.1 2000 OK",
    "double-space": b"HTTP/1.1  200 OK", "tab": b"HTTP/1.1\t200 OK", "http-2.0": b"HTTP/2.0 200 OK",
    "lowercase": b"http/1.1 200 OK", "icy": b"ICY 200 OK", "leading-space": b" HTTP/1.1 200 OK",
    "negative": b"HTTP/1.1 -200 OK", "nul-in-reason": b"HTTP/1.1 200 O\x00K", "cr-in-reason": b"HTTP/1.1 200 O\rK",
    "below-100": b"HTTP/1.1 099 Low", "above-599": b"HTTP/1.1 600 High", "no-version": b"200 OK",
    "http-0.9-body": b"just a body, no status line",
}
for _name, _line in _STATUS_BAD.items():
    add(f"resp-status.{_name}", _line + b"\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-status.no-reason-no-space", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "valid-or-502")
add("resp-status.http-1.2", b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", "valid-or-502")
add("resp-status.obs-text-reason", b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 2\r\n\r\nok", "valid-or-502")

# ---------------------------------------------------------------------------
# line ends, folding, field syntax

add("resp-crlf.lf-only-head", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "bad-head")
add("resp-crlf.lf-after-status", b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-crlf.lf-in-headers", OK + b"X-A: 1\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-crlf.lf-head-end", OK + b"Content-Length: 2\r\n\nok", "bad-head")
add("resp-crlf.cr-in-value", OK + b"X-A: a\rb\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-crlf.cr-cr-lf", OK + b"X-A: a\r\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-crlf.lf-hides-te", OK + b"X-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "bad-head")
add("resp-fold.value", OK + b"X-A: first\r\n second\r\nContent-Length: 2\r\n\r\nok", "valid-or-502")
add("resp-fold.tab", OK + b"X-A: first\r\n\tsecond\r\nContent-Length: 2\r\n\r\nok", "valid-or-502")
add("resp-fold.hides-te", OK + b"X-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
    "valid-or-502")
add("resp-fold.content-length", OK + b"Content-Length:\r\n 2\r\n\r\nok", "valid-or-502")
add("resp-field.no-colon", OK + b"NoColonHere\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-field.space-before-colon-cl", OK + b"Content-Length : 2\r\n\r\nok", "valid-or-502")
add("resp-field.space-in-name", OK + b"Bad Name: x\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-field.nul-in-value", OK + b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-field.nul-in-name", OK + b"X-\x00A: 1\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-field.empty-name", OK + b": v\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-field.huge", OK + b"X-Big: " + b"b" * 70000 + b"\r\nContent-Length: 2\r\n\r\nok", "bad-head")
add("resp-field.many", OK + b"".join(b"X-%d: v\r\n" % i for i in range(10000)) + b"Content-Length: 2\r\n\r\nok",
    "bad-head")

# ---------------------------------------------------------------------------
# interim responses and protocol switches nobody asked for

add("resp-interim.flood-100", b"HTTP/1.1 100 Continue\r\n\r\n" * 200 + resp(b"Content-Length: 2", body=b"ok"),
    "valid-or-502")
add("resp-interim.flood-102", b"HTTP/1.1 102 Processing\r\n\r\n" * 5000 + resp(b"Content-Length: 2", body=b"ok"),
    "valid-or-502")
add("resp-interim.with-body", b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello"
    + resp(b"Content-Length: 2", body=b"ok"), "bad-body")
add("resp-interim.chunked", b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    + resp(b"Content-Length: 2", body=b"ok"), "bad-body")
add("resp-interim.then-close", b"HTTP/1.1 100 Continue\r\n\r\n", "bad-body", close=True)
add("resp-interim.bare-lf", b"HTTP/1.1 100 Continue\n\n" + resp(b"Content-Length: 2", body=b"ok"), "bad-body")
add("resp-switch.101-h2c-unasked", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", "bad-head")
add("resp-switch.101-websocket-unasked", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\n\r\n\x81\x05hello", "bad-head")
add("resp-switch.101-no-upgrade-field", b"HTTP/1.1 101 Switching Protocols\r\n\r\nraw bytes", "bad-head")

# ---------------------------------------------------------------------------
# bodies: bad chunks, truncation

for _name, _body in {
    "size-not-hex": b"5\r\nhello\r\nzz\r\n\r\n", "data-longer-than-size": b"3\r\nhello\r\n0\r\n\r\n",
    "size-bare-lf": b"5\nhello\r\n0\r\n\r\n", "data-without-crlf": b"5\r\nhello0\r\n\r\n",
    "ext-nul": b"5;a\x00\r\nhello\r\n0\r\n\r\n", "size-overflow": b"fffffffffffffffffffff5\r\nhello\r\n0\r\n\r\n",
    "size-negative": b"-5\r\nhello\r\n0\r\n\r\n", "trailer-obs-fold": b"0\r\nX-T: a\r\n b\r\n\r\n",
    "trailer-no-colon": b"0\r\nX-T\r\n\r\n", "trailer-bare-lf": b"0\r\nX-T: a\nX-U: b\r\n\r\n",
    "second-chunk-bad": b"5\r\nhello\r\n5\r\nworld\r\nq\r\n",
}.items():
    add(f"resp-body.chunk-{_name}", resp(CHUNKED.strip(), body=_body), "bad-body")
add("resp-body.chunk-cut", (resp(CHUNKED.strip(), body=b"5\r\nhello\r\n5\r\nwo"),), "bad-body", close=True)
add("resp-body.truncated-length", resp(b"Content-Length: 100", body=b"t" * 50), "bad-body", close=True)

# ---------------------------------------------------------------------------
# no response at all, or nothing like one

add("resp-none.close-at-once", b"", "bad-head", close=True)
add("resp-none.status-line-then-close", b"HTTP/1.1 200 OK\r\n", "bad-head", close=True)
add("resp-none.half-head-then-close", b"HTTP/1.1 200 OK\r\nContent-Len", "bad-head", close=True)
add("resp-none.garbage", b"hello world\r\n\r\n", "bad-head")
add("resp-none.tls-alert", b"\x15\x03\x01\x00\x02\x02\x28", "bad-head", close=True)

# ---------------------------------------------------------------------------
# stray bytes after a complete response: never the answer to a later request

add("resp-stray.head-then-response", (resp(b"Content-Length: 7"), 0.02, FAKE), "stray", method="HEAD")
add("resp-stray.head-with-body", resp(b"Content-Length: 7", body=b"STRAYED"), "stray", method="HEAD")
add("resp-stray.head-chunked-body", resp(CHUNKED.strip(), body=b"7\r\nSTRAYED\r\n0\r\n\r\n"), "stray", method="HEAD")
add("resp-stray.longer-than-length", resp(b"Content-Length: 2", body=b"ok" + FAKE), "stray")
add("resp-stray.longer-than-length-later", (resp(b"Content-Length: 2", body=b"ok"), 0.02, FAKE), "stray")
add("resp-stray.after-204", resp(start=b"HTTP/1.1 204 No Content") + FAKE, "stray")
add("resp-stray.after-304", resp(b"ETag: \"x\"", start=b"HTTP/1.1 304 Not Modified") + FAKE, "stray")
add("resp-stray.after-last-chunk", resp(CHUNKED.strip(), body=b"2\r\nok\r\n0\r\n\r\n" + FAKE), "stray")
add("resp-stray.unsolicited-second-response", (resp(b"Content-Length: 2", body=b"ok"), 0.05,
                                          b"HTTP/1.1 500 STRAY\r\nContent-Length: 0\r\n\r\n"), "stray")

_ids = [v.id for v in RESPONSES]
assert len(_ids) == len(set(_ids)), "response vector ids must be unique"
