"""HTTP/2 (h2c, prior knowledge) through the real proxy with real clients and servers.

Clients: curl --http2-prior-knowledge, h2load, and the precise ``H2Client``.
Servers: an nginx whose listener speaks h2c, and ``H2Origin`` (the ``h2``
package), which records exactly what the proxy forwarded. Three routes reach
each server: the outbound listener (routed by :authority), the inbound
listener (its default target), and two proxies in a row (proxy A's outbound
with the authority of proxy B's inbound, which forwards to the server).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import pytest

from helpers.checks import PROXY_ERROR, delta
from helpers.clients import clean_env, curl
from helpers.h2 import CANCEL, INTERNAL_ERROR
from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy
from helpers.nginx import NginxH2c
from helpers.ports import free_port
from helpers.servers import StuckListener, det_bytes, sha256
from proxy.protocol import h2frame

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------------------
# servers, proxies, routes


@pytest.fixture(scope="module")
def origin():
    server = H2Origin(name="origin")
    yield server
    server.stop()
    assert not server.errors, f"the origin saw bad HTTP/2 from the proxy: {server.errors}"


@pytest.fixture(scope="module")
def nginx_h2(tmp_path_factory):
    server = NginxH2c(tmp_path_factory.mktemp("nginx-h2"))
    server.start()
    yield server
    server.stop()


def _proxy(tmp_path_factory, name: str, **env: str):
    mp = MeshProxy(env=env, name=name, log_path=tmp_path_factory.mktemp(name) / "stderr.log")
    mp.start()
    return mp


@pytest.fixture(scope="module")
def proxy_a(origin, tmp_path_factory):
    """Outbound routes by authority; inbound goes to the origin."""
    mp = _proxy(tmp_path_factory, "proxy-a", MESHPROXY_INBOUND_DEFAULT_TARGET=origin.hostport)
    yield mp
    mp.close()


@pytest.fixture(scope="module")
def proxy_b(origin, tmp_path_factory):
    """The second hop: its inbound forwards to the origin."""
    mp = _proxy(tmp_path_factory, "proxy-b", MESHPROXY_INBOUND_DEFAULT_TARGET=origin.hostport)
    yield mp
    mp.close()


@pytest.fixture(scope="module")
def proxy_n(nginx_h2, tmp_path_factory):
    """Its inbound forwards to nginx (the second hop of nginx routes too)."""
    mp = _proxy(tmp_path_factory, "proxy-n", MESHPROXY_INBOUND_DEFAULT_TARGET=nginx_h2.hostport)
    yield mp
    mp.close()


@pytest.fixture(scope="module")
def timeout_proxy(tmp_path_factory):
    """Short connect and response timeouts (MESHPROXY_RESPONSE_TIMEOUT is
    documented for HTTP/1; these tests check HTTP/2 honours it too)."""
    mp = _proxy(tmp_path_factory, "proxy-timeouts", MESHPROXY_CONNECT_TIMEOUT="500ms",
                MESHPROXY_RESPONSE_TIMEOUT="500ms")
    yield mp
    mp.close()


@dataclass
class Route:
    name: str
    addr: tuple[str, int]
    authority: str

    def url(self, path: str) -> str:
        return f"http://{self.addr[0]}:{self.addr[1]}{path}"

    def curl(self, path: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        return curl("--http2-prior-knowledge", "-H", f"Host: {self.authority}", *args, self.url(path),
                    timeout=timeout)


ROUTES = ["outbound", "inbound", "two-proxies"]


@pytest.fixture(params=ROUTES)
def origin_route(request, origin) -> Route:
    a = request.getfixturevalue("proxy_a")
    if request.param == "outbound":
        return Route("outbound", a.outbound, origin.hostport)
    if request.param == "inbound":
        return Route("inbound", a.inbound, "app.example:8080")
    b = request.getfixturevalue("proxy_b")
    return Route("two-proxies", a.outbound, b.inbound_hostport)


@pytest.fixture(params=ROUTES)
def nginx_route(request, nginx_h2) -> Route:
    a = request.getfixturevalue("proxy_a")
    n = request.getfixturevalue("proxy_n")
    if request.param == "outbound":
        return Route("outbound", a.outbound, nginx_h2.hostport)
    if request.param == "inbound":
        return Route("inbound", n.inbound, "app.example:8080")
    return Route("two-proxies", a.outbound, n.inbound_hostport)


def _ok(result: subprocess.CompletedProcess) -> bytes:
    assert result.returncode == 0, f"curl exit {result.returncode}: {result.stderr.decode(errors='replace')}"
    return result.stdout


# ---------------------------------------------------------------------------
# curl and nginx


def test_curl_get_from_nginx(nginx_route, nginx_h2):
    out = _ok(nginx_route.curl("/static/hello.txt", "-w", "\n%{http_version} %{http_code}"))
    body, _, info = out.rpartition(b"\n")
    assert body == nginx_h2.hello
    assert info == b"2 200", info


def test_curl_large_download_from_nginx(nginx_route, nginx_h2):
    """12 MiB crosses every flow-control window on every hop many times."""
    body = _ok(nginx_route.curl("/static/large.bin", timeout=30))
    assert len(body) == len(nginx_h2.large)
    assert sha256(body) == nginx_h2.large_sha256


@pytest.mark.parametrize("name", ["outbound", "inbound"])
def test_curl_head_to_nginx(name, proxy_a, proxy_n, nginx_h2):
    """A HEAD response is one HEADERS frame that ends the stream."""
    route = (Route("outbound", proxy_a.outbound, nginx_h2.hostport) if name == "outbound"
             else Route("inbound", proxy_n.inbound, "app.example"))
    out = _ok(route.curl("/static/hello.txt", "-I", timeout=5))
    assert out.startswith(b"HTTP/2 200"), out
    assert f"content-length: {len(nginx_h2.hello)}".encode() in out.lower(), out


def test_curl_headers_reach_origin(origin_route, origin):
    before = len(origin.requests)
    out = _ok(origin_route.curl(
        "/echo?a=1&b=%20x", "-D", "-", "-H", "X-Custom: value one", "-H", "x-multi: 1", "-H", "x-multi: 2",
        "-H", "x-echo-back: yes", "-H", "user-agent: meshproxy-test", "--data-binary", "headers test"))
    assert origin.wait_requests(before + 1)
    req = [r for r in origin.requests[before:] if r.path.startswith("/echo?a=1")][-1]
    assert req.header(":method") == "POST" and bytes(req.body) == b"headers test"
    assert req.header(":scheme") == "http"
    assert req.header(":path") == "/echo?a=1&b=%20x"
    assert req.header(":authority") == origin_route.authority
    assert req.header("x-custom") == "value one"
    assert req.header_all("x-multi") == ["1", "2"]
    assert req.header("user-agent") == "meshproxy-test"
    regular = [n for n in req.names if not n.startswith(":")]
    assert regular.index("x-custom") < regular.index("x-multi") < regular.index("x-echo-back"), regular
    assert not {"connection", "keep-alive", "transfer-encoding", "upgrade", "host"} & set(req.names), req.names
    head, _, body = out.partition(b"\r\n\r\n")
    head = head.lower()
    assert body == b"headers test"
    assert head.startswith(b"http/2 200")
    assert b"x-echo-back: yes" in head and PROXY_ERROR.encode() not in head, head


def test_curl_post_multi_mb_both_ways(origin_route, tmp_path):
    """3 MB up and the same 3 MB echoed down: more than the proxy's 1 MiB
    windows and far more than the origin's 64 KiB ones."""
    data = det_bytes(3_000_000, 11)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    out = _ok(origin_route.curl("/echo", "--data-binary", f"@{path}", "-D", str(tmp_path / "head"), timeout=10))
    head = (tmp_path / "head").read_bytes().lower()
    assert f"x-body-sha256: {sha256(data)}".encode() in head, head
    assert len(out) == len(data) and sha256(out) == sha256(data)


