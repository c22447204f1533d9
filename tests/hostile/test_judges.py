"""The corpus judges itself: every vector breaks the strict rules it claims to, and valid traffic passes them.

A hostile-input test can only fail if its judge objects to the hostile bytes
when they come through unchanged. These tests run without a proxy: each
vector that must be refused for its syntax is fed to the strict readers as
sent and must be rejected; each legal-but-hop-by-hop vector must pass as a
client sends it and fail if forwarded verbatim; each bad response must fail
the client-side reading; each refused HTTP/2 stream must fail
``strict_h2``. Well-formed streams of every shape must pass, so a finding is
never the judge's own noise.
"""

from __future__ import annotations

import pytest

from helpers.strict_h1 import h11_problems, read_requests, read_responses
from helpers.strict_h2 import PREFACE, decode_requests, request_problems

from .harness_h2 import stream_frames
from .vectors_h1 import VECTORS
from .vectors_h1_responses import RESPONSES
from .vectors_h2 import MESHED
from .vectors_h2 import VECTORS as H2_VECTORS

HOST = "127.0.0.1:8080"


def _syntax_refusals():
    # Vectors refused for their size, not their syntax, parse cleanly by design.
    return [v for v in VECTORS if v.expect.forward in ("never", "prefix") and not {414, 431} & v.expect.statuses]


@pytest.mark.parametrize("vector", [pytest.param(v, id=v.id) for v in _syntax_refusals()])
def test_refused_request_fails_the_strict_reading(vector):
    data = vector.render(HOST)
    reading = read_requests(data, forwarded=False)
    assert reading.problems, f"the strict reading accepts {data[:200]!r}: {reading.messages!r}"


@pytest.mark.parametrize("vector", [pytest.param(v, id=v.id) for v in VECTORS if v.expect.forward == "must"])
def test_forwarded_request_is_legal_but_not_verbatim(vector):
    data = vector.render(HOST)
    assert read_requests(data, forwarded=False).problems == []
    assert read_requests(data, forwarded=True).problems, "passing it through unchanged would go unnoticed"


# What is wrong with these is their size, not their syntax.
_SIZE_ONLY = ("resp-field.huge", "resp-field.many")


@pytest.mark.parametrize("vector", [pytest.param(v, id=v.id) for v in RESPONSES
                                    if v.kind in ("bad-head", "bad-body") and v.id not in _SIZE_ONLY])
def test_bad_response_fails_the_strict_reading(vector):
    data = b"".join(s for s in vector.steps if isinstance(s, bytes))
    reading = read_responses(data, [vector.method], eof=vector.close, forwarded=False)
    finals = [m for m in reading.complete_messages() if m.status >= 200]
    assert reading.problems or not finals or h11_problems(data, "client", [vector.method], eof=vector.close), (
        f"a client would accept {data[:200]!r} as it is")


@pytest.mark.parametrize("vector", [pytest.param(v, id=v.id) for v in RESPONSES if v.kind == "stray"])
def test_stray_response_leaves_bytes_over(vector):
    data = b"".join(s for s in vector.steps if isinstance(s, bytes))
    reading = read_responses(data, [vector.method], forwarded=False)
    finals = [m for m in reading.complete_messages() if m.status >= 200]
    assert len(finals) > 1 or reading.incomplete or reading.problems, reading
    assert b"STRAY" in data, "the follow-up checks look for this marker"


_H2_REFUSED = [pytest.param(v, id=v.id) for v in H2_VECTORS if v.expect in ("refused", "refused-body")]
# Peer streams that HTTP/2 itself forbids; the l5d-orig-proto ones are legal HTTP/2 with a bad value.
_PEER_REFUSED = [pytest.param(v, id="peer-" + v.id) for v in MESHED
                 if v.expect in ("refused", "refused-body") and v.id.startswith("mesh.")
                 and v.id not in ("mesh.host-differs-from-authority", "mesh.path-fragment",
                                  "mesh.path-without-slash", "mesh.method-connect", "mesh.content-length-smuggle")]


@pytest.mark.parametrize("vector", _H2_REFUSED + _PEER_REFUSED)
def test_refused_h2_stream_fails_the_strict_reading(vector):
    frames = PREFACE + stream_frames(1, vector.render_fields(HOST), vector.data, vector.trailers)
    decoded = decode_requests(frames)
    problems = decoded.problems + [p for s in decoded.streams.values() for p in request_problems(s)]
    assert problems, f"strict_h2 accepts {vector.fields!r}"


VALID_REQUESTS = (
    b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
    b"POST /x?y=1 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello"
    b"POST /c HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
    b"5;ext=1\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"
    b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n"
    b"GET http://a.example/abs HTTP/1.1\r\nHost: a.example\r\n\r\n"
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
)
VALID_RESPONSES = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"  # the answer to a HEAD
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
    b"HTTP/1.1 404 \r\nContent-Type: text/plain\r\n\r\nuntil close"
)


def test_valid_streams_pass():
    reading = read_requests(VALID_REQUESTS)
    assert reading.problems == [] and not reading.incomplete and len(reading.messages) == 7, reading
    assert h11_problems(VALID_REQUESTS, "server") == []
    methods = ["POST", "GET", "HEAD", "GET", "GET", "GET"]
    reading = read_responses(VALID_RESPONSES, methods, eof=True)
    assert reading.problems == [] and not reading.incomplete and len(reading.messages) == 7, reading
    assert h11_problems(VALID_RESPONSES, "client", methods, eof=True) == []


def test_valid_h2_request_passes():
    fields = ((b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a.example:80"), (b":path", b"/x?y"),
              (b"content-length", b"3"), (b"te", b"trailers"), (b"x-a", b"caf\xc3\xa9 au lait"))
    decoded = decode_requests(PREFACE + stream_frames(1, fields, (b"ab", b"c"), ((b"x-t", b"1"),)))
    assert decoded.problems == []
    assert [request_problems(s) for s in decoded.streams.values()] == [[]]
