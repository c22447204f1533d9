"""Backpressure through the meshed hop: bounded memory behind slow readers, credit never lost, no wedge.

client (HTTP/1 or HTTP/2) -> proxy A (outbound) -> HTTP/2 between the proxies
(plaintext on loopback, or mutual TLS) -> proxy B (inbound) -> app (HTTP/1 or
HTTP/2), real proxies and real bytes (``helpers.meshpair``). The promises
under test (issue 12):

- A slow reader at either end bounds what each proxy buffers: its RSS,
  sampled every 50 ms and read from VmHWM (reset when the transfer starts),
  stays within 16 MiB of its figure at the start, however big the body;
  the digest matches at the end.
- The same client connection and the same proxy-to-proxy connection serve
  normally afterwards, every time (no wedge): small requests answer at once,
  a 64 MiB download goes at the speed it went before, and B has accepted no
  new connection from A.
- Flow-control credit comes back when a stream ends while its client is
  paused, when it is reset with data buffered, and when its client leaves.
- Stalled clients never starve the others on the same target.

Sizes: the plaintext HTTP/1 download and upload move 1 GiB three times each
(about 5 s per GiB here with the pauses); the mutual-TLS and HTTP/2 cases
move 256 MiB each time (the test's own HTTP/2 client, pure Python, reads at
about 100 MiB/s).
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.bulk import GIB, KIB, MIB, BulkApp, H1Conn, Pauses, pattern_sha256
from helpers.h2flow import BulkH2App, FlowH2Client
from helpers.meshpair import CLIENT_ID, SERVER_ID, SERVICE, MeshPair, start_pair

RSS_LIMIT_KIB = 16 * 1024           # the bound: within 16 MiB of the idle figure
PAUSES = Pauses(count=10, every=MIB, seconds=0.2)   # read 1 MiB, sleep 200 ms, ten times; then fast
SLOW_APP = "every=1048576&pause=0.2&pauses=10"      # the app reads the same way
PROMPT_S = 2.0                      # a small request after the abuse answers within this
ROUNDS = 12                         # repetitions of a credit test: 12 x 768 KiB or more > 4 MiB + 1 MiB


def _speed_bound(pair: MeshPair) -> float:
    """How long a 64 MiB download may take afterwards: 4x what it took on the fresh pair, plus 2 s."""
    return 4 * pair.baseline_s + 2.0


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from helpers.issuer import Issuer

    iss = Issuer(tmp_path_factory.mktemp("issuer"), [CLIENT_ID, SERVER_ID]).start()
    yield iss
    iss.stop()


@pytest.fixture
def make_pair(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., MeshPair]]:
    """A fresh app + proxy B + proxy A per call: a wedge in one test cannot fail the next."""
    pairs: list[MeshPair] = []

    def make(app_protocol: str = "http1", tls: bool = False) -> MeshPair:
        app = BulkApp() if app_protocol == "http1" else BulkH2App()
        where = tmp_path / f"pair{len(pairs)}"
        where.mkdir()
        try:
            pair = start_pair(where, app, app_protocol, request.getfixturevalue("issuer") if tls else None)
        except BaseException:
            app.stop()
            raise
        pairs.append(pair)
        return pair

    yield make
    for pair in pairs:
        pair.stop()


# ---------------------------------------------------------------------------
# checks shared by the tests


def _h2_get_ok(client: FlowH2Client) -> float:
    """GET /ok as a new stream of ``client`` (granting it credit itself); seconds taken."""
    started = time.monotonic()
    sid = client.open("GET", "/ok", SERVICE, flowing=True)
    client.flow(sid, 64 * KIB)
    resp = client.response(sid, PROMPT_S)
    assert resp.status == 200 and client.sinks[sid].received == 2, resp.summary()
    return time.monotonic() - started


def _h2_download(client: FlowH2Client, size: int, timeout: float) -> float:
    """``size`` bytes at full speed on a new stream of ``client``; seconds taken (digest checked)."""
    started = time.monotonic()
    sid = client.open("GET", f"/download?n={size}", SERVICE, flowing=True)
    client.flow(sid, 4 * MIB)
    resp = client.response(sid, timeout)
    sink = client.sinks[sid]
    assert (resp.status, sink.received, sink.sha256) == (200, size, pattern_sha256(size)), resp.summary()
    return time.monotonic() - started


def assert_serves_normally(pair: MeshPair, hop_before: float, h1: H1Conn | None = None,
                           h2: FlowH2Client | None = None) -> str:
    """The client's own connection answers small requests at once, a fresh 64 MiB download (on the
    client's connection too, for HTTP/2) goes at the pair's usual speed, and it all still travels
    on the proxy-to-proxy connection that carried the test. Returns a line for the report."""
    bound = _speed_bound(pair)
    took: list[float] = []
    for _ in range(5):
        if h1 is not None:
            started = time.monotonic()
            result = h1.get("/ok", deadline=started + PROMPT_S)
            assert result.status == 200 and result.body == b"ok", result
            took.append(time.monotonic() - started)
        if h2 is not None:
            took.append(_h2_get_ok(h2))
    assert max(took, default=0.0) < PROMPT_S, took
    same = _h2_download(h2, 64 * MIB, bound + 30) if h2 is not None else None
    fresh = pair.fetch(64 * MIB, bound + 30)
    speeds = [s for s in (same, fresh) if s is not None]
    assert max(speeds) <= bound, (
        f"64 MiB took {max(speeds):.2f} s afterwards (same connection {same}, fresh {fresh:.2f} s);"
        f" {pair.baseline_s:.2f} s on the fresh pair, bound {bound:.2f} s")
    assert pair.hop_connections() == hop_before, "A opened another connection to B: the first one was given up"
    return (f"afterwards: small requests max {max(took, default=0) * 1000:.0f} ms; 64 MiB in"
            f" {' / '.join(f'{s:.2f}' for s in speeds)} s (fresh pair: {pair.baseline_s:.2f} s)")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"{what} not within {timeout} s"
        time.sleep(0.01)


def _report(pair: MeshPair, line: str) -> None:
    pair.notes.append(line)
    print(line)


# ---------------------------------------------------------------------------
# slow readers: bounded memory, digest equal, no wedge


@pytest.mark.timeout(480)
@pytest.mark.parametrize("tls,size", [(False, GIB), (True, 256 * MIB)], ids=["plaintext-1GiB", "mtls-256MiB"])
def test_http1_client_reading_with_pauses_three_downloads_in_a_row(make_pair, tls, size):
    pair = make_pair("http1", tls)
    hop = pair.hop_connections()
    expected = pattern_sha256(size)
    with pair.h1(timeout=120) as conn:
        with pair.watch() as watch:
            times = []
            for attempt in range(3):
                result = conn.download(size, PAUSES, deadline=time.monotonic() + 240)
                assert (result.status, result.length) == (200, size), f"download {attempt + 1}: {result}"
                assert result.sha256 == expected, f"download {attempt + 1}: the body differs"
                times.append(result.seconds)
        _report(pair, f"HTTP/1 slow download x3 {size // MIB} MiB {'mTLS' if tls else 'plaintext'}:"
                      f" {', '.join(f'{t:.1f}' for t in times)} s; {watch.describe()}")
        watch.assert_within(RSS_LIMIT_KIB, "three slow downloads")
        _report(pair, assert_serves_normally(pair, hop, h1=conn))


@pytest.mark.timeout(480)
@pytest.mark.parametrize("tls,size", [(False, GIB), (True, 256 * MIB)], ids=["plaintext-1GiB", "mtls-256MiB"])
def test_http1_client_uploading_to_an_app_that_reads_with_pauses_three_times(make_pair, tls, size):
    pair = make_pair("http1", tls)
    hop = pair.hop_connections()
    expected = pattern_sha256(size)
    with pair.h1(timeout=120) as conn:
        with pair.watch() as watch:
            times = []
            for attempt in range(3):
                result = conn.upload(size, SLOW_APP, deadline=time.monotonic() + 240)
                assert result.status == 200, f"upload {attempt + 1}: {result}"
                assert (result.header("x-body-length"), result.header("x-body-sha256")) == (str(size), expected), \
                    f"upload {attempt + 1}: the app read something else: {result.headers}"
                times.append(result.seconds)
        _report(pair, f"HTTP/1 upload to a slow app x3 {size // MIB} MiB {'mTLS' if tls else 'plaintext'}:"
                      f" {', '.join(f'{t:.1f}' for t in times)} s; {watch.describe()}")
        watch.assert_within(RSS_LIMIT_KIB, "three uploads to a slow app")
        _report(pair, assert_serves_normally(pair, hop, h1=conn))


@pytest.mark.timeout(300)
def test_http1_client_reading_a_chunked_body_with_pauses(make_pair):
    pair = make_pair("http1")
    hop = pair.hop_connections()
    size = 256 * MIB
    with pair.h1(timeout=120) as conn:
        with pair.watch() as watch:
            result = conn.download(size, PAUSES, chunked=True, deadline=time.monotonic() + 240)
        assert result.status == 200 and (result.length, result.sha256) == (size, pattern_sha256(size)), result
        _report(pair, f"HTTP/1 slow chunked download {size // MIB} MiB: {result.seconds:.1f} s; {watch.describe()}")
        watch.assert_within(RSS_LIMIT_KIB, "a slow chunked download")
        _report(pair, assert_serves_normally(pair, hop, h1=conn))


@pytest.mark.timeout(480)
@pytest.mark.parametrize("tls,app_protocol", [(False, "h2"), (False, "http1"), (True, "h2")],
                         ids=["plaintext-h2app", "plaintext-http1app", "mtls-h2app"])
def test_h2_client_with_a_zero_then_reopened_window_three_downloads_in_a_row(make_pair, tls, app_protocol):
    """The client's streams start with a zero window; it opens 1 MiB at a time with 200 ms pauses."""
    pair = make_pair(app_protocol, tls)
    hop = pair.hop_connections()
    size = 256 * MIB
    expected = pattern_sha256(size)
    with pair.h2(initial_window=0, timeout=120) as client:
        with pair.watch() as watch:
            times = []
            for attempt in range(3):
                started = time.monotonic()
                sid = client.open("GET", f"/download?n={size}", SERVICE, flowing=False)
                resp = client.read_paced(sid, PAUSES, timeout=240)
                sink = client.sinks[sid]
                assert resp.status == 200 and resp.reset_code is None, f"download {attempt + 1}: {resp.summary()}"
                assert (sink.received, sink.sha256) == (size, expected), f"download {attempt + 1}: the body differs"
                times.append(time.monotonic() - started)
        _report(pair, f"HTTP/2 zero-window download x3 {size // MIB} MiB {'mTLS' if tls else 'plaintext'}"
                      f" ({app_protocol} app): {', '.join(f'{t:.1f}' for t in times)} s; {watch.describe()}")
        watch.assert_within(RSS_LIMIT_KIB, "three zero-window downloads")
        _report(pair, assert_serves_normally(pair, hop, h2=client))


