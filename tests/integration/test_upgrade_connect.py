"""Connections that leave HTTP: WebSocket upgrades relayed raw after 101,
and CONNECT tunnels (200, then raw bytes both ways, half-close included)."""

from __future__ import annotations

import hashlib
import socket

import pytest

from helpers import wire
from helpers.checks import assert_proxy_error
from helpers.clients import RawClient, curl, tcp_exchange
from helpers.ports import free_port
from helpers.servers import TcpEchoServer, det_bytes

pytestmark = pytest.mark.timeout(60)


def _ws_connect(proxy, uri: str, **kwargs):
    from websockets.sync.client import connect

    sock = socket.create_connection(proxy.outbound, timeout=5)
    return connect(uri, sock=sock, open_timeout=5, close_timeout=5, max_size=16 << 20, **kwargs)


def test_websocket_echo_through_proxy(proxy, ws_echo):
    with _ws_connect(proxy, f"ws://{ws_echo.hostport}/chat") as ws:
        ws.send("hello through the mesh")
        assert ws.recv(timeout=5) == "hello through the mesh"
        for i in range(20):
            ws.send(f"message {i}")
            assert ws.recv(timeout=5) == f"message {i}"
        big = det_bytes(1_500_000, 21)
        ws.send(big)
        assert ws.recv(timeout=10) == big
    names = {name.lower() for name, _ in ws_echo.request_heads[-1]}
    assert "upgrade" in names and "sec-websocket-key" in names


def test_websocket_via_dst_override(proxy, ws_echo):
    with _ws_connect(proxy, "ws://chat.example.test/room",
                     additional_headers={"l5d-dst-override": ws_echo.hostport}) as ws:
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"
    host = dict((n.lower(), v) for n, v in ws_echo.request_heads[-1])["host"]
    assert host == "chat.example.test"


def test_upgrade_declined_stays_http(proxy, upstream):
    """The upstream answers an Upgrade request with a plain 200: the
    connection stays HTTP and keeps working."""
    headers = [("Host", upstream.hostport), ("Connection", "Upgrade"), ("Upgrade", "example/1")]
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("POST", "/echo", headers, b"not upgraded")
        assert resp.status == 200 and resp.data == b"not upgraded"
        resp = client.exchange("POST", "/echo", [("Host", upstream.hostport)], b"still http")
        assert resp.status == 200 and resp.data == b"still http"


def _connect_tunnel(proxy, target: str, extra: bytes = b"") -> RawClient:
    client = RawClient(proxy.outbound)
    client.send(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode() + extra)
    return client


def test_connect_tunnel_to_tcp_echo(proxy, tcp_echo):
    client = _connect_tunnel(proxy, tcp_echo.hostport)
    with client:
        resp = client.response(timeout=5, method="CONNECT")
        assert resp.status == 200, (resp.status, resp.headers)
        client.send(b"ping\n")
        assert client.read_exact(5) == b"ping\n"


def test_connect_tunnel_multi_megabyte_with_half_close(proxy):
    with TcpEchoServer(name="tunnel-echo") as echo:
        data = det_bytes(4 * 1024 * 1024 + 3, 31)
        client = _connect_tunnel(proxy, echo.hostport)
        with client:
            resp = wire.read_response(client.stream, wire.deadline_in(5), "CONNECT")
            assert resp.status == 200
            leftover = bytes(client.stream.buf)
            got = tcp_exchange(client.sock, data, timeout=30, preread=leftover)
        assert echo.eof_seen.is_set(), "the client's half-close did not reach the target"
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data + b"BYE\n").hexdigest()
        assert echo.conns[0].received == data


def test_connect_bytes_sent_with_the_request(proxy):
    """A client that writes tunnel bytes right behind the CONNECT head."""
    with TcpEchoServer(name="eager-echo") as echo:
        client = _connect_tunnel(proxy, echo.hostport, extra=b"early bytes")
        with client:
            resp = client.response(timeout=5, method="CONNECT")
            assert resp.status == 200
            assert client.read_exact(len(b"early bytes")) == b"early bytes"


def test_connect_refused_502(proxy):
    target = f"127.0.0.1:{free_port()}"
    with _connect_tunnel(proxy, target) as client:
        resp = client.response(timeout=5, method="CONNECT")
        assert_proxy_error(resp, 502)


def test_curl_proxytunnel_to_nginx(proxy, nginx, tmp_path):
    out = tmp_path / "large"
    res = curl("-p", "-x", proxy.proxy_url, "-o", str(out), "-w", "%{http_code}",
               f"http://{nginx.hostport}/static/large.bin", timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"200"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == nginx.large_sha256
