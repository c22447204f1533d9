"""Requests the proxy must refuse: malformed heads, oversized heads and
ambiguous framing (request smuggling material).

For every case: the synthesized status with ``l5d-proxy-error``, exactly one
log line naming the reason, the connection closed, NOTHING of the request
at the upstream, and the proxy still serving afterwards.
"""

from __future__ import annotations

import time

import pytest

from helpers.checks import assert_one_log_line, assert_proxy_error, assert_serving
from helpers.clients import RawClient

pytestmark = pytest.mark.timeout(60)

SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"

MALFORMED = {
    "header-without-colon": "GET /echo HTTP/1.1\r\nHost: {h}\r\nNoColonHere\r\n\r\n",
    "space-in-header-name": "GET /echo HTTP/1.1\r\nHost: {h}\r\nBad Name: x\r\n\r\n",
    "space-before-colon": "GET /echo HTTP/1.1\r\nHost: {h}\r\nX-Foo : bar\r\n\r\n",
    "invalid-char-in-name": "GET /echo HTTP/1.1\r\nHost: {h}\r\nX(Foo): bar\r\n\r\n",
    "nul-in-value": "GET /echo HTTP/1.1\r\nHost: {h}\r\nX-Foo: a\x00b\r\n\r\n",
    "content-length-not-a-number": "POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: abc\r\n\r\nabc",
    "content-length-negative": "POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: -1\r\n\r\nabc",
    "content-length-plus-sign": "POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: +3\r\n\r\nabc",
    "empty-header-name": "GET /echo HTTP/1.1\r\nHost: {h}\r\n: novalue\r\n\r\n",
    "space-in-target": "GET /echo two HTTP/1.1\r\nHost: {h}\r\n\r\n",
    "two-different-hosts": "GET /echo HTTP/1.1\r\nHost: {h}\r\nHost: other.example:81\r\n\r\n",
}

AMBIGUOUS = {
    "cl-and-te-chunked": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Content-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-chunked-and-cl": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n" + SMUGGLED + "\r\n0\r\n\r\n",
    "te-space-before-colon": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "conflicting-content-lengths": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "content-length-list": "POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5, 6\r\n\r\nhello!",
    "te-not-ending-in-chunked": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-not-hex": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x-prefix": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-empty": "POST /echo HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
    "chunk-longer-than-size": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
    "chunk-size-bare-lf": "POST /echo HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "obs-fold-space": "GET /echo HTTP/1.1\r\nHost: {h}\r\nX-Folded: first\r\n second\r\n\r\n",
    "obs-fold-tab": "GET /echo HTTP/1.1\r\nHost: {h}\r\nX-Folded: first\r\n\tsecond\r\n\r\n",
    "obs-fold-transfer-encoding": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "bare-cr-in-value": "GET /echo HTTP/1.1\r\nHost: {h}\r\nX-Foo: a\rb\r\n\r\n",
    "bare-lf-line-end": "GET /echo HTTP/1.1\r\nHost: {h}\nX-Foo: b\r\n\r\n",
    "bare-lf-hides-te": "POST /echo HTTP/1.1\r\nHost: {h}\r\n"
        "X-Foo: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "bare-lf-after-request-line": "GET /echo HTTP/1.1\nHost: {h}\r\n\r\n",
    "bare-cr-line-end": "GET /echo HTTP/1.1\r\nHost: {h}\rX-Foo: b\r\n\r\n",
}