# ---------------------------------------------------------------------------
# the precise client


def test_large_download_through_small_client_window(origin_route):
    size = 8_000_000
    with H2Client(origin_route.addr, window=65535) as client:
        resp = client.exchange("GET", f"/bytes/{size}", origin_route.authority, timeout=30)
    assert resp.status == 200 and resp.ended, resp.summary()
    assert len(resp.data) == size
    assert sha256(bytes(resp.data)) == resp.header("x-body-sha256") == sha256(det_bytes(size, 7))


def test_trailers_both_ways(origin_route, origin):
    data = det_bytes(200_000, 12)
    with H2Client(origin_route.addr) as client:
        resp = client.exchange("POST", "/echo?trailers=1", origin_route.authority, body=data,
                               headers=[("x-echo-trailer-test", "1")],
                               trailers=[("x-request-trailer", "sent"), ("x-checksum", sha256(data))])
    assert resp.status == 200 and resp.ended, resp.summary()
    assert bytes(resp.data) == data
    assert resp.trailers == [(b"x-body-sha256", sha256(data).encode()), (b"x-trailer", b"done")]
    req = [r for r in origin.requests if r.header("x-echo-trailer-test") == "1"][-1]
    assert req.trailers == [(b"x-request-trailer", b"sent"), (b"x-checksum", sha256(data).encode())]
    assert bytes(req.body) == data


