"""Opaque TCP through the inbound listener: bytes that are not HTTP, a
client that sends nothing within the detect timeout, and opaque ports.

The inbound listener sends connections addressed to itself to
MESHPROXY_INBOUND_DEFAULT_TARGET, here a TCP echo server.
"""

from __future__ import annotations

import hashlib
import socket
import time

import pytest

from helpers.checks import delta
from helpers.clients import RawClient, tcp_exchange
from helpers.servers import TcpEchoServer, det_bytes

pytestmark = pytest.mark.timeout(60)

DETECT = 0.5


@pytest.fixture(scope="module")
def echo():
    server = TcpEchoServer(name="opaque-echo")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def opaque_proxy(echo, tmp_path_factory):
    from helpers.meshproxy import MeshProxy

    mp = MeshProxy(
        env={"MESHPROXY_INBOUND_DEFAULT_TARGET": echo.hostport, "MESHPROXY_DETECT_TIMEOUT": f"{DETECT}s"},
        name="opaque-proxy",
        log_path=tmp_path_factory.mktemp("opaque") / "stderr.log",
    )
    try:
        mp.start()
        yield mp
    finally:
        mp.close()


def test_non_http_bytes_relayed(opaque_proxy, echo):
    payload = b"\x00\x01\x02 not http at all\n"
    with RawClient(opaque_proxy.inbound) as client:
        client.send(payload)
        assert client.read_exact(len(payload)) == payload
        client.send(b"more")
        assert client.read_exact(4) == b"more"


def test_multi_megabyte_byte_exact_with_half_close(opaque_proxy, echo):
    data = b"\x00" + det_bytes(4 * 1024 * 1024, 41)
    before = opaque_proxy.metrics()
    accepted = echo.accept_count
    echo.eof_seen.clear()
    with socket.create_connection(opaque_proxy.inbound, timeout=5) as sock:
        got = tcp_exchange(sock, data, timeout=30)
    assert echo.eof_seen.is_set(), "the client's half-close did not reach the target"
    assert len(got) == len(data) + 4
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data + b"BYE\n").hexdigest()
    assert echo.accept_count == accepted + 1
    assert echo.conns[-1].received == data
    after = opaque_proxy.metrics()
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="src") == 1
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="dst") == 1
    # Bytes read from both peers (client data, echoed data) and written to both.
    assert delta(before, after, "tcp_read_bytes_total", direction="inbound") >= 2 * len(data)
    assert delta(before, after, "tcp_write_bytes_total", direction="inbound") >= 2 * len(data)


def test_opaque_byte_counters_per_peer(opaque_proxy, echo):
    """Bytes read from the client (src) and written to the target (dst) are
    counted, the first ones (read while detecting) included."""
    data = b"\x00" + b"a" * 999
    before = opaque_proxy.metrics()
    with socket.create_connection(opaque_proxy.inbound, timeout=5) as sock:
        got = tcp_exchange(sock, data, timeout=10)
    assert got == data + b"BYE\n"
    time.sleep(0.3)
    after = opaque_proxy.metrics()
    counts = {
        (name, peer): delta(before, after, name, direction="inbound", peer=peer)
        for name in ("tcp_read_bytes_total", "tcp_write_bytes_total")
        for peer in ("src", "dst")
    }
    assert counts[("tcp_read_bytes_total", "src")] >= len(data), counts
    assert counts[("tcp_write_bytes_total", "dst")] >= len(data), counts
    assert counts[("tcp_read_bytes_total", "dst")] >= len(data) + 4, counts
    assert counts[("tcp_write_bytes_total", "src")] >= len(data) + 4, counts


def test_half_close_both_directions(opaque_proxy, echo):
    """The client half-closes and can still read; the target's half-close
    comes back as EOF."""
    echo.eof_seen.clear()
    with RawClient(opaque_proxy.inbound) as client:
        client.send(b"\x00ping")
        assert client.read_exact(5) == b"\x00ping"
        client.shutdown_write()
        assert echo.eof_seen.wait(5), "FIN from the client did not reach the target"
        assert client.read_exact(4) == b"BYE\n"
        assert client.closed_within(5), "FIN from the target did not reach the client"


def test_http_after_a_silent_detect_timeout_is_still_parsed_as_http(make_proxy, upstream):
    """Waiting out the detect timeout does not turn a connection into a raw
    relay: HTTP sent afterwards is parsed (and proxied) as HTTP, so nothing
    unparsed can be smuggled to the app by keeping quiet first."""
    mp = make_proxy({"MESHPROXY_INBOUND_DEFAULT_TARGET": upstream.hostport,
                     "MESHPROXY_DETECT_TIMEOUT": f"{DETECT}s"})
    seen = len(upstream.requests)
    with RawClient(mp.inbound) as client:
        time.sleep(DETECT + 0.7)
        resp = client.exchange("GET", "/late", [("Host", "example")])
        assert resp.status == 200
        smuggled = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        client.send(smuggled)
        refused = client.final(timeout=5, method="POST")
        assert refused.status == 400 and refused.header("l5d-proxy-error")
    assert [r.head.start_line for r in upstream.requests[seen:]] == [b"GET /late HTTP/1.1"]


def test_server_first_protocol_needs_no_detect_timeout(make_proxy):
    """A server that speaks first is heard at once (the server-first probe):
    no opaque-port entry, no detect timeout to wait out."""
    with TcpEchoServer(banner=b"220 banner from the server\r\n", name="banner") as server:
        mp = make_proxy({"MESHPROXY_INBOUND_DEFAULT_TARGET": server.hostport, "MESHPROXY_DETECT_TIMEOUT": "10s"})
        with RawClient(mp.inbound) as client:
            start = time.monotonic()
            banner = client.read_exact(28, timeout=5)
            elapsed = time.monotonic() - start
            assert banner == b"220 banner from the server\r\n"
            assert elapsed < 1.0, f"banner after {elapsed:.2f}s"
            client.send(b"HELO x\r\n")
            assert client.read_exact(8) == b"HELO x\r\n"


def test_opaque_port_skips_detection(make_proxy):
    """The target port is in MESHPROXY_OPAQUE_PORTS: HTTP bytes are relayed
    as they are and a server-first banner arrives without waiting for the
    (long) detect timeout."""
    with TcpEchoServer(banner=b"HELLO\n", name="opaque-port") as server:
        mp = make_proxy({"MESHPROXY_INBOUND_DEFAULT_TARGET": server.hostport,
                         "MESHPROXY_DETECT_TIMEOUT": "10s",
                         "MESHPROXY_OPAQUE_PORTS": f"25,{server.port}"})
        request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
        with RawClient(mp.inbound) as client:
            start = time.monotonic()
            assert client.read_exact(6, timeout=5) == b"HELLO\n"
            assert time.monotonic() - start < 3.0
            client.send(request)
            assert client.read_exact(len(request)) == request
        assert server.conns[0].received == request


def test_opaque_port_range(make_proxy):
    with TcpEchoServer(bye=None, name="range") as server:
        mp = make_proxy({"MESHPROXY_INBOUND_DEFAULT_TARGET": server.hostport,
                         "MESHPROXY_OPAQUE_PORTS": f"{server.port - 1}-{server.port + 1}"})
        request = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        with RawClient(mp.inbound) as client:
            client.send(request)
            assert client.read_exact(len(request)) == request
