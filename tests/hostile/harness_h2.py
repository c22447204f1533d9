"""Runs one hostile HTTP/2 stream through a real proxy listener and lists what went wrong.

``run_h2`` sends a stream as h2c with prior knowledge and judges the answer
and what reached the HTTP/2 backend (through a recording tap, decoded and
checked by ``strict_h2``). ``run_meshed`` acts as a peer proxy on the
inbound listener (transport header naming the app port, then HTTP/2 with
``l5d-orig-proto``) and judges the HTTP/1 bytes that reached the app with
``strict_h1``. Both end with the shared checks and a good request through
the same path.
"""

from __future__ import annotations

import pytest

from helpers import h2 as H
from helpers.h2 import RawH2, hpack_str
from helpers.h2client import H2Client
from helpers.meshproxy import MeshProxy
from helpers.rawbackend import RawBackend
from helpers.strict_h2 import decode_requests, request_problems
from helpers.tcptap import RecordingTap
from proxy.protocol import transport_header

from . import findings as F
from .expect import either, forwarded, refused
from .findings import Finding
from .harness_h1 import backend_findings
from .vectors_h2 import Fields, H2Vector, mesh

ANSWER_TIMEOUT = 1.5
REFUSAL_STATUSES = (400, 431)
SID = 1


def literal(fields: Fields) -> bytes:
    """HPACK literals without indexing, bytes exactly as given."""
    return b"".join(b"\x00" + hpack_str(n) + hpack_str(v) for n, v in fields)


def stream_frames(sid: int, fields: Fields, data: tuple[bytes, ...], trailers: Fields | None) -> bytes:
    out = H.headers(sid, literal(fields), end_stream=not data and trailers is None)
    for i, chunk in enumerate(data):
        out += H.data(sid, chunk, end=i == len(data) - 1 and trailers is None)
    if trailers is not None:
        out += H.headers(sid, literal(trailers), end_stream=True)
    return out


def answer_findings(conn: RawH2, expect: str) -> tuple[list[Finding], bool]:
    """Judge the proxy's answer on stream ``SID``; also says whether it refused."""
    got = conn.wait_frame(lambda f: (f.stream_id == SID and f.type in (H.HEADERS, H.RST_STREAM))
                          or f.type == H.GOAWAY, ANSWER_TIMEOUT)
    if got is None:
        if conn.eof or conn.send_failed is not None:
            refusal, detail = True, "connection closed"
        else:
            return [Finding(F.NO_ANSWER, f"{ANSWER_TIMEOUT}s; frames {conn.frames[-8:]!r}")], False
    elif got.type in (H.RST_STREAM, H.GOAWAY):
        refusal, detail = True, repr(got)
    else:
        status = got.header(":status")
        error = got.header("l5d-proxy-error")
        if error is None and status is not None and status.startswith("2"):
            if expect in ("refused", "refused-body"):
                return [Finding(F.FORWARDED_INSTEAD, f"the backend answered {status}")], False
            return [], False
        if error is None:
            return [Finding(F.NO_ERROR_HEADER, f":status {status}; {got.headers!r}")], False
        if int(status or 0) not in REFUSAL_STATUSES:
            return [Finding(F.WRONG_STATUS, f"{status} ({error!r}), wanted a reset or 400")], False
        refusal, detail = True, f"{status} {error!r}"
    if refusal and expect == "forwarded":
        return [Finding(F.REFUSED_LEGAL, detail)], True
    return [], True