def test_informational_response_relayed(origin_route):
    with H2Client(origin_route.addr) as client:
        resp = client.exchange("GET", "/early-hints", origin_route.authority)
    assert resp.informational == [[(b":status", b"103"), (b"link", b"</style.css>; rel=preload")]]
    assert resp.status == 200 and bytes(resp.data) == b"after hints"


@pytest.mark.parametrize("path", ["/status/204", "/trailers-only?grpc=5"])
def test_headers_only_response(path, proxy_a, origin):
    """A response that is a single HEADERS frame with END_STREAM (204, gRPC's Trailers-Only).

    A first exchange settles the connection (SETTINGS and their ACKs), so
    nothing the client sends afterwards can push out a reply the proxy
    merely queued."""
    with H2Client(proxy_a.outbound) as client:
        assert client.exchange("GET", "/name", origin.hostport).status == 200
        resp = client.exchange("GET", path, origin.hostport, timeout=3)
    assert resp.ended and resp.reset_code is None, resp.summary()
    if path == "/status/204":
        assert resp.status == 204 and not resp.data
    else:
        assert resp.status == 200 and resp.header("grpc-status") == "5"


def test_many_concurrent_streams_on_one_connection(origin_route, origin):
    count = 64
    bodies = {}
    with H2Client(origin_route.addr, window=1 << 20) as client:
        for i in range(count):
            data = det_bytes(20_000 + i, 100 + i)
            sid = client.request("POST", f"/echo?stream={i}", origin_route.authority, body=data,
                                 headers=[("x-echo-index", str(i))])
            bodies[sid] = (i, data)
        responses = {sid: client.response(sid, timeout=20) for sid in bodies}
    for sid, (i, data) in bodies.items():
        resp = responses[sid]
        assert resp.status == 200 and resp.header("x-echo-index") == str(i), resp.summary()
        assert bytes(resp.data) == data
    seen = [r for r in origin.requests if r.path.startswith("/echo?stream=") and r.header("x-echo-index")]
    last = seen[-count:]
    assert sorted(int(r.header("x-echo-index")) for r in last) == list(range(count))
    # One multiplexed upstream connection carried them all.
    assert len({r.conn_id for r in last}) == 1, sorted({r.conn_id for r in last})


