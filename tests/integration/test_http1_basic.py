"""HTTP/1.1 through the outbound listener: routing, exact forwarding of
heads, real clients (requests, curl), bodyless responses, HTTP/1.0 clients
and nginx as the upstream. Bodies are in test_http1_bodies.

One proxy and one upstream for the module; each test checks what the
client got and what the upstream received.
"""

from __future__ import annotations

import hashlib

import pytest

from helpers.checks import assert_not_proxy_error
from helpers.clients import RawClient, curl, session
from helpers.clients import host_header as host
from helpers.servers import det_bytes, sha256
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(60)


# -- routing -------------------------------------------------------------------


def test_get_routed_by_host_header(proxy, fresh_upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/echo?x=1", host(fresh_upstream))
    assert resp.status == 200
    assert resp.header("X-Target") == "/echo?x=1"
    assert_not_proxy_error(resp)
    req = fresh_upstream.request_number(1)
    assert req.head.get("Host") == fresh_upstream.hostport.encode()


def test_request_head_forwarded_byte_for_byte(proxy, fresh_upstream):
    head = (
        "GET /echo?q=1&r=%20 HTTP/1.1\r\n"
        f"Host: {fresh_upstream.hostport}\r\n"
        "user-agent: raw-test/1.0\r\n"
        "X-MiXeD-CaSe: One Two\r\n"
        "x-dup: a\r\n"
        "Accept: */*\r\n"
        "x-dup: b\r\n"
        "ACCEPT-ENCODING: identity\r\n"
        "x-empty:\r\n"
        "\r\n"
    ).encode()
    with RawClient(proxy.outbound) as client:
        client.send(head)
        assert client.final().status == 200
    assert fresh_upstream.request_number(1).head.raw == head


def test_hop_by_hop_fields_removed_rest_kept_in_order(proxy, fresh_upstream):
    lines = [
        "POST /echo HTTP/1.1",
        f"Host: {fresh_upstream.hostport}",
        "Connection: keep-alive, X-Hop-One",
        "X-Keep-1: a",
        "Keep-Alive: timeout=5",
        "X-Hop-One: removed because Connection names it",
        "Proxy-Connection: keep-alive",
        "TE: trailers",
        "x-keep-2: B",
        "Content-Length: 4",
    ]
    hop = ("connection", "keep-alive", "x-hop-one", "proxy-connection", "te")
    expected = [ln for ln in lines if ln.split(":")[0].lower() not in hop]
    with RawClient(proxy.outbound) as client:
        client.send(("\r\n".join(lines) + "\r\n\r\n").encode() + b"body")
        resp = client.final()
    assert resp.status == 200 and resp.data == b"body"
    req = fresh_upstream.request_number(1)
    assert req.head.raw == ("\r\n".join(expected) + "\r\n\r\n").encode()
    assert req.body.raw == b"body"


def test_response_connection_keep_alive_alone_is_relayed_as_the_proxys_own(proxy, fresh_upstream):
    # The proxy keeps the client's connection: the upstream's "Connection: keep-alive" says the same of
    # this hop, so the head goes out as received; with the upstream's Keep-Alive parameters it does not.
    with RawClient(proxy.outbound) as client:
        kept = client.exchange("GET", "/keep-alive-field", host(fresh_upstream))
        params = client.exchange("GET", "/keep-alive-params", host(fresh_upstream))
        again = client.exchange("GET", "/keep-alive-field", host(fresh_upstream))
    assert kept.status == 200 and kept.data == b"kept" and kept.header("Connection") == "keep-alive"
    assert again.status == 200 and again.data == b"kept"
    assert params.status == 200 and params.data == b"kept"
    assert params.header("Connection") is None and params.header("Keep-Alive") is None


def test_upgrade_field_removed_when_not_an_upgrade(proxy, fresh_upstream):
    """Upgrade is hop-by-hop; without Connection: upgrade it is no upgrade
    request, so it is dropped like the other hop-by-hop fields."""
    lines = ["GET /echo HTTP/1.1", f"Host: {fresh_upstream.hostport}", "Upgrade: example/1", "X-After: 1"]
    with RawClient(proxy.outbound) as client:
        client.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert client.final().status == 200
    expected = [ln for ln in lines if not ln.startswith("Upgrade")]
    assert fresh_upstream.request_number(1).head.raw == ("\r\n".join(expected) + "\r\n\r\n").encode()


def test_response_head_case_and_order_relayed(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/head-case", host(upstream))
    assert resp.status == 200 and resp.data == b"ok"
    names = [n for n in resp.head.names() if n.lower() in (b"x-mixed-case", b"x-lower", b"x-upper", b"content-type")]
    assert names == [b"X-MiXeD-CaSe", b"x-lower", b"X-UPPER", b"Content-Type"]


def test_dst_override_routes_and_host_is_kept(proxy, fresh_upstream):
    headers = [("Host", "my-service.example.test:8080"), ("l5d-dst-override", fresh_upstream.hostport)]
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/echo", headers)
    assert resp.status == 200
    assert fresh_upstream.request_number(1).head.get("Host") == b"my-service.example.test:8080"


def test_dst_override_wins_over_host(proxy, make_upstream):
    chosen, other = make_upstream(name="chosen"), make_upstream(name="other")
    headers = [("Host", other.hostport), ("l5d-dst-override", chosen.hostport)]
    with RawClient(proxy.outbound) as client:
        assert client.exchange("GET", "/echo", headers).status == 200
    assert len(chosen.requests) == 1
    assert other.received() == b""


def test_absolute_form_routes_and_wins_over_host(proxy, make_upstream):
    chosen, other = make_upstream(name="chosen"), make_upstream(name="other")
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", f"http://{chosen.hostport}/echo?a=b", [("Host", other.hostport)])
    assert resp.status == 200
    req = chosen.request_number(1)
    assert req.target in ("/echo?a=b", f"http://{chosen.hostport}/echo?a=b")
    assert other.received() == b""


def test_dst_override_wins_over_absolute_form(proxy, make_upstream):
    chosen, other = make_upstream(name="chosen"), make_upstream(name="other")
    headers = [("Host", other.hostport), ("l5d-dst-override", chosen.hostport)]
    with RawClient(proxy.outbound) as client:
        assert client.exchange("GET", f"http://{other.hostport}/echo", headers).status == 200
    assert len(chosen.requests) == 1
    assert other.received() == b""


def test_host_without_port_means_port_80(proxy):
    server = None
    for last in range(77, 120):  # a loopback address whose port 80 is free
        try:
            server = HttpUpstream(host=f"127.0.{last}.{last}", port=80, name="port80")
            break
        except OSError:
            continue
    assert server is not None, "no loopback address with a free port 80"
    try:
        with RawClient(proxy.outbound) as client:
            resp = client.exchange("GET", "/echo", [("Host", server.host)])
        assert resp.status == 200
        assert server.request_number(1).head.get("Host") == server.host.encode()
    finally:
        server.stop()


def test_lowercase_host_header_routes(proxy, fresh_upstream):
    raw = f"GET /echo HTTP/1.1\r\nhost: {fresh_upstream.hostport}\r\n\r\n".encode()
    with RawClient(proxy.outbound) as client:
        client.send(raw)
        assert client.final().status == 200
    assert fresh_upstream.request_number(1).head.raw == raw


def test_ipv6_loopback_upstream(proxy):
    server = HttpUpstream(host="::1", name="v6")
    try:
        with RawClient(proxy.outbound) as client:
            resp = client.exchange("POST", "/echo", [("Host", server.hostport)], b"over v6")
            assert resp.status == 200 and resp.data == b"over v6"
            resp = client.exchange("POST", "/echo", [("Host", "v6.example"), ("l5d-dst-override", server.hostport)],
                                   b"again")
            assert resp.status == 200 and resp.data == b"again"
        assert server.request_number(1).head.get("Host") == server.hostport.encode()
    finally:
        server.stop()


# -- real clients ----------------------------------------------------------------


def test_requests_as_http_proxy_get_and_post(proxy, upstream):
    with session() as sess:
        sess.proxies = {"http": proxy.proxy_url}
        got = sess.get(f"http://{upstream.hostport}/echo", timeout=10)
        assert got.status_code == 200 and got.headers["X-Method"] == "GET"
        posted = sess.post(f"http://{upstream.hostport}/echo", data=b"form=1&b=2", timeout=10)
        assert posted.status_code == 200 and posted.content == b"form=1&b=2"
        assert posted.headers["X-Body-Length"] == "10"


def test_requests_routed_by_host(proxy, upstream):
    with session() as sess:
        got = sess.post(f"http://{proxy.outbound_hostport}/echo", data=b"abc",
                        headers={"Host": upstream.hostport}, timeout=10)
    assert got.status_code == 200 and got.content == b"abc"


def test_curl_get_through_proxy(proxy, upstream):
    res = curl("-x", proxy.proxy_url, "-D", "-", f"http://{upstream.hostport}/echo-head")
    assert res.returncode == 0, res.stderr
    assert b"HTTP/1.1 200" in res.stdout
    assert b"GET " in res.stdout and f"Host: {upstream.hostport}".encode() in res.stdout
    assert b"proxy-connection" not in res.stdout.lower()  # hop-by-hop, curl sends it to proxies


def test_curl_chunked_upload(proxy, upstream, tmp_path):
    data = det_bytes(1_500_000, 5)
    src = tmp_path / "upload.bin"
    src.write_bytes(data)
    res = curl("-x", proxy.proxy_url, "-H", "Transfer-Encoding: chunked", "-H", "Expect:",
               "--data-binary", f"@{src}", "-D", str(tmp_path / "h"), "-o", str(tmp_path / "o"),
               f"http://{upstream.hostport}/echo")
    assert res.returncode == 0, res.stderr
    headers = (tmp_path / "h").read_text()
    assert "X-Body-Chunked: 1" in headers
    assert f"X-Body-Sha256: {sha256(data)}" in headers
    assert (tmp_path / "o").read_bytes() == data


# -- framing without a body ------------------------------------------------------


def test_head_then_next_request_on_same_connection(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("HEAD", "/echo", host(upstream))
        assert resp.status == 200 and resp.data == b""
        resp = client.exchange("POST", "/echo", host(upstream), b"after head")
        assert resp.status == 200 and resp.data == b"after head"


def test_head_of_chunked_resource_then_next_request(proxy, upstream):
    """A HEAD answer says chunked but has no body: nothing to wait for."""
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("HEAD", "/chunked", host(upstream))
        assert resp.status == 200 and resp.data == b""
        resp = client.exchange("POST", "/echo", host(upstream), b"after head", timeout=5)
        assert resp.status == 200 and resp.data == b"after head"


def test_304_with_content_length_then_next_request(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/not-modified", host(upstream) + [("If-None-Match", '"v1"')])
        assert resp.status == 304 and resp.data == b""
        resp = client.exchange("POST", "/echo", host(upstream), b"after 304", timeout=5)
        assert resp.status == 200 and resp.data == b"after 304"


def test_informational_103_then_final_response(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/early-hints", host(upstream))
        resp = client.final(timeout=5)
        assert resp.status == 200 and resp.data == b"after hints"
        resp = client.exchange("POST", "/echo", host(upstream), b"after hints too")
        assert resp.status == 200 and resp.data == b"after hints too"


def test_response_head_just_under_limit(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/big-header?n=60000", host(upstream))
    assert resp.status == 200 and resp.header("X-Big") == "b" * 60000


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_status_then_next_request(proxy, upstream, status):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", f"/status/{status}", host(upstream))
        assert resp.status == status and resp.data == b""
        resp = client.exchange("GET", "/echo", host(upstream))
        assert resp.status == 200


@pytest.mark.parametrize("status", [404, 500, 503])
def test_upstream_status_passed_through(proxy, upstream, status):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", f"/status/{status}", host(upstream))
    assert resp.status == status
    assert resp.data == f"status {status}".encode()
    assert_not_proxy_error(resp)


# -- HTTP/1.0 ---------------------------------------------------------------------


def test_http10_client(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/echo?v=10", host(upstream), version="HTTP/1.0")
        resp = client.final()
        assert resp.status == 200
        assert resp.header("X-Target") == "/echo?v=10"
        assert client.closed_within(3), "HTTP/1.0 request without keep-alive: the proxy must close"


def test_http10_client_never_gets_chunked(proxy, upstream):
    """HTTP/1.0 has no chunked coding: the proxy must deliver a chunked
    upstream body some other way (read until close or Content-Length)."""
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/chunked", host(upstream), version="HTTP/1.0")
        resp = client.final()
        assert resp.status == 200
        assert not resp.head.has_token("transfer-encoding", "chunked"), resp.headers
        assert resp.data == b"hello chunked world"
        assert client.closed_within(3)


def test_http10_post_with_body(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        client.request("POST", "/echo", host(upstream), b"ten body", version="HTTP/1.0")
        resp = client.final()
    assert resp.status == 200 and resp.data == b"ten body"


def test_curl_http10(proxy, upstream):
    res = curl("--http1.0", "-x", proxy.proxy_url, "-d", "one-oh", f"http://{upstream.hostport}/echo")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"one-oh"


# -- nginx as the upstream ------------------------------------------------------------


def test_nginx_static_and_large_file(proxy, nginx, tmp_path):
    out = tmp_path / "large"
    res = curl("-x", proxy.proxy_url, "-o", str(out), "-w", "%{http_code}",
               f"http://{nginx.hostport}/static/large.bin", timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"200"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == nginx.large_sha256
    res = curl("-x", proxy.proxy_url, f"http://{nginx.hostport}/static/hello.txt", f"http://{nginx.hostport}/ok")
    assert res.returncode == 0, res.stderr
    assert res.stdout == nginx.hello + b"ok\n"


def test_nginx_by_host_header(proxy, nginx):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/status/503", [("Host", nginx.hostport)])
        assert resp.status == 503 and resp.data == b"unavailable\n"
        assert_not_proxy_error(resp)
        resp = client.exchange("GET", "/ok", [("Host", nginx.hostport)])
        assert resp.status == 200 and resp.data == b"ok\n"