def tap_findings(tap: RecordingTap, mark: dict[int, int], expect: str, refused_: bool) -> list[Finding]:
    out: list[Finding] = []
    seen = []
    for tconn in tap.connections():
        start = mark.get(tconn.id, 0)
        data = tconn.sent()
        if len(data) <= start:
            continue
        decoded = decode_requests(data)
        out += [Finding(F.FORWARDED_MALFORMED, f"tap conn {tconn.id}: {p}") for p in decoded.problems]
        for stream in decoded.streams.values():
            if stream.offset < start:
                continue
            seen.append(stream)
            for p in request_problems(stream):
                out.append(Finding(F.FORWARDED_MALFORMED, f"tap conn {tconn.id}: {p}; {stream.headers!r}"))
    allowed = 1 if expect == "forwarded" or (expect == "either" and not refused_) or expect == "refused-body" else 0
    if len(seen) > allowed:
        out.append(Finding(F.FORWARDED_INSTEAD, f"{len(seen)} streams reached the backend: "
                                                f"{[s.headers for s in seen]!r}"))
    if expect == "forwarded" and not seen:
        out.append(Finding(F.REFUSED_LEGAL, "nothing reached the backend"))
    return out


def run_h2(proxy: MeshProxy, addr: tuple[str, int], tap: RecordingTap, vector: H2Vector) -> list[Finding]:
    log_mark, mark = proxy.mark(), tap.mark()
    with RawH2(addr) as conn:
        conn.send(stream_frames(SID, vector.render_fields(tap.hostport), vector.data, vector.trailers))
        out, refused_ = answer_findings(conn, vector.expect)
    tap.wait_quiet(0.03, 0.5)
    out += tap_findings(tap, mark, vector.expect, refused_)
    out += F.log_findings(proxy, log_mark)
    if proxy.running():
        out += good_h2_request(addr, tap.hostport)
    return out


def good_h2_request(addr: tuple[str, int], authority: str) -> list[Finding]:
    try:
        with H2Client(addr, timeout=3) as client:
            resp = client.exchange("GET", "/name", authority, timeout=3)
    except (OSError, AssertionError, TimeoutError) as err:
        return [Finding(F.NOT_SERVING, f"{type(err).__name__}: {err}")]
    if resp.status != 200:
        return [Finding(F.NOT_SERVING, resp.summary())]
    return []


# ---------------------------------------------------------------------------
# the meshed hop


def peer_connection(addr: tuple[str, int], app_port: int) -> RawH2:
    """A connection that speaks like a peer proxy: transport header, preface, SETTINGS."""
    conn = RawH2(addr, preface=False, handshake=False)
    conn.ack_settings = True
    conn.send(transport_header.encode(app_port, transport_header.PROTO_HTTP, "hostile")
              + H.PREFACE + H.settings())
    got = conn.wait_frame(lambda f: f.type == H.SETTINGS and not f.flags & H.ACK, ANSWER_TIMEOUT)
    conn.ack_settings = False
    if got is None:
        conn.close()
        pytest.fail(f"the inbound listener sent no SETTINGS to a peer; frames {conn.frames!r}")
    return conn


_MESH_EXPECT = {"refused": refused(), "refused-body": either(), "either": either(), "forwarded": forwarded()}


def run_meshed(proxy: MeshProxy, app: RawBackend, vector: H2Vector) -> list[Finding]:
    log_mark, mark = proxy.mark(), app.mark()
    with peer_connection(proxy.inbound, app.port) as conn:
        conn.send(stream_frames(SID, vector.fields, vector.data, vector.trailers))
        out, refused_ = answer_findings(conn, vector.expect)
    app.wait_quiet(0.03, 0.5)
    # A refused body may follow a head that went ahead (as one complete
    # message, when its declared length was met), never more.
    out += backend_findings(app, mark, _MESH_EXPECT[vector.expect],
                            refused_ and vector.expect != "refused-body")
    app.close_unsettled()
    out += F.log_findings(proxy, log_mark)
    if proxy.running():
        out += good_meshed_request(proxy, app)
    return out


def good_meshed_request(proxy: MeshProxy, app: RawBackend) -> list[Finding]:
    with peer_connection(proxy.inbound, app.port) as conn:
        conn.send(stream_frames(SID, mesh(path=b"/good"), (), None))
        got = conn.wait_frame(lambda f: f.stream_id == SID and f.type in (H.HEADERS, H.RST_STREAM), 3.0)
    if got is None or got.type != H.HEADERS or got.header(":status") != "200":
        return [Finding(F.NOT_SERVING, f"a valid meshed stream got {got!r} {got.headers if got else None!r}")]
    return []