def test_nghttp_many_streams_one_connection(nginx_route):
    """nghttp sends 60 requests at once on its one connection (curl 7.88's
    --parallel cannot multiplex over prior knowledge, even straight to nginx)."""
    cmd = ["nghttp", "-nv", "-m", "60", "-t", "10", "-H", f":authority: {nginx_route.authority}",
           nginx_route.url("/ok")]
    result = subprocess.run(cmd, capture_output=True, timeout=30, env=clean_env(), check=False)
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, out[-3000:] + result.stderr.decode(errors="replace")
    assert out.count("] Connected") == 1, out[-3000:]
    statuses = re.findall(r"recv \(stream_id=(\d+)\) :status: (\d+)", out)
    assert len(statuses) == 60 and {code for _, code in statuses} == {"200"}, statuses
    assert len({sid for sid, _ in statuses}) == 60
    # All 60 were open together: every request went out before the first answer came.
    first_answer = out.index("recv (stream_id=")
    assert out.count("send HEADERS frame", 0, first_answer) == 60, out[:first_answer][-2000:]


_H2LOAD_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                              r"(\d+) failed, (\d+) errored, (\d+) timeout")
_H2LOAD_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@pytest.mark.parametrize("name", ["outbound", "inbound"])
def test_h2load_bounded_run(name, proxy_a, proxy_n, nginx_h2):
    """h2load -c 4 -m 10 -n 2000: 4 connections, 10 streams each at a time."""
    if name == "outbound":
        addr, authority = proxy_a.outbound, nginx_h2.hostport
    else:
        addr, authority = proxy_n.inbound, "app.example"
    before = len(nginx_h2.access_entries())
    cmd = ["h2load", "-c", "4", "-m", "10", "-n", "2000", "-T", "10", "-N", "10",
           "-H", f":authority: {authority}", f"http://{addr[0]}:{addr[1]}/ok"]
    result = subprocess.run(cmd, capture_output=True, timeout=60, env=clean_env(), check=False)
    out = result.stdout.decode(errors="replace")
    requests = _H2LOAD_REQUESTS.search(out)
    status = _H2LOAD_STATUS.search(out)
    assert requests and status, out + result.stderr.decode(errors="replace")
    total, started, done, ok, failed, errored, timed_out = (int(x) for x in requests.groups())
    assert (total, done, ok, failed, errored, timed_out) == (2000, 2000, 2000, 0, 0, 0), out
    assert status.groups() == ("2000", "0", "0", "0"), out
    assert len(nginx_h2.wait_access_entries(before + 2000)) >= before + 2000