def _refused_and_nothing_forwarded(proxy, upstream, raw: bytes, status: int) -> None:
    mark = proxy.mark()
    with RawClient(proxy.outbound) as client:
        client.send(raw)
        resp = client.final(timeout=5)
        reason = assert_proxy_error(resp, status)
        assert client.closed_within(3), "the proxy must close the connection after refusing a request"
    assert_one_log_line(proxy, mark, reason)  # waits a moment: anything forwarded has arrived
    assert upstream.received() == b"", f"the upstream received: {upstream.received()[:300]!r}"
    assert upstream.requests == []
    assert_serving(proxy, upstream)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_400(proxy, fresh_upstream, case):
    raw = MALFORMED[case].format(h=fresh_upstream.hostport).encode("latin-1")
    _refused_and_nothing_forwarded(proxy, fresh_upstream, raw, 400)


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_ambiguous_framing_400(proxy, fresh_upstream, case):
    raw = AMBIGUOUS[case].format(h=fresh_upstream.hostport).encode("latin-1")
    _refused_and_nothing_forwarded(proxy, fresh_upstream, raw, 400)


def test_header_section_over_limit_431(proxy, fresh_upstream):
    raw = f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\nX-Big: {'a' * 70_000}\r\n\r\n".encode()
    mark = proxy.mark()
    with RawClient(proxy.outbound) as client:
        client.send(raw)
        reason = assert_proxy_error(client.final(timeout=5), 431)
    assert_one_log_line(proxy, mark, reason)
    time.sleep(0.2)
    assert fresh_upstream.received() == b""
    assert_serving(proxy, fresh_upstream)


def test_many_headers_over_limit_431(proxy, fresh_upstream):
    fields = "".join(f"X-Field-{i}: {'v' * 90}\r\n" for i in range(800))  # ~80 KB in total
    raw = f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\n{fields}\r\n".encode()
    with RawClient(proxy.outbound) as client:
        client.send(raw)
        assert_proxy_error(client.final(timeout=5), 431)
    time.sleep(0.2)
    assert fresh_upstream.received() == b""


def test_header_section_under_limit_forwarded_exactly(proxy, fresh_upstream):
    raw = f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\nX-Big: {'a' * 60_000}\r\n\r\n".encode()
    with RawClient(proxy.outbound) as client:
        client.send(raw)
        assert client.final(timeout=5).status == 200
    assert fresh_upstream.wait_requests(1)
    assert fresh_upstream.requests[0].head.raw == raw


def test_configured_header_limit(make_proxy, fresh_upstream):
    mp = make_proxy({"MESHPROXY_MAX_HEADER_BYTES": "1KiB"})
    small = f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\nX-Pad: {'p' * 800}\r\n\r\n".encode()
    large = f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\nX-Pad: {'p' * 1500}\r\n\r\n".encode()
    with RawClient(mp.outbound) as client:
        client.send(small)
        assert client.final().status == 200
    with RawClient(mp.outbound) as client:
        client.send(large)
        assert_proxy_error(client.final(), 431)
    time.sleep(0.2)
    assert fresh_upstream.received() == small


def test_head_sent_byte_by_byte_then_refused(proxy, fresh_upstream):
    """Slow delivery does not let a smuggling request through."""
    raw = AMBIGUOUS["cl-and-te-chunked"].format(h=fresh_upstream.hostport).encode()
    with RawClient(proxy.outbound) as client:
        for pos in range(0, len(raw), 7):
            try:
                client.send(raw[pos : pos + 7])
            except (BrokenPipeError, ConnectionResetError):
                break  # refused as soon as the head was complete: fine
            time.sleep(0.002)
        assert_proxy_error(client.final(timeout=5), 400)
    time.sleep(0.2)
    assert fresh_upstream.received() == b""


def test_bad_request_after_good_one_on_same_connection(proxy, fresh_upstream):
    """A keep-alive connection: the good request is answered, the bad one is
    refused, and only the good one reached the upstream."""
    good = f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\n\r\n".encode()
    bad = AMBIGUOUS["conflicting-content-lengths"].format(h=fresh_upstream.hostport).encode()
    with RawClient(proxy.outbound) as client:
        client.send(good)
        assert client.final(timeout=5).status == 200
        client.send(bad)
        assert_proxy_error(client.final(timeout=5), 400)
        assert client.closed_within(3)
    time.sleep(0.2)
    assert len(fresh_upstream.requests) == 1
    assert fresh_upstream.received() == good