@pytest.mark.timeout(480)
@pytest.mark.parametrize("tls,app_protocol", [(False, "h2"), (False, "http1"), (True, "h2")],
                         ids=["plaintext-h2app", "plaintext-http1app", "mtls-h2app"])
def test_h2_client_uploading_to_an_app_that_reads_with_pauses(make_pair, tls, app_protocol):
    pair = make_pair(app_protocol, tls)
    hop = pair.hop_connections()
    size = 256 * MIB
    expected = pattern_sha256(size)
    with pair.h2(timeout=120) as client:
        with pair.watch() as watch:
            times = []
            for attempt in range(2):
                started = time.monotonic()
                sid = client.open("POST", f"/upload?{SLOW_APP}", SERVICE, end=False,
                                  headers=[("content-length", str(size))])
                client.upload(sid, size, timeout=240)
                client.flow(sid, 64 * KIB)
                resp = client.response(sid, 60)
                assert resp.status == 200, f"upload {attempt + 1}: {resp.summary()}"
                assert (resp.header("x-body-length"), resp.header("x-body-sha256")) == (str(size), expected), \
                    f"upload {attempt + 1}: the app read something else: {resp.summary()}"
                times.append(time.monotonic() - started)
        _report(pair, f"HTTP/2 upload to a slow app x2 {size // MIB} MiB {'mTLS' if tls else 'plaintext'}"
                      f" ({app_protocol} app): {', '.join(f'{t:.1f}' for t in times)} s; {watch.describe()}")
        watch.assert_within(RSS_LIMIT_KIB, "uploads to a slow app")
        _report(pair, assert_serves_normally(pair, hop, h2=client))


