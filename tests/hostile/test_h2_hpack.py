"""Hostile HPACK and stream-lifetime input through the real proxy: both listeners, h2c, a recording tap.

The vectors (``vectors_h2_hpack.py``) attack the header decoder; the tests
below attack what spans many streams: a header list over our
SETTINGS_MAX_HEADER_LIST_SIZE (the stream is refused, the table stays in step
for the next one), streams closing in every order until the closed-stream
ring wraps and frames on streams it forgot, and a client that shrinks its
HPACK table to 0 and back while the proxy's response encoder is warm (and an
origin doing the same to its request encoder). ``RESPONSE_VECTORS`` turn it
round: a raw origin answers with broken header blocks. Everything runs
against the compiled proxy and the uncompiled one, and every test ends with
the proxy's log free of tracebacks and a good request served.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator

import pytest

from helpers import h2 as H
from helpers.h2 import RawH2, hpack_int
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy
from helpers.servers import ServerConn, TcpServer
from helpers.strict_h2 import decode_requests
from helpers.tcptap import RecordingTap
from helpers.wire import deadline_in

from . import findings as F
from .findings import Finding, assert_clean
from .harness_h2 import answer_findings, good_h2_request, tap_findings
from .listeners import LISTENERS, cases
from .vectors_h2_hpack import HPACK_VECTORS, MARK, SID, HpackVector, idx, lit, req, update

pytestmark = pytest.mark.timeout(30)

ANSWER_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def origin() -> Iterator[H2Origin]:
    server = H2Origin(name="hostile-hpack-origin")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tap(origin) -> Iterator[RecordingTap]:
    relay = RecordingTap(origin.address, name="hostile-hpack-tap")
    yield relay
    relay.stop()


@pytest.fixture(scope="module", params=["compiled", "pure"])
def proxy(request, tap, tmp_path_factory) -> Iterator[MeshProxy]:
    # The same corpus against the compiled build and the uncompiled source (MESHPROXY_PURE=1).
    env = {"MESHPROXY_INBOUND_DEFAULT_TARGET": tap.hostport, "MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}
    if request.param == "pure":
        env["MESHPROXY_PURE"] = "1"
    log = tmp_path_factory.mktemp("hostile-hpack") / "proxy.log"
    mp = MeshProxy(env=env, name=f"proxy[hostile-hpack-{request.param}]", log_path=log)
    try:
        mp.start()
        yield mp
    finally:
        mp.close()


def forwarded_marks(tap: RecordingTap, mark: dict[int, int]) -> list[bytes | None]:
    """The x-hpack-mark of every request the tap passed to the origin since ``mark``."""
    out = []
    for tconn in tap.connections():
        data = tconn.sent()
        if len(data) <= mark.get(tconn.id, 0):
            continue
        for stream in decode_requests(data).streams.values():
            if stream.offset >= mark.get(tconn.id, 0) and stream.get(b":path") == b"/hpack":
                out.append(stream.get(MARK))
    return out


def ending(proxy: MeshProxy, addr: tuple[str, int], tap: RecordingTap, log_mark: int) -> list[Finding]:
    out = F.log_findings(proxy, log_mark)
    if proxy.running():
        out += good_h2_request(addr, tap.hostport)
    else:
        out.append(Finding(F.DIED, "the proxy exited"))
    return out


# ---------------------------------------------------------------------------
# the corpus


@pytest.mark.parametrize("listener, vector", cases(HPACK_VECTORS))
def test_hpack_vector(proxy, tap, listener, vector: HpackVector):
    addr = getattr(proxy, listener)
    log_mark, mark = proxy.mark(), tap.mark()
    out: list[Finding] = []
    with RawH2(addr) as conn:
        payload = vector.frames(tap.hostport.encode())
        # In pieces, reading between them, so a GOAWAY is not lost to a reset of a connection we flood.
        conn.flood([payload[i:i + 16384] for i in range(0, len(payload), 16384)])
        if vector.expect == "forwarded":
            found, _ = answer_findings(conn, "forwarded")
            out += found
        else:
            got = conn.wait_frame(lambda f: f.type == H.GOAWAY or (f.stream_id == SID and f.type == H.HEADERS),
                                  ANSWER_TIMEOUT)
            if got is None or got.type != H.GOAWAY:
                out.append(Finding(F.FORWARDED_INSTEAD if got else F.NO_ANSWER,
                                   f"wanted GOAWAY {H.ERROR_NAMES[vector.code]}; frames {conn.frames[-6:]!r}"))
            elif got.error_code != vector.code:
                out.append(Finding(F.WRONG_STATUS, f"GOAWAY {H.ERROR_NAMES.get(got.error_code)} {got.debug!r}, "
                                                   f"wanted {H.ERROR_NAMES[vector.code]}"))
            elif not conn.closed_within(3.0):
                out.append(Finding(F.KEPT_OPEN, "the connection stayed open after the GOAWAY"))
    tap.wait_quiet(0.03, 0.5)
    refused = vector.expect != "forwarded"
    out += tap_findings(tap, mark, "refused" if refused else "forwarded", refused)
    marks = forwarded_marks(tap, mark)
    if not refused and marks != [vector.mark]:
        out.append(Finding(F.FORWARDED_MALFORMED, f"x-hpack-mark {marks!r}, wanted {[vector.mark]!r}"))
    assert_clean(out + ending(proxy, addr, tap, log_mark))


# ---------------------------------------------------------------------------
# a header list over the limit: refused, the table kept in step


@pytest.mark.parametrize("listener", LISTENERS)
def test_header_list_over_the_limit_refuses_the_stream_and_keeps_the_table(proxy, tap, listener):
    # A 3,900-octet value inserted once and referenced 20 times (one octet
    # each) makes an 80 KB list from a 4 KB block: over the proxy's 64 KiB
    # SETTINGS_MAX_HEADER_LIST_SIZE. The stream is refused (431 or
    # RST_STREAM), the connection lives on, and the next stream's reference
    # to that entry reads the value the first block inserted.
    addr = getattr(proxy, listener)
    log_mark, mark = proxy.mark(), tap.mark()
    authority = tap.hostport.encode()
    big = b"b" * 3900
    out: list[Finding] = []
    with RawH2(addr) as conn:
        conn.send(H.headers(1, req(authority, b"too-large") + lit(b"x-big", big, 0x40) + idx(62) * 20))
        got = conn.wait_frame(lambda f: f.stream_id == 1 and f.type in (H.HEADERS, H.RST_STREAM)
                              or f.type == H.GOAWAY, ANSWER_TIMEOUT)
        if got is None or got.type == H.GOAWAY:
            out.append(Finding(F.NO_ANSWER if got is None else F.KEPT_OPEN, f"frames {conn.frames[-6:]!r}"))
        elif got.type == H.HEADERS and got.header(":status") != "431":
            out.append(Finding(F.FORWARDED_INSTEAD, f":status {got.header(':status')}"))
        conn.send(H.headers(3, req(authority, b"after") + idx(62)))
        got = conn.wait_frame(lambda f: f.stream_id == 3 and f.type in (H.HEADERS, H.RST_STREAM)
                              or f.type == H.GOAWAY, ANSWER_TIMEOUT)
        if got is None or got.type != H.HEADERS or got.header(":status") != "200":
            out.append(Finding(F.NOT_SERVING, f"the stream after got {got!r}; frames {conn.frames[-6:]!r}"))
    tap.wait_quiet(0.03, 0.5)
    streams = [s for t in tap.connections() for s in decode_requests(t.sent()).streams.values()
               if s.offset >= mark.get(t.id, 0) and s.get(b":path") == b"/hpack"]
    if [s.get(MARK) for s in streams] != [b"after"] or streams[0].get(b"x-big") != big:
        out.append(Finding(F.FORWARDED_MALFORMED, f"{[(s.get(MARK), len(s.get(b'x-big') or b'')) for s in streams]}"))
    assert_clean(out + ending(proxy, addr, tap, log_mark))


# ---------------------------------------------------------------------------
# the closed-stream ring: streams closing in every order, then frames on forgotten ones


def _wait_stream_end(conn: RawH2, sid: int) -> H.Frame | None:
    return conn.wait_frame(lambda f: f.stream_id == sid and (f.type == H.RST_STREAM or f.flags & H.END_STREAM
                                                             and f.type in (H.HEADERS, H.DATA))
                           or f.type == H.GOAWAY, ANSWER_TIMEOUT)


@pytest.mark.parametrize("listener", LISTENERS)
def test_closed_stream_ring_wraps_and_late_frames_are_harmless(proxy, tap, listener):
    # 420 streams on one connection (the proxy remembers the last 256 closed
    # ones): answered normally, reset by us before the answer, answered
    # early by the origin and reset by the proxy while our body is still
    # coming, and ended by us after the answer began. Then frames on streams
    # long forgotten and on recently reset ones: at most a RST_STREAM
    # STREAM_CLOSED each, never a GOAWAY; a late HEADERS still feeds the HPACK
    # context, so the next stream's reference to what it inserted is right.
    addr = getattr(proxy, listener)
    log_mark, mark = proxy.mark(), tap.mark()
    a = tap.hostport.encode()
    out: list[Finding] = []

    def head(sid: int, path: bytes, end: bool) -> bytes:
        block = b"".join(lit(n, v) for n, v in ((b":method", b"POST"), (b":scheme", b"http"), (b":authority", a),
                                                (b":path", path)))
        return H.headers(sid, block, end_stream=end)

    with RawH2(addr) as conn:
        conn.send(H.window_update(0, 1 << 24))  # the stalled answers' bodies must not use up our window
        sid = 1
        for i in range(420):
            kind = i % 6
            if kind in (0, 1, 2):  # a whole request, answered
                conn.send(head(sid, b"/ring", True))
            elif kind == 3:  # we give up before the answer
                conn.send(head(sid, b"/never", False) + H.rst(sid, H.CANCEL))
            elif kind == 4:  # the origin answers and resets before our body ends
                conn.send(head(sid, b"/early-reply", False))
            else:  # the answer starts, then we give up
                conn.send(head(sid, b"/stall", False))
            got = None
            if kind == 5:
                got = conn.wait_frame(lambda f, s=sid: f.stream_id == s and f.type in (H.HEADERS, H.RST_STREAM)
                                      or f.type == H.GOAWAY, ANSWER_TIMEOUT)
            elif kind != 3:
                got = _wait_stream_end(conn, sid)
            if kind != 3 and (got is None or got.type == H.GOAWAY):
                out.append(Finding(F.NOT_SERVING, f"stream {sid} ({kind}): {got!r}; {conn.frames[-6:]!r}"))
                break
            if kind == 4:
                conn.send(H.data(sid, b"late body", end=True))
            elif kind == 5:
                conn.send(H.rst(sid, H.CANCEL))
            sid += 2
        last = sid - 2
        before = len(conn.frames)
        # Late frames: on long forgotten streams (1, 3, 5, 7), on one the proxy
        # reset (last - 2, kind 4) and one we reset (last - 4, kind 3).
        conn.send(H.data(1, b"late") + H.window_update(3, 100) + H.rst(5, H.CANCEL) + H.frame(H.PRIORITY, 0, 7,
                  b"\x00\x00\x00\x00\x10") + H.data(last - 2, b"late") + H.data(last - 4, b"late"))
        conn.send(H.headers(9, lit(b"x-late-entry", b"kept-in-step", 0x40)))
        block = req(a, b"ring-after") + idx(62)
        conn.send(H.headers(sid, block))
        got = conn.wait_frame(lambda f: f.stream_id == sid and f.type in (H.HEADERS, H.RST_STREAM)
                              or f.type == H.GOAWAY, ANSWER_TIMEOUT)
        if got is None or got.type != H.HEADERS or got.header(":status") != "200":
            out.append(Finding(F.NOT_SERVING, f"the stream after the late frames got {got!r}; {conn.frames[-8:]!r}"))
        goaways = [f for f in conn.frames[before:] if f.type == H.GOAWAY]
        if goaways:
            out.append(Finding(F.KEPT_OPEN, f"GOAWAY {goaways[0]!r} {goaways[0].debug!r}"))
        bad_rst = [f for f in conn.frames[before:] if f.type == H.RST_STREAM and f.stream_id in (1, 3, 5, 7, 9)
                   and f.error_code != H.STREAM_CLOSED]
        if bad_rst:
            out.append(Finding(F.WRONG_STATUS, f"late frames answered with {bad_rst!r}"))
    tap.wait_quiet(0.03, 0.5)
    streams = [s for t in tap.connections() for s in decode_requests(t.sent()).streams.values()
               if s.offset >= mark.get(t.id, 0) and s.get(MARK) == b"ring-after"]
    if len(streams) != 1 or streams[0].get(b"x-late-entry") != b"kept-in-step":
        out.append(Finding(F.FORWARDED_MALFORMED, f"the stream after: {[s.headers for s in streams]!r}"))
    assert_clean(out + ending(proxy, addr, tap, log_mark))


# ---------------------------------------------------------------------------
# the response encoder against a client that shrinks its table


@pytest.mark.parametrize("listener", LISTENERS)
def test_response_encoder_follows_a_client_shrinking_its_table(proxy, tap, listener):
    # Warm responses (echoed x-echo-* fields get indexed), then the client's
    # SETTINGS_HEADER_TABLE_SIZE goes 0, 0, 100, 4096, 0 then 64 and 4096
    # together, 33. After each change the next response block must open with
    # the size update(s), never use more table than allowed, and decode with
    # the reference decoder to what the origin sent.
    addr = getattr(proxy, listener)
    log_mark = proxy.mark()
    a = tap.hostport.encode()
    out: list[Finding] = []
    steps: list[tuple[int, ...]] = [(), (), (0,), (), (0,), (100,), (), (4096,), (), (0,), (64, 4096), (), (33,), ()]
    with RawH2(addr) as conn:

        def acks() -> int:
            return sum(1 for f in conn.frames if f.type == H.SETTINGS and f.flags & H.ACK)

        conn.wait_frame(lambda f: acks() >= 1, ANSWER_TIMEOUT)  # of the SETTINGS RawH2 opened with
        sid = 1
        allowed = 4096
        for n, sizes in enumerate(steps):
            want = b""
            if sizes:
                target = acks() + len(sizes)
                for size in sizes:
                    conn.send(H.settings([(H.S_HEADER_TABLE_SIZE, size)]))
                if conn.wait_frame(lambda f, t=target: acks() >= t, ANSWER_TIMEOUT) is None:
                    out.append(Finding(F.NO_ANSWER, f"no SETTINGS ACK for {sizes}"))
                    break
                # RFC 7541 4.2: the smallest size of the interval, then the final one, unless nothing changed.
                if any(s != allowed for s in sizes):
                    smallest = min(sizes)
                    want = b"".join(hpack_int(s, 5, 0x20) for s in
                                    ([smallest] if smallest < sizes[-1] else []) + [sizes[-1]])
                allowed = sizes[-1]
                conn.decoder.max_allowed_table_size = max(sizes)
            echo = [(b"x-echo-same", b"repeated-value"), (b"x-echo-step", b"step-%d" % n),
                    (b"x-echo-big", b"z" * (40 + n))]
            block = b"".join(lit(nm, v) for nm, v in ((b":method", b"GET"), (b":scheme", b"http"), (b":authority", a),
                                                      (b":path", b"/echo"), *echo))
            conn.send(H.headers(sid, block))
            try:
                got = conn.wait_frame(lambda f, s=sid: f.stream_id == s and f.type in (H.HEADERS, H.RST_STREAM)
                                      or f.type == H.GOAWAY, ANSWER_TIMEOUT)
            except Exception as err:  # the reference decoder refused the block
                out.append(Finding(F.BAD_TO_CLIENT, f"step {n} {sizes}: {type(err).__name__}: {err}"))
                break
            if got is None or got.type != H.HEADERS or got.header(":status") != "200":
                out.append(Finding(F.NOT_SERVING, f"step {n}: {got!r}; {conn.frames[-6:]!r}"))
                break
            received = {k: v for k, v in (got.headers or []) if k.startswith(b"x-echo-")}
            if received != dict(echo):
                out.append(Finding(F.BAD_TO_CLIENT, f"step {n}: echoed {received!r}"))
            if not got.payload.startswith(want):
                out.append(Finding(F.BAD_TO_CLIENT, f"step {n}: block starts {got.payload[:6].hex()}, "
                                                    f"wanted the update(s) {want.hex()}"))
            if conn.decoder.header_table.maxsize > allowed or conn.decoder.header_table._current_size > allowed:
                out.append(Finding(F.BAD_TO_CLIENT, f"step {n}: table {conn.decoder.header_table.maxsize} "
                                                    f"over {allowed}"))
            sid += 2
    assert_clean(out + ending(proxy, addr, tap, log_mark))


# ---------------------------------------------------------------------------
# the request encoder against an origin that shrinks its table


def _block_of(tap: RecordingTap, mark: dict[int, int], path: bytes) -> tuple[int, bytes, dict] | None:
    """(tap connection id, raw HPACK fragment, decoded fields) of the request for ``path`` since ``mark``."""
    for tconn in tap.connections():
        data = tconn.sent()
        for stream in decode_requests(data).streams.values():
            if stream.offset >= mark.get(tconn.id, 0) and stream.get(b":path") == path:
                length = int.from_bytes(data[stream.offset:stream.offset + 3], "big")
                return tconn.id, data[stream.offset + 9:stream.offset + 9 + length], dict(stream.headers)
    return None


@pytest.mark.parametrize("listener", LISTENERS)
def test_request_encoder_follows_an_origin_shrinking_its_table(proxy, tap, origin, listener):
    # The origin's SETTINGS_HEADER_TABLE_SIZE goes to 0 and back to 4096
    # between requests on the proxy's pooled connection. The request block
    # after each change opens with the size update and the origin (the h2
    # package, which holds the proxy to the size it acknowledged) decodes
    # every request; the echoed fields come back intact.
    addr = getattr(proxy, listener)
    log_mark, mark, errors = proxy.mark(), tap.mark(), len(origin.errors)
    a = tap.hostport.encode()
    out: list[Finding] = []
    paths = [b"/echo?s=1", b"/table-size?size=0", b"/echo?s=2", b"/echo?s=3", b"/table-size?size=4096",
             b"/echo?s=4", b"/echo?s=5"]
    with RawH2(addr) as conn:
        for n, path in enumerate(paths):
            sid = 1 + 2 * n
            fields = ((b":method", b"GET"), (b":scheme", b"http"), (b":authority", a), (b":path", path),
                      (b"x-echo-warm", b"the-same-value"), (b"x-echo-n", b"%d" % n))
            conn.send(H.headers(sid, b"".join(lit(nm, v) for nm, v in fields)))
            got = conn.wait_frame(lambda f, s=sid: f.stream_id == s and f.type in (H.HEADERS, H.RST_STREAM)
                                  or f.type == H.GOAWAY, ANSWER_TIMEOUT)
            if got is None or got.type != H.HEADERS or got.header(":status") != "200":
                out.append(Finding(F.NOT_SERVING, f"{path!r}: {got!r}; {conn.frames[-6:]!r}"))
                break
            if path.startswith(b"/echo") and (got.header("x-echo-warm"), got.header("x-echo-n")) != \
                    ("the-same-value", str(n)):
                out.append(Finding(F.BAD_TO_CLIENT, f"{path!r}: echoed {got.headers!r}"))
    tap.wait_quiet(0.03, 0.5)
    blocks = {path: _block_of(tap, mark, path) for path in paths}
    conns = {b[0] for b in blocks.values() if b is not None}
    if None in blocks.values() or len(conns) != 1:
        out.append(Finding(F.FORWARDED_MALFORMED, f"requests on tap connections {conns}, missing "
                                                  f"{[p for p, b in blocks.items() if b is None]}"))
    else:
        for path, want in ((b"/echo?s=2", b"\x20"), (b"/echo?s=4", H.hpack_int(4096, 5, 0x20))):
            fragment = blocks[path][1]
            if not fragment.startswith(want):
                out.append(Finding(F.FORWARDED_MALFORMED, f"{path!r} block starts {fragment[:4].hex()}, "
                                                          f"wanted the size update {want.hex()}"))
        for path in (b"/echo?s=1", b"/echo?s=3", b"/echo?s=5"):
            if blocks[path][1][:1] and blocks[path][1][0] & 0xE0 == 0x20:
                out.append(Finding(F.FORWARDED_MALFORMED, f"{path!r}: a size update nobody asked for"))
    out += [Finding(F.FORWARDED_MALFORMED, e) for e in origin.errors[errors:]]
    assert_clean(out + ending(proxy, addr, tap, log_mark))


# ---------------------------------------------------------------------------
# hostile HPACK in responses: an origin that answers with broken header blocks


class RawH2Responder(TcpServer):
    """An HTTP/2 origin answering every request head with ``respond(stream id)``, exact bytes, then GOAWAY.

    It sends its SETTINGS and acknowledges the proxy's once the proxy's first
    bytes arrive, so the proxy takes it for HTTP/2; after answering it says
    GOAWAY and closes, so every vector starts on a fresh connection (and a
    fresh HPACK context).
    """

    def __init__(self) -> None:
        self.respond: Callable[[int], bytes] = lambda sid: b""
        super().__init__(name="hostile-hpack-responder")

    def handle(self, conn: ServerConn) -> None:
        buf = b""
        greeted = False
        end = deadline_in(5.0)
        while time.monotonic() < end and not self.stopping.is_set():
            readable, _, _ = select.select([conn.sock], [], [], 0.05)
            if not readable:
                continue
            try:
                chunk = conn.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            if not greeted:
                if len(buf) < len(H.PREFACE):
                    continue
                buf = buf[len(H.PREFACE):]
                conn.send(H.settings() + H.settings(ack=True))
                greeted = True
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                length, ftype, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
                sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                buf = buf[9 + length:]
                if ftype == H.HEADERS and flags & H.END_HEADERS:
                    conn.send(self.respond(sid) + H.frame(H.GOAWAY, 0, 0, sid.to_bytes(4, "big") + bytes(4)))
                    time.sleep(0.2)
                    conn.close()
                    return


@pytest.fixture(scope="module")
def responder() -> Iterator[RawH2Responder]:
    server = RawH2Responder()
    yield server
    server.stop()


def _status(mark: bytes) -> bytes:
    return lit(b":status", b"200") + lit(b"content-length", b"0") + lit(MARK, mark)


def _resp(block: bytes) -> Callable[[int], bytes]:
    return lambda sid: H.headers(sid, block)


RESPONSE_VECTORS = [
    ("resp-update.above-our-setting", _resp(update(4097) + _status(b"r")), False),
    ("resp-update.after-a-field", _resp(_status(b"r") + update(0)), False),
    ("resp-index.empty-dynamic-table", _resp(_status(b"r") + idx(62)), False),
    ("resp-index.zero", _resp(b"\x80" + _status(b"r")), False),
    ("resp-int.continuation-run", _resp(_status(b"r") + b"\x00\x7f" + b"\x80" * 64 + b"\x00"), False),
    ("resp-huffman.eos", _resp(_status(b"r") + b"\x00\x01x\x84\xff\xff\xff\xff"), False),
    ("resp-huffman.zero-padding", _resp(_status(b"r") + b"\x00\x01x\x81\x18"), False),
    ("resp-list.over-the-limit", _resp(_status(b"r") + lit(b"x-big", b"b" * 3900, 0x40) + idx(62) * 20), False),
    # Decodes, but breaks HTTP/2's field rules (RFC 9113 8.2.1): a stream error, the connection kept.
    ("resp-head.uppercase-name", _resp(_status(b"r") + lit(b"X-Upper", b"v")), False),
    ("resp-valid.updates-then-fields", _resp(update(0) + update(4096) + _status(b"ok1")), True),
    ("resp-valid.one-octet-continuations", lambda sid: _split_response(sid, _status(b"ok2")), True),
]


# What l5d-proxy-error says for each broken head: a block the proxy cannot decode closes the origin's
# connection (its GOAWAY's code); one over the header list limit resets the stream.
BLAME = {vid: "upstream broke HTTP/2 (COMPRESSION_ERROR" for vid, _, valid in RESPONSE_VECTORS if not valid}
BLAME["resp-list.over-the-limit"] = "response head over the header list limit"
BLAME["resp-head.uppercase-name"] = "upstream broke HTTP/2 on the stream (PROTOCOL_ERROR)"


def _split_response(sid: int, block: bytes) -> bytes:
    out = H.headers(sid, block[:1], end_headers=False)
    for i in range(1, len(block)):
        out += H.continuation(sid, block[i:i + 1], end_headers=i == len(block) - 1)
    return out


@pytest.mark.parametrize("vid, respond, valid", [pytest.param(*v, id=f"outbound-{v[0]}") for v in RESPONSE_VECTORS])
def test_hostile_response_block(proxy, tap, responder, vid, respond, valid):
    # A response head the proxy cannot decode (or whose list is too large)
    # fails that request, with a 502 and l5d-proxy-error or a reset, never
    # a crash; a legal one in an odd shape arrives intact.
    log_mark = proxy.mark()
    responder.respond = respond
    out: list[Finding] = []
    want = b"ok1" if vid.endswith("updates-then-fields") else b"ok2"
    with RawH2(proxy.outbound) as conn:
        block = b"".join(lit(n, v) for n, v in ((b":method", b"GET"), (b":scheme", b"http"),
                                                (b":authority", responder.hostport.encode()), (b":path", b"/r")))
        conn.send(H.headers(1, block))
        got = conn.wait_frame(lambda f: f.stream_id == 1 and f.type in (H.HEADERS, H.RST_STREAM)
                              or f.type == H.GOAWAY, 6.0)
        if got is None:
            out.append(Finding(F.NO_ANSWER, f"frames {conn.frames[-6:]!r}"))
        elif valid:
            if got.type != H.HEADERS or got.header(":status") != "200" or got.header(MARK.decode()) != want.decode():
                out.append(Finding(F.BAD_TO_CLIENT, f"{got!r} {got.headers!r}"))
        elif got.type == H.HEADERS and (got.header(":status") != "502" or got.header("l5d-proxy-error") is None):
            out.append(Finding(F.WRONG_STATUS, f"{got.headers!r}, wanted 502 with l5d-proxy-error or a reset"))
        elif got.type == H.HEADERS and BLAME[vid] not in got.header("l5d-proxy-error"):
            # The reason names the origin's fault, not a reset or close it did not send.
            out.append(Finding(F.WRONG_STATUS, f"l5d-proxy-error {got.header('l5d-proxy-error')!r}, "
                                               f"wanted it to say {BLAME[vid]!r}"))
        elif got.type == H.GOAWAY:
            out.append(Finding(F.WRONG_STATUS, f"the client's connection got {got!r} for the origin's fault"))
    assert_clean(out + ending(proxy, proxy.outbound, tap, log_mark))
