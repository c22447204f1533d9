"""HTTP/2 abuse and malformed input against the real proxy, from raw sockets.

Each attack is sent with hand-built frames (``helpers.h2``) after a normal
preface and SETTINGS exchange; the test reads frames until the proxy's
answer (a GOAWAY with the expected code, a RST_STREAM, or a 431) within a
deadline, then checks that the proxy is unharmed: still running, serving a
normal request on a NEW connection through both listeners, its resident
memory not grown by more than a generous bound. Frames are read as they
arrive while a flood is sent, so a GOAWAY is never lost to a TCP reset.
"""

from __future__ import annotations

import random

import pytest

from helpers import h2 as H
from helpers.h2 import RawH2, literal_block, literal_request, rss_kib
from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy

pytestmark = pytest.mark.timeout(60)

MAX_HEADER_BYTES = 16384
RSS_GROWTH_KIB = 64 * 1024  # generous: an attack that works costs hundreds of MB


@pytest.fixture(scope="module")
def backend():
    server = H2Origin(name="abuse-origin")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(backend, tmp_path_factory):
    mp = MeshProxy(env={"MESHPROXY_INBOUND_DEFAULT_TARGET": backend.hostport,
                        "MESHPROXY_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES)},
                   name="abuse-proxy", log_path=tmp_path_factory.mktemp("abuse") / "stderr.log")
    try:
        mp.start()
        yield mp
    finally:
        mp.close()


@pytest.fixture
def rss_before(proxy) -> int:
    return rss_kib(proxy.pid)


def assert_unharmed(proxy: MeshProxy, backend: H2Origin, rss_before: int) -> None:
    """Still running, serving new connections on both listeners, memory bounded."""
    assert proxy.running(), f"the proxy died:\n{proxy.tail()}"
    with H2Client(proxy.inbound, timeout=5) as client:
        resp = client.exchange("GET", "/name", "app.example", timeout=5)
        assert resp.status == 200 and bytes(resp.data) == b"abuse-origin", resp.summary()
    with H2Client(proxy.outbound, timeout=5) as client:
        resp = client.exchange("GET", "/name", backend.hostport, timeout=5)
        assert resp.status == 200 and bytes(resp.data) == b"abuse-origin", resp.summary()
    grown = rss_kib(proxy.pid) - rss_before
    assert grown < RSS_GROWTH_KIB, f"proxy RSS grew by {grown} KiB"


def assert_goaway(conn: RawH2, code: int, timeout: float = 5.0) -> H.Frame:
    got = conn.goaway(timeout)
    assert got.error_code == code, (
        f"GOAWAY {H.ERROR_NAMES.get(got.error_code)} ({got.debug!r}), expected {H.ERROR_NAMES[code]}; "
        f"frames: {conn.frames[-10:]!r}")
    return got


def _split_block(sid: int, block: bytes, end_stream: bool = True, size: int = 16000) -> list[bytes]:
    """A header block as HEADERS + CONTINUATION frames of ``size`` octets."""
    pieces = [block[i:i + size] for i in range(0, len(block), size)] or [b""]
    frames = [H.headers(sid, pieces[0], end_stream=end_stream, end_headers=len(pieces) == 1)]
    for i, piece in enumerate(pieces[1:], 1):
        frames.append(H.continuation(sid, piece, end_headers=i == len(pieces) - 1))
    return frames


def _bomb_block(references: int) -> bytes:
    """HPACK amplification: one 4000-octet field put in the dynamic table,
    then referenced by a one-octet index ``references`` times."""
    return (literal_request(path="/bomb") + b"\x40" + H.hpack_str(b"x-bomb") + H.hpack_str(b"v" * 4000)
            + bytes([0x80 | 62]) * references)


# ---------------------------------------------------------------------------
# floods answered with GOAWAY ENHANCE_YOUR_CALM


def test_rapid_reset(proxy, backend, rss_before):
    """CVE-2023-44487: open and cancel streams as fast as possible."""
    burst = b"".join(H.headers(sid, literal_request(path=f"/name?rr={sid}")) + H.rst(sid, H.CANCEL)
                     for sid in range(1, 1200, 2))
    with RawH2(proxy.inbound) as conn:
        conn.flood([burst[i:i + 8192] for i in range(0, len(burst), 8192)])
        assert_goaway(conn, H.ENHANCE_YOUR_CALM)
    assert_unharmed(proxy, backend, rss_before)


def test_resets_below_the_limit_are_fine(proxy, backend, rss_before):
    """150 open-and-cancel pairs at once (the limit is 200 a second): no GOAWAY."""
    burst = b"".join(H.headers(sid, literal_request(path="/name")) + H.rst(sid, H.CANCEL)
                     for sid in range(1, 301, 2))
    with RawH2(proxy.inbound) as conn:
        conn.send(burst)
        conn.send(H.headers(301, literal_request(path="/name")))
        answer = conn.wait_frame(lambda f: (f.type == H.HEADERS and f.stream_id == 301) or f.type == H.GOAWAY)
        assert answer is not None and answer.type == H.HEADERS and answer.header(":status") == "200", conn.frames[-5:]
    assert_unharmed(proxy, backend, rss_before)


def test_continuation_flood(proxy, backend, rss_before):
    """A header block that never ends: CONTINUATION frames past 128 KiB."""
    block = literal_request(path="/cont", extra=[("x-pad", "p" * 15000)])
    frames = [H.headers(1, block, end_headers=False)] + [H.continuation(1, bytes(16000))] * 40
    with RawH2(proxy.inbound) as conn:
        conn.flood(frames)
        assert_goaway(conn, H.ENHANCE_YOUR_CALM)
    assert not any(r.path == "/cont" for r in backend.requests)
    assert_unharmed(proxy, backend, rss_before)


def test_empty_continuation_flood(proxy, backend, rss_before):
    """Empty CONTINUATION frames grow no header block but must not be free either."""
    frames = [H.headers(1, literal_request(path="/cont-empty"), end_headers=False)]
    frames += [H.continuation(1, b"") * 2000] * 100  # 200,000 frames, 1.8 MB
    with RawH2(proxy.inbound) as conn:
        conn.flood(frames)
        assert_goaway(conn, H.ENHANCE_YOUR_CALM)
    assert_unharmed(proxy, backend, rss_before)


FLOODS = [
    ("settings", H.settings(), 150),
    ("settings-ack", H.settings(ack=True), 150),
    ("ping", H.ping(), 150),
    ("window-update", H.window_update(0, 1), 2100),
]


@pytest.mark.parametrize("name, unit, count", FLOODS, ids=[f[0] for f in FLOODS])
def test_control_frame_flood(proxy, backend, rss_before, name, unit, count):
    with RawH2(proxy.inbound) as conn:
        conn.flood([unit * 50] * (count // 50 + 1))
        assert_goaway(conn, H.ENHANCE_YOUR_CALM)
    assert_unharmed(proxy, backend, rss_before)


def test_empty_data_flood(proxy, backend, rss_before):
    with RawH2(proxy.inbound) as conn:
        conn.send(H.headers(1, literal_request("POST", "/hold"), end_stream=False))
        conn.flood([H.data(1, b"") * 50] * 4)
        assert_goaway(conn, H.ENHANCE_YOUR_CALM)
    assert_unharmed(proxy, backend, rss_before)


def test_below_flood_limits_is_fine(proxy, backend, rss_before):
    """90 PINGs and 90 SETTINGS in a burst are within the limits (100 a second)."""
    with RawH2(proxy.inbound) as conn:
        conn.send(H.ping() * 90 + H.settings() * 90 + H.headers(1, literal_request(path="/name")))
        answer = conn.wait_frame(lambda f: (f.type == H.HEADERS and f.stream_id == 1) or f.type == H.GOAWAY)
        assert answer is not None and answer.type == H.HEADERS, conn.frames[-5:]
        acks = conn.wait_frame(lambda f: len([x for x in conn.frames if x.type == H.PING and x.flags & H.ACK]) == 90)
        assert acks is not None, "not every PING was answered"
    assert_unharmed(proxy, backend, rss_before)


# ---------------------------------------------------------------------------
# limits answered per stream


def test_header_list_over_limit_is_431(proxy, backend, rss_before):
    block = literal_request(path="/too-big", extra=[("x-big", "b" * (MAX_HEADER_BYTES + 1000))])
    with RawH2(proxy.inbound) as conn:
        conn.flood(_split_block(1, block))
        answer = conn.wait_frame(lambda f: f.stream_id == 1 or f.type == H.GOAWAY)
        assert answer is not None and answer.type == H.HEADERS, conn.frames[-5:]
        assert answer.header(":status") == "431" and answer.flags & H.END_STREAM
        # The connection goes on: the next request is served.
        conn.send(H.headers(3, literal_request(path="/name")))
        nxt = conn.wait_frame(lambda f: f.stream_id == 3 or f.type == H.GOAWAY)
        assert nxt is not None and nxt.type == H.HEADERS and nxt.header(":status") == "200", conn.frames[-5:]
    assert not any(r.path == "/too-big" for r in backend.requests), "the oversized request was forwarded"
    assert_unharmed(proxy, backend, rss_before)


def test_streams_beyond_100_are_refused(proxy, backend, rss_before):
    marker = f"/hold?refused-test={random.random()}"
    with RawH2(proxy.inbound) as conn:
        conn.send(b"".join(H.headers(sid, literal_request("POST", f"{marker}&sid={sid}"), end_stream=False)
                           for sid in range(1, 204, 2)))  # 102 streams
        refused = [conn.wait_frame(lambda f, s=sid: f.type == H.RST_STREAM and f.stream_id == s) for sid in (201, 203)]
        assert all(f is not None and f.error_code == H.REFUSED_STREAM for f in refused), conn.frames[-5:]
        assert backend.wait_for(lambda: sum(r.path.startswith(marker) for r in backend.requests) >= 100)
        forwarded = {r.path for r in backend.requests if r.path.startswith(marker)}
        assert len(forwarded) == 100 and f"{marker}&sid=201" not in forwarded
        assert not any(f.type == H.GOAWAY for f in conn.frames)
        assert not any(f.type == H.RST_STREAM and f.stream_id < 201 for f in conn.frames)
    assert_unharmed(proxy, backend, rss_before)


def test_hpack_bomb(proxy, backend, rss_before):
    """120,000 one-octet references to a 4 KB entry: 480 MB if expanded."""
    with RawH2(proxy.inbound) as conn:
        conn.flood(_split_block(1, _bomb_block(120_000)))
        answer = conn.wait_frame(lambda f: f.stream_id == 1 or f.type == H.GOAWAY)
        assert answer is not None, conn.frames[-5:]
        if answer.type == H.GOAWAY:
            assert answer.error_code == H.COMPRESSION_ERROR, answer
        else:
            assert answer.type == H.HEADERS and answer.header(":status") == "431", answer
    assert not any(r.path == "/bomb" for r in backend.requests)
    assert_unharmed(proxy, backend, rss_before)


HPACK_ERRORS = [
    ("table-size-update-above-limit", H.hpack_int(65536, 5, 0x20) + literal_request()),
    ("index-out-of-range", H.hpack_int(1000, 7, 0x80)),
    ("index-zero", b"\x80"),
    ("truncated-string", b"\x40\x0aabc"),
    ("truncated-integer", b"\x7f\xff\xff"),
    ("bad-huffman-padding", b"\x00\x83\xff\xff\xff\x01a"),
]


@pytest.mark.parametrize("name, block", HPACK_ERRORS, ids=[h[0] for h in HPACK_ERRORS])
def test_hpack_errors_are_compression_error(proxy, backend, rss_before, name, block):
    with RawH2(proxy.inbound) as conn:
        conn.send(H.headers(1, block))
        assert_goaway(conn, H.COMPRESSION_ERROR)
    assert_unharmed(proxy, backend, rss_before)


# ---------------------------------------------------------------------------
# malformed frames: connection errors


def _open(sid: int = 1) -> bytes:
    return H.headers(sid, literal_request("POST", "/hold"), end_stream=False)


MALFORMED = [
    ("data-on-stream-0", H.data(0, b"x"), H.PROTOCOL_ERROR),
    ("headers-on-stream-0", H.headers(0, literal_request()), H.PROTOCOL_ERROR),
    ("data-on-idle-stream", H.data(1, b"x"), H.PROTOCOL_ERROR),
    ("rst-on-stream-0", H.rst(0), H.PROTOCOL_ERROR),
    ("rst-on-idle-stream", H.rst(5), H.PROTOCOL_ERROR),
    ("window-update-on-idle-stream", H.window_update(7, 10), H.PROTOCOL_ERROR),
    ("settings-on-a-stream", H.frame(H.SETTINGS, 0, 1, b""), H.PROTOCOL_ERROR),
    ("settings-length-5", H.frame(H.SETTINGS, 0, 0, b"\x00\x01\x00\x00\x10"), H.FRAME_SIZE_ERROR),
    ("settings-ack-with-payload", H.frame(H.SETTINGS, H.ACK, 0, b"\x00\x01\x00\x00\x10\x00"), H.FRAME_SIZE_ERROR),
    ("settings-enable-push-2", H.settings([(H.S_ENABLE_PUSH, 2)]), H.PROTOCOL_ERROR),
    ("settings-window-too-large", H.settings([(H.S_INITIAL_WINDOW_SIZE, 1 << 31)]), H.FLOW_CONTROL_ERROR),
    ("settings-max-frame-too-small", H.settings([(H.S_MAX_FRAME_SIZE, 100)]), H.PROTOCOL_ERROR),
    ("settings-max-frame-too-large", H.settings([(H.S_MAX_FRAME_SIZE, 1 << 24)]), H.PROTOCOL_ERROR),
    ("ping-length-7", H.frame(H.PING, 0, 0, b"1234567"), H.FRAME_SIZE_ERROR),
    ("ping-on-a-stream", H.frame(H.PING, 0, 1, b"12345678"), H.PROTOCOL_ERROR),
    ("window-update-length-3", H.frame(H.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), H.FRAME_SIZE_ERROR),
    ("window-update-zero-increment", H.window_update(0, 0), H.PROTOCOL_ERROR),
    ("window-overflow", H.window_update(0, 0x7FFFFFFF) + H.window_update(0, 0x7FFFFFFF), H.FLOW_CONTROL_ERROR),
    ("rst-length-5", _open() + H.frame(H.RST_STREAM, 0, 1, b"\x00\x00\x00\x08\x00"), H.FRAME_SIZE_ERROR),
    ("goaway-on-a-stream", H.frame(H.GOAWAY, 0, 1, bytes(8)), H.PROTOCOL_ERROR),
    ("goaway-too-short", H.frame(H.GOAWAY, 0, 0, bytes(4)), H.FRAME_SIZE_ERROR),
    ("headers-over-max-frame-size", H.headers(1, literal_request(extra=[("x-a", "a" * 16400)])), H.FRAME_SIZE_ERROR),
    ("continuation-without-headers", H.continuation(1, literal_request(), end_headers=True), H.PROTOCOL_ERROR),
    ("frame-inside-header-block", H.headers(1, literal_request(), end_headers=False) + H.ping(), H.PROTOCOL_ERROR),
    ("continuation-other-stream", H.headers(1, literal_request(), end_headers=False)
     + H.continuation(3, b"", end_headers=True), H.PROTOCOL_ERROR),
    ("even-stream-id", H.headers(2, literal_request()), H.PROTOCOL_ERROR),
    ("stream-id-goes-down", H.headers(5, literal_request(path="/name")) + H.headers(3, literal_request()),
     H.PROTOCOL_ERROR),
    ("padding-exceeds-payload", _open() + H.frame(H.DATA, H.PADDED, 1, b"\x0aabc"), H.PROTOCOL_ERROR),
    ("push-promise-from-client", _open() + H.frame(H.PUSH_PROMISE, H.END_HEADERS, 1, b"\x00\x00\x00\x02"),
     H.PROTOCOL_ERROR),
    ("length-lies-short", H.frame(H.PING, 0, 0, b"12345678", length=4) + H.settings(), H.FRAME_SIZE_ERROR),
]


@pytest.mark.parametrize("name, payload, code", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_frame_is_connection_error(proxy, backend, rss_before, name, payload, code):
    with RawH2(proxy.inbound) as conn:
        conn.send(payload)
        assert_goaway(conn, code)
    assert_unharmed(proxy, backend, rss_before)


def test_first_frame_not_settings(proxy, backend, rss_before):
    with RawH2(proxy.inbound, preface=False) as conn:
        conn.send(H.PREFACE + H.ping())
        assert_goaway(conn, H.PROTOCOL_ERROR)
    assert_unharmed(proxy, backend, rss_before)


ERROR_GOAWAYS = [
    ("protocol-error", H.data(0, b"x")),
    ("enhance-your-calm", H.ping() * 150),
    ("compression-error", H.headers(1, H.hpack_int(1000, 7, 0x80))),
]


@pytest.mark.parametrize("name, payload", ERROR_GOAWAYS, ids=[e[0] for e in ERROR_GOAWAYS])
def test_connection_closed_after_error_goaway(proxy, name, payload):
    """RFC 9113 5.4.1: after sending the GOAWAY for an error condition the
    endpoint MUST close the TCP connection."""
    with RawH2(proxy.inbound) as conn:
        conn.send(payload)
        conn.goaway()
        assert conn.closed_within(2.0), "the proxy kept the connection open after its error GOAWAY"


# ---------------------------------------------------------------------------
# malformed requests: stream errors, the connection goes on


MALFORMED_REQUESTS = [
    ("uppercase-name", [literal_request(path="/bad", extra=[("X-Upper", "1")])], H.PROTOCOL_ERROR),
    ("connection-header", [literal_request(path="/bad", extra=[("connection", "keep-alive")])], H.PROTOCOL_ERROR),
    ("te-not-trailers", [literal_request(path="/bad", extra=[("te", "gzip")])], H.PROTOCOL_ERROR),
    ("missing-path", [literal_block([(":method", "GET"), (":scheme", "http"), (":authority", "a")])], H.PROTOCOL_ERROR),
    ("pseudo-after-regular", [literal_block([(":method", "GET"), (":scheme", "http"), ("x-a", "1"),
                                             (":path", "/bad"), (":authority", "a")])], H.PROTOCOL_ERROR),
    ("duplicate-path", [literal_request(path="/bad", extra=[(":path", "/bad2")])], H.PROTOCOL_ERROR),
    ("host-differs-from-authority", [literal_request(path="/bad", authority="a.example",
                                                     extra=[("host", "b.example")])], H.PROTOCOL_ERROR),
]


@pytest.mark.parametrize("name, blocks, code", MALFORMED_REQUESTS, ids=[m[0] for m in MALFORMED_REQUESTS])
def test_malformed_request_is_stream_error(proxy, backend, rss_before, name, blocks, code):
    before = len(backend.requests)
    with RawH2(proxy.inbound) as conn:
        conn.send(H.headers(1, blocks[0]))
        reset = conn.wait_frame(lambda f: f.stream_id == 1 or f.type == H.GOAWAY)
        assert reset is not None and reset.type == H.RST_STREAM and reset.error_code == code, conn.frames[-5:]
        conn.send(H.headers(3, literal_request(path="/name")))
        nxt = conn.wait_frame(lambda f: f.stream_id == 3 or f.type == H.GOAWAY)
        assert nxt is not None and nxt.type == H.HEADERS and nxt.header(":status") == "200", conn.frames[-5:]
    assert not any(r.path.startswith("/bad") for r in backend.requests[before:])
    assert_unharmed(proxy, backend, rss_before)


def test_content_length_mismatch_is_stream_error(proxy, backend, rss_before):
    with RawH2(proxy.inbound) as conn:
        conn.send(H.headers(1, literal_request("POST", "/echo?cl", extra=[("content-length", "10")]), end_stream=False)
                  + H.data(1, b"abc", end=True))
        reset = conn.wait_frame(lambda f: f.type == H.RST_STREAM and f.stream_id == 1)
        assert reset is not None and reset.error_code == H.PROTOCOL_ERROR, conn.frames[-5:]
        assert not any(f.type == H.HEADERS and f.stream_id == 1 and f.header(":status") == "200" for f in conn.frames)
    assert_unharmed(proxy, backend, rss_before)


def test_data_after_end_stream_is_stream_closed(proxy, backend, rss_before):
    path = f"/hold?after-end={random.random()}"
    with RawH2(proxy.inbound) as conn:
        conn.send(H.headers(1, literal_request("GET", path)))
        assert backend.wait_for(lambda: any(r.path == path for r in backend.requests))
        conn.send(H.data(1, b"late"))
        reset = conn.wait_frame(lambda f: f.type == H.RST_STREAM and f.stream_id == 1)
        assert reset is not None and reset.error_code == H.STREAM_CLOSED, conn.frames[-5:]
        # The upstream stream is cancelled too.
        assert backend.wait_reset(path) is not None
    assert_unharmed(proxy, backend, rss_before)


# ---------------------------------------------------------------------------
# garbage never crashes the proxy


def _random_frames(rng: random.Random) -> bytes:
    out = []
    for _ in range(rng.randrange(1, 30)):
        payload = rng.randbytes(rng.randrange(0, 64))
        length = len(payload) if rng.random() < 0.8 else rng.randrange(0, 1 << 24)
        out.append(H.frame(rng.randrange(0, 12), rng.randrange(0, 256), rng.choice([0, 1, 2, 3, 5, 0x7FFFFFFF]),
                           payload, length=length))
    return b"".join(out)


def test_random_frames_never_crash(proxy, backend, rss_before):
    rng = random.Random(20240403)
    conns = []
    try:
        for _ in range(40):
            conn = RawH2(proxy.inbound)
            conn.send(_random_frames(rng))
            conns.append(conn)
        for conn in conns:
            conn.wait_frame(lambda f: f.type == H.GOAWAY, 0.2)
    finally:
        for conn in conns:
            conn.close()
    for blob in (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", H.PREFACE[:10], H.PREFACE + b"\x00\x00",
                 H.PREFACE + H.frame(H.SETTINGS, 0, 0, b"", length=1 << 20)):
        conn = RawH2(proxy.inbound, preface=False, handshake=False)
        conn.send(blob)
        conn.wait_frame(lambda f: f.type == H.GOAWAY, 0.3)
        conn.close()
    assert_unharmed(proxy, backend, rss_before)