@pytest.mark.timeout(120)
def test_http1_upload_answered_before_the_app_read_it(make_pair):
    """The app answers a 16 MiB upload at once and reads (discards) the body afterwards, as nginx's
    ``return`` does. Directly, the client reads the answer and the connection stays usable; through the
    mesh the client must get the answer too, never a reset while it is still sending."""
    pair = make_pair("http1")
    size = 16 * MIB
    with pair.h1(timeout=30) as conn:
        result = conn.upload(size, deadline=time.monotonic() + 60, path="/upload-early")
        assert (result.status, result.body) == (200, b"early"), result
        if "close" not in result.headers.get("connection", "").lower():
            again = conn.get("/ok", deadline=time.monotonic() + PROMPT_S)
            assert (again.status, again.body) == (200, b"ok"), again


@pytest.mark.timeout(180)
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mtls"])
def test_h2_answer_followed_by_a_no_error_reset_reaches_the_client(make_pair, tls):
    """RFC 9113 8.1: an app may answer in full before the request body ended, then RST_STREAM(NO_ERROR)
    to stop the upload; the client must get that whole answer (it "MUST NOT discard" it), whether the
    reset overtakes body bytes still on their way to the app or not. Fifty times."""
    pair = make_pair("h2", tls)
    with pair.h2(timeout=30) as client:
        for attempt in range(50):
            size = 32 * KIB if attempt % 2 else 4 * MIB
            sid = client.open("POST", "/upload-early", SERVICE, end=False, headers=[("content-length", str(size))])
            client.send(sid, bytes(min(size, 4 * MIB)))
            resp = client.response(sid, 10)
            sink = client.sinks[sid]
            assert (resp.status, resp.ended, sink.received, sink.sha256) == \
                (200, True, 5, hashlib.sha256(b"early").hexdigest()), f"attempt {attempt + 1}: {resp.summary()}"
        assert _h2_get_ok(client) < PROMPT_S