def _frames_of_responses(addr: tuple[str, int], authority: str, streams: int) -> list:
    """The proxy's frames answering ``streams`` GETs sent in one write, read raw until every stream ended."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    for i in range(streams):
        client.send_headers(1 + 2 * i, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/ok"),
                                        (b":authority", authority.encode())], end_stream=True)
    reader = h2frame.FrameReader(max_frame_size=1 << 20, max_header_block_size=1 << 20)
    frames: list = []
    with socket.create_connection(addr, timeout=10) as sock:
        sock.sendall(client.data_to_send())
        while sum(1 for f in frames if f.stream_id and f.flags & h2frame.FLAG_END_STREAM) < streams:
            data = sock.recv(65536)
            assert data, "the proxy closed the connection"
            client.receive_data(data)  # its SETTINGS acknowledged, as a real client does
            sock.sendall(client.data_to_send())
            reader.feed(data)
            while (frame := reader.next_frame()) is not h2frame.NEED_MORE:
                frames.append(frame)
    return frames


def test_responses_leave_in_few_frames(nginx_route):
    """Each response is HEADERS then DATA carrying END_STREAM (no empty DATA frame to end it), and the later
    heads name the date by index (one octet) instead of a ~24-octet literal: less for the client to parse."""
    frames = [f for f in _frames_of_responses(nginx_route.addr, nginx_route.authority, 8) if f.stream_id]
    for sid in range(1, 17, 2):
        mine = [(f.type, f.flags & h2frame.FLAG_END_STREAM, f.data) for f in frames if f.stream_id == sid]
        assert [kind for kind, _, _ in mine] == [h2frame.HEADERS, h2frame.DATA], mine
        assert mine[1][1:] == (h2frame.FLAG_END_STREAM, b"ok\n"), mine
    heads = [f.data for f in frames if f.type == h2frame.HEADERS]
    # nginx's five-field head: :status, server, date, content-type, then content-length sent as a literal.
    assert min(len(block) for block in heads[1:]) <= 8, heads


# ---------------------------------------------------------------------------
# two proxies in a row


def test_two_proxies_preserve_headers_bodies_trailers(proxy_a, proxy_b, origin):
    data = det_bytes(500_000, 13)
    fields = [("x-trace", "abc"), ("x-multi", "1"), ("x-multi", "2"), ("x-echo-a", "A"),
              ("content-type", "application/octet-stream")]
    with H2Client(proxy_a.outbound) as client:
        resp = client.exchange("PUT", "/echo?trailers=1&two=1", proxy_b.inbound_hostport, body=data,
                               headers=fields, trailers=[("x-req-trailer", "t")], timeout=20)
    assert resp.status == 200 and resp.ended, resp.summary()
    assert bytes(resp.data) == data
    assert resp.header("x-echo-a") == "A" and resp.header(PROXY_ERROR) is None
    assert resp.trailers == [(b"x-body-sha256", sha256(data).encode()), (b"x-trailer", b"done")]
    req = [r for r in origin.requests if r.path == "/echo?trailers=1&two=1"][-1]
    assert req.header(":method") == "PUT" and req.header(":authority") == proxy_b.inbound_hostport
    got = [(n.decode(), v.decode()) for n, v in req.headers if not n.startswith(b":")]
    assert [f for f in got if f[0] in {n for n, _ in fields}] == fields, got
    assert bytes(req.body) == data and req.trailers == [(b"x-req-trailer", b"t")]


def test_two_proxies_large_bodies_both_ways(proxy_a, proxy_b):
    data = det_bytes(4_000_000, 14)
    with H2Client(proxy_a.outbound, window=1 << 20) as client:
        resp = client.exchange("POST", "/echo", proxy_b.inbound_hostport, body=data, timeout=10)
    assert resp.status == 200 and resp.ended, resp.summary()
    assert resp.header("x-body-sha256") == sha256(data)
    assert sha256(bytes(resp.data)) == sha256(data)


# ---------------------------------------------------------------------------
# metrics and errors the proxy makes


def test_metrics_count_each_request(proxy_a, origin):
    closed = f"127.0.0.1:{free_port()}"
    before = proxy_a.metrics()
    with H2Client(proxy_a.outbound) as client:
        paths = ["/ok"] * 5 + ["/status/404", "/status/503"]
        sids = [client.request("GET", p, origin.hostport) for p in paths]
        sids.append(client.request("GET", "/ok", closed))
        statuses = [client.response(sid).status for sid in sids]
    with H2Client(proxy_a.inbound) as client:
        statuses += [client.exchange("GET", p, "app.example").status for p in ("/ok", "/status/404", "/status/500")]
    assert statuses == [200] * 5 + [404, 503, 502, 200, 404, 500]
    after = proxy_a.metrics()
    out = dict(direction="outbound")
    assert delta(before, after, "request_total", **out) == 8
    assert delta(before, after, "response_total", status_code="200", classification="success", **out) == 5
    assert delta(before, after, "response_total", status_code="404", **out) == 1
    assert delta(before, after, "response_total", status_code="503", classification="failure", **out) == 1
    assert delta(before, after, "response_total", status_code="502", classification="failure", **out) == 1
    assert delta(before, after, "response_total", **out) == 8
    inb = dict(direction="inbound")
    assert delta(before, after, "request_total", **inb) == 3
    assert delta(before, after, "response_total", status_code="200", **inb) == 1
    assert delta(before, after, "response_total", status_code="500", classification="failure", **inb) == 1
    assert delta(before, after, "response_total", **inb) == 3


def test_target_down_is_502(proxy_a, make_proxy):
    closed = f"127.0.0.1:{free_port()}"
    with H2Client(proxy_a.outbound) as client:
        resp = client.exchange("GET", "/", closed)
        assert resp.status == 502 and resp.header(PROXY_ERROR), resp.summary()
        # The connection is still good for the next request.
        assert client.exchange("GET", "/", closed).status == 502
    out = _ok(curl("--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "-H", f"Host: {closed}",
                   f"http://{proxy_a.outbound_hostport}/"))
    assert out.lower().startswith(b"http/2 502") and PROXY_ERROR.encode() in out.lower(), out
    inbound_down = make_proxy(env={"MESHPROXY_INBOUND_DEFAULT_TARGET": closed})
    with H2Client(inbound_down.inbound) as client:
        resp = client.exchange("GET", "/", "app.example")
    assert resp.status == 502 and resp.header(PROXY_ERROR), resp.summary()


def test_connect_timeout_is_504(timeout_proxy):
    stuck = StuckListener()
    try:
        with H2Client(timeout_proxy.outbound) as client:
            start = time.monotonic()
            resp = client.exchange("GET", "/", stuck.hostport, timeout=8)
            elapsed = time.monotonic() - start
    finally:
        stuck.stop()
    assert resp.status == 504 and resp.header(PROXY_ERROR), resp.summary()
    assert 0.4 <= elapsed < 4.0, f"504 after {elapsed:.2f}s with a 0.5s connect timeout"


def test_response_timeout_is_504(timeout_proxy, origin):
    """MESHPROXY_RESPONSE_TIMEOUT (time to the response head) must bound an HTTP/2 request too."""
    with H2Client(timeout_proxy.outbound) as client:
        start = time.monotonic()
        sid = client.request("GET", "/never?timeout=1", origin.hostport)
        try:
            resp = client.head(sid, timeout=5)
        except TimeoutError:
            pytest.fail("no response 5 s after the request; a 0.5 s response timeout should have answered 504")
        elapsed = time.monotonic() - start
    assert resp.status == 504 and resp.header(PROXY_ERROR), resp.summary()
    assert 0.4 <= elapsed < 4.0, f"504 after {elapsed:.2f}s with a 0.5s response timeout"


# ---------------------------------------------------------------------------
# resets, refusals, GOAWAY


def test_upstream_reset_after_head_is_relayed(origin_route):
    with H2Client(origin_route.addr) as client:
        resp = client.exchange("GET", "/reset-after?code=2", origin_route.authority)
    assert resp.status == 200 and resp.reset_code == INTERNAL_ERROR, resp.summary()


def test_upstream_reset_before_head_is_502(origin_route):
    with H2Client(origin_route.addr) as client:
        resp = client.exchange("GET", "/reset-before?code=2", origin_route.authority)
    assert resp.status == 502 and resp.header(PROXY_ERROR), resp.summary()


def test_client_reset_reaches_upstream(origin_route, origin):
    path = f"/hold?route={origin_route.name}&t={time.monotonic_ns()}"
    with H2Client(origin_route.addr) as client:
        sid = client.request("POST", path, origin_route.authority, body=b"partial", end=False)
        assert origin.wait_for(lambda: any(r.path == path and r.body == b"partial" for r in origin.requests))
        client.reset(sid, CANCEL)
        req = origin.wait_reset(path, timeout=5)
        assert req is not None, "the origin never saw the client's reset"
        assert req.reset_code == CANCEL
        # The connection keeps working.
        assert client.exchange("GET", "/ok", origin_route.authority).status == 200


def test_refused_stream_is_retried_once(origin_route, origin):
    path = f"/refuse-once?key={origin_route.name}-{time.monotonic_ns()}"
    with H2Client(origin_route.addr) as client:
        resp = client.exchange("GET", path, origin_route.authority)
    assert resp.status == 200 and bytes(resp.data) == b"second try", resp.summary()
    assert len([r for r in origin.requests if r.path == path]) == 2


def test_refused_stream_whose_body_was_partly_sent_is_not_sent_again_incomplete(origin_route, origin):
    """Part of the body went to the refused stream and was not kept: sending the
    rest alone would forward a truncated request, so the client gets an error."""
    path = f"/refuse-after-data?key={origin_route.name}-{time.monotonic_ns()}"
    with H2Client(origin_route.addr) as client:
        sid = client.request("POST", path, origin_route.authority, body=b"first-half-", end=False)
        assert origin.wait_for(lambda: any(r.path == path and r.body for r in origin.requests))
        time.sleep(0.3)  # the proxy hears of the refusal before the rest of the body comes
        client.send(sid, b"second-half", end=True)
        resp = client.response(sid)
    assert resp.status == 502, resp.summary()
    tries = [r for r in origin.requests if r.path == path]
    assert len(tries) == 1, [r.body for r in tries]


def test_upstream_goaway_loses_no_request(proxy_a):
    """The upstream says GOAWAY every 40 answers; streams it refused are
    sent again on a new connection and every request gets its answer."""
    server = H2Origin(name="goaway-origin", goaway_after=40)
    try:
        statuses = []
        with H2Client(proxy_a.outbound) as client:
            for _ in range(10):
                sids = [client.request("GET", f"/name?i={i}", server.hostport) for i in range(20)]
                statuses += [client.response(sid, timeout=10).status for sid in sids]
        assert statuses == [200] * 200
        assert server.count("/name") == 200
        assert server.accept_count >= 4, server.accept_count
        assert not server.errors, server.errors
    finally:
        server.stop()


def test_failed_uploads_do_not_stall_the_connection(proxy_a, origin):
    """Request body the proxy buffered for a request it answered with 502
    must still be acknowledged, or the client's connection window leaks."""
    closed = f"127.0.0.1:{free_port()}"
    data = det_bytes(600_000, 15)
    with H2Client(proxy_a.outbound) as client:
        for _ in range(3):
            resp = client.exchange("POST", "/upload", closed, body=data, timeout=4)
            assert resp.status == 502, resp.summary()
        resp = client.exchange("POST", "/echo", origin.hostport, body=data, timeout=4)
    assert resp.status == 200 and bytes(resp.data) == data


