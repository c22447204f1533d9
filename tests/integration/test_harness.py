"""The test parts themselves, checked without a proxy in between.

When a whole-proxy test fails, these say whether the upstream, the client or
the proxy is to blame: every helper behaves as documented when talked to
directly.
"""

from __future__ import annotations

import hashlib
import socket
import time

import pytest

from helpers import metrics as metrics_mod
from helpers import wire
from helpers.clients import RawClient, curl, tcp_exchange
from helpers.nginx import Nginx
from helpers.servers import StuckListener, TcpEchoServer, WsEchoServer, det_bytes, sha256
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def origin():
    server = HttpUpstream(name="origin")
    yield server
    server.stop()


def test_echo_sees_exact_bytes_and_keeps_alive(origin):
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nX-CaSe: 1\r\nContent-Length: 5\r\n\r\n"
    with RawClient(origin.address) as client:
        client.send(head + b"hello")
        first = client.final()
        client.request("GET", "/echo", [("Host", "x")])
        second = client.final()
    assert first.status == 200 and first.data == b"hello"
    assert second.header("X-Index") == "1"
    assert origin.requests[0].head.raw == head
    assert origin.accept_count == 1


def test_chunked_both_ways_with_trailers(origin):
    body = wire.chunked_bytes([b"abc", b"defgh"], [("X-T", "v")])
    with RawClient(origin.address) as client:
        resp = client.exchange("POST", "/echo", [("Host", "x"), ("Transfer-Encoding", "chunked")], body)
        assert resp.data == b"abcdefgh"
        assert resp.header("X-Trailers") == "X-T=v"
        resp = client.exchange("GET", "/chunked", [("Host", "x")])
        assert resp.body.chunked and resp.data == b"hello chunked world"
        assert (b"X-Checksum", sha256(b"hello chunked world").encode()) in resp.body.trailers


def test_read_until_close_and_bytes(origin):
    with RawClient(origin.address) as client:
        resp = client.exchange("GET", "/bytes/100000?chunked=1", [("Host", "x")])
        assert resp.body.chunked and resp.data == det_bytes(100000)
        resp = client.exchange("GET", "/close?n=3000", [("Host", "x")])
        assert resp.body.until_close and resp.data == det_bytes(3000)


def test_continue_endpoint(origin):
    with RawClient(origin.address) as client:
        client.send(b"POST /continue HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        interim = client.response()
        assert interim.status == 100
        client.send(b"data")
        assert client.final().data == b"data"


def test_never_endpoint_and_silent_server(origin):
    with RawClient(origin.address) as client:
        client.request("GET", "/never", [("Host", "x")])
        assert origin.wait_requests(1)
        with pytest.raises(TimeoutError):
            client.response(timeout=0.3)


def test_http10_request_closes_late_with_linger():
    server = HttpUpstream(linger=0.4, name="linger")
    try:
        with RawClient(server.address) as client:
            client.request("GET", "/echo", [("Host", "x")], version="HTTP/1.0")
            assert client.final().status == 200
            start = time.monotonic()
            assert client.closed_within(2)
            assert time.monotonic() - start >= 0.3
    finally:
        server.stop()


def test_flood_and_sink(origin):
    with RawClient(origin.address) as client:
        client.request("GET", "/flood?n=3000000", [("Host", "x")])
        client.stream.read_until(b"\r\n\r\n", wire.deadline_in(5))
        client.discard(3_000_000)
        origin.release.set()
        client.send(wire.request_bytes("POST", "/sink", [("Host", "x")], bytes(500_000)))
        assert client.final().data == b"500000"
    assert origin.flood_sent == 3_000_000


def test_tcp_echo_half_close():
    with TcpEchoServer(banner=b"HI\n") as server:
        data = det_bytes(3_000_000)
        sock = socket.create_connection(server.address, timeout=5)
        with sock:
            got = tcp_exchange(sock, data)
        assert got == b"HI\n" + data + b"BYE\n"


def test_ws_echo():
    from websockets.sync.client import connect

    server = WsEchoServer()
    try:
        with connect(f"ws://{server.hostport}/", open_timeout=5) as ws:
            ws.send("text")
            assert ws.recv(timeout=5) == "text"
    finally:
        server.stop()


def test_stuck_listener_connect_hangs():
    stuck = StuckListener()
    try:
        sock = socket.socket()
        sock.settimeout(0.3)
        start = time.monotonic()
        with pytest.raises(OSError):
            sock.connect(stuck.address)
        assert time.monotonic() - start >= 0.25
        sock.close()
    finally:
        stuck.stop()


def test_nginx_fixture(tmp_path):
    server = Nginx(tmp_path)
    server.start()
    try:
        out = tmp_path / "large.out"
        res = curl("-o", str(out), "-w", "%{http_code}", f"http://{server.hostport}/static/large.bin")
        assert res.stdout == b"200", res.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == server.large_sha256
        res = curl(f"http://{server.hostport}/ok", f"http://{server.hostport}/static/hello.txt")
        assert res.stdout == b"ok\n" + server.hello
        entries = server.wait_access_entries(3)
        assert len({e[0] for e in entries[1:]}) == 1  # curl reused its connection
    finally:
        server.stop()


def test_metrics_parser():
    text = (
        "# TYPE request_total counter\n"
        'request_total{direction="outbound",authority="a:1"} 3\n'
        'request_total{direction="inbound"} 2\n'
        'response_latency_ms_bucket{direction="outbound",le="+Inf"} 5\n'
        'odd{v="a\\"b,c"} 1.5e3\n'
    )
    parsed = metrics_mod.parse(text)
    assert parsed.get("request_total", direction="outbound") == 3
    assert parsed.get("request_total") == 5
    assert parsed.get("response_latency_ms_bucket", le="+Inf") == 5
    assert parsed.series("odd")[0][0] == {"v": 'a"b,c'}
    assert parsed.types["request_total"] == "counter"
    assert parsed.to_dict()['request_total{authority="a:1",direction="outbound"}'] == 3