# ---------------------------------------------------------------------------
# credit is never lost


@pytest.mark.timeout(180)
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mtls"])
def test_credit_comes_back_when_a_stream_ends_while_the_h2_client_holds_a_zero_window(make_pair, tls):
    """Each body (768 KiB) fits in A's stream window, so it ends at A while the client shows a zero
    window; the client reads it only then. Twelve times: more than the connection buffer and window."""
    pair = make_pair("h2", tls)
    hop = pair.hop_connections()
    size = 768 * KIB
    with pair.h2(initial_window=0, timeout=30) as client, pair.watch() as watch:
        for attempt in range(ROUNDS):
            count = len(pair.app.downloads)
            sid = client.open("GET", f"/download?n={size}", SERVICE, flowing=False)
            _wait(lambda count=count: len(pair.app.downloads) > count and pair.app.downloads[count].finished.is_set(),
                  10,
                  f"round {attempt + 1}: the app sending the whole body while the client's window is zero")
            time.sleep(0.3)  # the end of the stream reaches A
            client.pump(time.monotonic() + 0.2)  # h2 itself raises on DATA beyond the window
            assert client.sinks[sid].received == 0, "the proxy sent DATA beyond a zero window"
            client.flow(sid, size)
            resp = client.response(sid, 10)
            sink = client.sinks[sid]
            assert (resp.status, sink.received, sink.sha256) == (200, size, pattern_sha256(size)), \
                f"round {attempt + 1}: {resp.summary()}"
        _report(pair, f"credit, stream ended behind a zero window x{ROUNDS} ({'mTLS' if tls else 'plaintext'}):"
                      f" {watch.describe()}")
        _report(pair, assert_serves_normally(pair, hop, h2=client))


@pytest.mark.timeout(180)
def test_credit_comes_back_when_a_stream_ends_while_the_http1_client_pauses(make_pair):
    """The HTTP/1 client asks for 1..6 MiB (one size per round, so that the end of the stream meets A
    with the last bytes in its own buffers in some rounds and in the kernel's in others) and reads
    nothing until the app has sent all of it."""
    pair = make_pair("http1")
    hop = pair.hop_connections()
    with H1Conn(pair.a.outbound, SERVICE, timeout=30, rcvbuf=16 * KIB) as conn, pair.watch() as watch:
        for attempt in range(ROUNDS):
            size = (1 + attempt % 6) * MIB
            count = len(pair.app.downloads)
            conn.send_request("GET", f"/download?n={size}")
            _wait(lambda count=count: len(pair.app.downloads) > count and pair.app.downloads[count].finished.is_set(),
                  10,
                  f"round {attempt + 1}: the app sending the whole body while the client does not read")
            time.sleep(0.3)
            result = conn.read_response(deadline=time.monotonic() + 10)
            assert (result.status, result.length, result.sha256) == (200, size, pattern_sha256(size)), \
                f"round {attempt + 1}: {result}"
        _report(pair, f"credit, stream ended while the HTTP/1 client paused x{ROUNDS}: {watch.describe()}")
        _report(pair, assert_serves_normally(pair, hop, h1=conn))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client_kind", ["http1", "h2"])