# ---------------------------------------------------------------------------
# per-request balancing


def _write_endpoints(path: Path, service: str, ports: list[int]) -> None:
    lines = ["services:", f"  {service}:", "    endpoints:"]
    for port in ports:
        lines += [f"      - address: 127.0.0.1:{port}", "        protocol: h2"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def test_one_connection_balanced_per_request(make_proxy, tmp_path):
    backends = [H2Origin(name=f"backend-{i}") for i in range(3)]
    try:
        endpoints = tmp_path / "endpoints.yaml"
        _write_endpoints(endpoints, "web.h2.test:80", [b.port for b in backends])
        mp = make_proxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}"})
        names = []
        with H2Client(mp.outbound) as client:
            for _ in range(30):
                sids = [client.request("GET", "/name", "web.h2.test:80") for _ in range(10)]
                for sid in sids:
                    resp = client.response(sid)
                    assert resp.status == 200, resp.summary()
                    names.append(bytes(resp.data).decode())
        counts = {b.name: names.count(b.name) for b in backends}
        assert sum(counts.values()) == 300, counts
        assert all(n >= 30 for n in counts.values()), f"300 requests of one connection spread as {counts}"
        assert [b.count("/name") for b in backends] == [counts[b.name] for b in backends]
    finally:
        for b in backends:
            b.stop()
