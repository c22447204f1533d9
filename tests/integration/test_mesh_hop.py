"""The meshed hop: HTTP/1 between two proxies travels as streams of one multiplexed HTTP/2 connection.

Proxy A (outbound) learns from its endpoints file that the service's endpoint
is meshed (it has a ``proxy``: B's inbound listener). A sends each HTTP/1
request as an HTTP/2 stream with ``l5d-orig-proto``, after a transport header
naming the app port; B restores HTTP/1 for the app. The app and the client
are plain HTTP/1 peers and must not notice.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream

    tmp: Path = tmp_path_factory.mktemp("mesh")
    app = HttpUpstream(name="mesh-app")
    # B has no identity: it obeys A's transport header only from the cluster
    # networks, and this plaintext hop is on loopback.
    b = MeshProxy(env={"MESHPROXY_LOG_LEVEL": "info", "MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}, name="proxy-B",
                  log_path=tmp / "b.log")
    b.start()
    endpoints = tmp / "endpoints.yaml"
    endpoints.write_text(
        "services:\n"
        "  web.mesh:80:\n"
        "    endpoints:\n"
        f"      - address: {app.hostport}\n"
        f"        proxy: {b.inbound_hostport}\n"
        "        protocol: http1\n"
    )
    a = MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}"}, name="proxy-A", log_path=tmp / "a.log")
    a.start()
    try:
        yield a, b, app
    finally:
        a.close()
        b.close()
        app.stop()


def _request(proxy, method, path, body=None, headers=None, version=11):
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=20)
    if version == 10:
        conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    conn.request(method, path, body=body, headers={"Host": "web.mesh:80", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def test_request_crosses_both_proxies_and_app_sees_plain_http1(mesh):
    a, b, app = mesh
    before_a, before_b = a.metrics(), b.metrics()
    resp, data = _request(a, "GET", "/echo?x=1", headers={"X-Custom": "Value 1"})
    assert resp.status == 200
    req = app.requests[-1]
    assert req.head.raw.startswith(b"GET /echo?x=1 HTTP/1.1\r\n")
    names = {n.lower() for n, _ in req.head.headers}
    assert b"l5d-orig-proto" not in names, "the hop's own header reached the app"
    assert (b"x-custom", b"Value 1") in [(n.lower(), v) for n, v in req.head.headers]
    assert (b"host", b"web.mesh:80") in [(n.lower(), v) for n, v in req.head.headers]
    after_a, after_b = a.metrics(), b.metrics()
    assert after_a.get("request_total", direction="outbound") == before_a.get("request_total", direction="outbound") + 1
    assert after_b.get("request_total", direction="inbound") == before_b.get("request_total", direction="inbound") + 1


@pytest.mark.parametrize("size", [0, 1, 70_000, 3_000_000])
def test_bodies_are_byte_identical_both_ways(mesh, size):
    a, _, _ = mesh
    body = bytes((i * 7 + 3) % 251 for i in range(size))
    resp, data = _request(a, "POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 200
    assert resp.getheader("X-Body-Sha256") == _sha(body)
    assert data == body


def test_chunked_request_and_chunked_response_with_trailers(mesh):
    a, _, app = mesh
    pieces = [b"alpha ", b"beta " * 1000, b"gamma"]
    sock = socket.create_connection(a.outbound, timeout=10)
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: web.mesh:80\r\nTransfer-Encoding: chunked\r\n\r\n" + wire)
    got = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < sum(map(len, pieces)):
        chunk = sock.recv(65536)
        assert chunk and time.monotonic() < deadline, got[:300]
        got += chunk
    sock.close()
    head, body = got.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"".join(pieces)
    resp, data = _request(a, "GET", "/chunked")
    assert resp.status == 200 and data == b"hello chunked world"


def test_one_http2_connection_carries_many_client_connections(mesh):
    a, b, _ = mesh
    before = b.metrics().get("tcp_open_total", direction="inbound", peer="src")
    for i in range(12):  # twelve client connections, one request each
        resp, _ = _request(a, "GET", f"/echo?i={i}")
        assert resp.status == 200
    after = b.metrics().get("tcp_open_total", direction="inbound", peer="src")
    assert after - before <= 1, "requests between the proxies were not multiplexed"


def test_http10_client_and_absolute_form_survive_the_hop(mesh):
    a, _, app = mesh
    resp, data = _request(a, "GET", "/echo?old=1", version=10)
    assert resp.status == 200 and resp.version in (10, 11)
    assert app.requests[-1].head.raw.startswith(b"GET /echo?old=1 HTTP/1.0\r\n")
    sock = socket.create_connection(a.outbound, timeout=10)
    sock.sendall(b"GET http://web.mesh:80/echo?abs=1 HTTP/1.1\r\nHost: web.mesh:80\r\nConnection: close\r\n\r\n")
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sock.close()
    assert got.startswith(b"HTTP/1.1 200")
    # The app sees the request as the client sent it: absolute form restored.
    assert app.requests[-1].head.raw.startswith(b"GET http://web.mesh:80/echo?abs=1 HTTP/1.1\r\n")


def test_headers_only_and_status_codes_cross_the_hop(mesh):
    a, _, _ = mesh
    for status in (204, 404, 503):
        resp, data = _request(a, "GET", f"/status/{status}")
        assert resp.status == status
    resp, data = _request(a, "HEAD", "/echo")
    assert resp.status == 200 and data == b""


def test_transport_header_names_the_app_port_on_the_inbound_side(mesh):
    """A client that speaks the header by hand reaches the port it names (no default target is set on B)."""
    from proxy.protocol import transport_header

    _, b, app = mesh
    sock = socket.create_connection(b.inbound, timeout=10)
    port = int(app.hostport.rsplit(":", 1)[1])
    # An opaque session: the HTTP/1 bytes after the header go to the app as they are.
    sock.sendall(transport_header.encode(port, transport_header.PROTO_OPAQUE, "test")
                 + b"GET /echo?raw=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sock.close()
    assert got.startswith(b"HTTP/1.1 200")
    assert app.requests[-1].head.raw.startswith(b"GET /echo?raw=1 HTTP/1.1\r\n")


def test_fields_named_by_connection_do_not_cross_the_hop(mesh):
    """RFC 9110 7.6.1: a field the client names in Connection is for the next hop only."""
    a, _, app = mesh
    resp, _ = _request(a, "GET", "/echo?conn-tokens=1", headers={"Connection": "x-private", "X-Private": "secret",
                                                               "X-Public": "kept"})
    assert resp.status == 200
    names = {n.lower() for n, _ in app.requests[-1].head.headers}
    assert b"x-private" not in names and b"connection" not in names
    assert b"x-public" in names


def test_a_response_head_is_not_held_back_waiting_for_its_body(mesh):
    # Proxy A sends a head together with the body bytes read with it (one write); a head
    # that arrived alone must still go out at once, not when the body comes 1.5 s later.
    a, _, _ = mesh
    with socket.create_connection(a.outbound, timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /head-first?delay=1.5 HTTP/1.1\r\nHost: web.mesh:80\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        head_at = time.monotonic() - start
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < 4:
            body += sock.recv(4096)
        body_at = time.monotonic() - start
    assert head.startswith(b"HTTP/1.1 200") and body == b"body"
    assert head_at < 1.0 <= body_at, (head_at, body_at)


def test_fields_cross_the_hop_lower_cased_trimmed_and_in_order(mesh):
    """The HTTP/1 -> HTTP/2 -> HTTP/1 bridge: names lower-cased, surrounding whitespace gone, order and values kept."""
    a, _, app = mesh
    sock = socket.create_connection(a.outbound, timeout=10)
    sock.sendall(b"POST /echo?fields=1 HTTP/1.1\r\nHost: web.mesh:80\r\nX-Mixed-CASE:  v1 \t\r\nx-empty:\r\n"
                 b"X-Colons: a:b: c\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sock.close()
    assert got.startswith(b"HTTP/1.1 200")
    raw = app.requests[-1].head.raw
    assert raw.startswith(b"POST /echo?fields=1 HTTP/1.1\r\nhost: web.mesh:80\r\nx-mixed-case: v1\r\nx-empty: \r\n"
                          b"x-colons: a:b: c\r\ncontent-length: 3\r\n"), raw
    assert raw.endswith(b"\r\n\r\n") and b"connection" not in raw.lower()