def test_credit_comes_back_when_the_client_leaves_after_its_stream_ended(make_pair, client_kind):
    """The body ends at A while the client reads nothing; then the client goes away (RST for HTTP/1,
    the whole connection for HTTP/2) with the body still in A's hands. Twelve times."""
    pair = make_pair("http1" if client_kind == "http1" else "h2")
    hop = pair.hop_connections()
    with pair.watch() as watch:
        for attempt in range(ROUNDS):
            size = (1 + attempt % 6) * MIB if client_kind == "http1" else 768 * KIB
            count = len(pair.app.downloads)
            if client_kind == "http1":
                conn = H1Conn(pair.a.outbound, SERVICE, timeout=30, rcvbuf=16 * KIB)
                conn.send_request("GET", f"/download?n={size}")
            else:
                client = pair.h2(initial_window=0, timeout=30)
                client.open("GET", f"/download?n={size}", SERVICE, flowing=False)
            _wait(lambda count=count: len(pair.app.downloads) > count and pair.app.downloads[count].finished.is_set(),
                  10,
                  f"round {attempt + 1}: the app sending the whole body while the client does not read")
            time.sleep(0.3)
            if client_kind == "http1":
                conn.close(reset=True)
            else:
                client.sock.close()
    _report(pair, f"credit, {client_kind} client left after its stream ended x{ROUNDS}: {watch.describe()}")
    with (pair.h1(timeout=30) if client_kind == "http1" else pair.h2(timeout=30)) as conn:
        _report(pair, assert_serves_normally(pair, hop, **{"h1" if client_kind == "http1" else "h2": conn}))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client_kind", ["http1", "h2"])
def test_credit_comes_back_when_a_download_is_reset_with_data_buffered(make_pair, client_kind):
    """A 64 MiB download is cut off once the proxies hold data for it (the HTTP/2 client never opened
    its window and resets the stream; the HTTP/1 client, reading nothing, vanishes with a RST). Twelve
    times; the connection between the proxies must have all its credit back."""
    pair = make_pair("http1" if client_kind == "http1" else "h2")
    hop = pair.hop_connections()
    size = 64 * MIB
    h2client = pair.h2(initial_window=0, timeout=30) if client_kind == "h2" else None
    try:
        with pair.watch() as watch:
            for attempt in range(ROUNDS):
                count = len(pair.app.downloads)
                if h2client is None:
                    conn = H1Conn(pair.a.outbound, SERVICE, timeout=30, rcvbuf=16 * KIB)
                    conn.send_request("GET", f"/download?n={size}")
                else:
                    sid = h2client.open("GET", f"/download?n={size}", SERVICE, flowing=False)
                # More than a stream window has left the app: both proxies hold data for this stream.
                _wait(lambda count=count: len(pair.app.downloads) > count
                      and pair.app.downloads[count].done >= 3 * MIB // 2,
                      10, f"round {attempt + 1}: the app sending 1.5 MiB")
                time.sleep(0.3)
                if h2client is None:
                    conn.close(reset=True)
                else:
                    h2client.reset(sid)
            ended = [d for d in pair.app.downloads[-ROUNDS:] if d.finished.wait(10)]
        _report(pair, f"credit, {client_kind} download reset mid-transfer x{ROUNDS}: app sent"
                      f" {', '.join(f'{d.done / MIB:.1f}' for d in pair.app.downloads[-ROUNDS:])} MiB"
                      f" ({len(ended)} of {ROUNDS} app transfers ended); {watch.describe()}")
        if h2client is not None:
            _report(pair, assert_serves_normally(pair, hop, h2=h2client))
        else:
            with pair.h1(timeout=30) as conn:
                _report(pair, assert_serves_normally(pair, hop, h1=conn))
    finally:
        if h2client is not None:
            h2client.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("client_kind", ["http1", "h2"])
def test_credit_comes_back_when_an_upload_is_reset_with_data_buffered(make_pair, client_kind):
    """The app stops reading for 3 s after the first 64 KiB; the client sends until the proxies stop
    taking bytes, then resets the stream (HTTP/2) or vanishes (HTTP/1). Eight times; then a 64 MiB
    upload on the same proxy-to-proxy connection goes at its usual speed."""
    pair = make_pair("http1" if client_kind == "http1" else "h2")
    hop = pair.hop_connections()
    size = 64 * MIB
    stall = "every=65536&pause=3&pauses=1"

    def upload_fast(client: FlowH2Client | None) -> float:
        started = time.monotonic()
        if client is None:
            with pair.h1(timeout=30) as conn:
                result = conn.upload(size, deadline=started + 60)
            assert (result.status, result.header("x-body-sha256")) == (200, pattern_sha256(size)), result
        else:
            sid = client.open("POST", "/upload", SERVICE, end=False, headers=[("content-length", str(size))])
            client.upload(sid, size, timeout=60)
            client.flow(sid, 64 * KIB)
            resp = client.response(sid, 30)
            assert (resp.status, resp.header("x-body-sha256")) == (200, pattern_sha256(size)), resp.summary()
        return time.monotonic() - started

    h2client = pair.h2(timeout=30) if client_kind == "h2" else None
    try:
        before = min(upload_fast(h2client) for _ in range(2))
        sent = []
        with pair.watch() as watch:
            for _ in range(8):
                if h2client is None:
                    conn = H1Conn(pair.a.outbound, SERVICE, timeout=30)
                    sent.append(conn.send_until_stuck(size, f"/upload?{stall}"))
                    conn.close(reset=True)
                else:
                    sid = h2client.open("POST", f"/upload?{stall}", SERVICE, end=False,
                                        headers=[("content-length", str(size))])
                    sent.append(h2client.upload_until_stuck(sid, size))
                    h2client.reset(sid)
        after = upload_fast(h2client)
        sent_mib = ", ".join(f"{s / MIB:.1f}" for s in sent)
        _report(pair, f"credit, {client_kind} upload reset mid-transfer x8: sent {sent_mib}"
                      f" MiB before the proxies stopped taking bytes; 64 MiB upload {before:.2f} s before,"
                      f" {after:.2f} s after; {watch.describe()}")
        assert all(s < size for s in sent), "the proxies took the whole upload while the app read nothing"
        assert after <= 4 * before + 2.0, f"a 64 MiB upload took {after:.2f} s after the resets, {before:.2f} s before"
        assert pair.hop_connections() == hop, "A opened another connection to B: the first one was given up"
        watch.assert_within(RSS_LIMIT_KIB, "uploads reset with data buffered")
    finally:
        if h2client is not None:
            h2client.close()


# ---------------------------------------------------------------------------
# stalled clients never starve the others


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client_kind,stalled", [("http1", 1), ("http1", 8), ("h2", 1), ("h2", 8)],
                         ids=["http1-1-stalled", "http1-8-stalled", "h2-1-stalled", "h2-8-stalled"])
def test_stalled_clients_do_not_starve_the_others(make_pair, client_kind, stalled):
    """``stalled`` clients each start a 256 MiB download and never read (HTTP/1: a socket never read;
    HTTP/2: streams whose window stays zero). Meanwhile another client's requests to the same target
    answer promptly and a 64 MiB download goes at its usual speed, over the same proxy-to-proxy
    connection. Memory stays bounded (eight stalled streams hold at most eight stream windows)."""
    pair = make_pair("http1" if client_kind == "http1" else "h2")
    hop = pair.hop_connections()
    size = 256 * MIB
    held: list[object] = []
    try:
        with pair.watch() as watch:
            count = len(pair.app.downloads)
            if client_kind == "http1":
                for _ in range(stalled):
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
                    sock.connect(pair.a.outbound)
                    sock.sendall(f"GET /download?n={size} HTTP/1.1\r\nHost: {SERVICE}\r\n\r\n".encode())
                    held.append(sock)
            else:
                client = pair.h2(initial_window=0, timeout=30)
                held.append(client)
                for _ in range(stalled):
                    client.open("GET", f"/download?n={size}", SERVICE, flowing=False)
            _wait(lambda: len(pair.app.downloads) >= count + stalled, 10, "the app seeing every stalled download")
            time.sleep(1.0)  # every stalled stream has filled what it may
            progress = [d.done for d in pair.app.downloads[count:]]
            with (pair.h1(timeout=30) if client_kind == "http1" else pair.h2(timeout=30)) as other:
                line = assert_serves_normally(pair, hop, **{"h1" if client_kind == "http1" else "h2": other})
        _report(pair, f"{stalled} stalled {client_kind} client(s): app sent"
                      f" {', '.join(f'{p / MIB:.1f}' for p in progress)} MiB before stalling; {line};"
                      f" {watch.describe()}")
        watch.assert_within(RSS_LIMIT_KIB, f"{stalled} stalled clients")
    finally:
        for item in held:
            item.close()
