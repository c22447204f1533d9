"""HTTP through the inbound listener, and what happens to connections
addressed to the listener itself with and without a default target."""

from __future__ import annotations

import time

import pytest

from helpers.checks import assert_proxy_error, delta
from helpers.clients import RawClient, session
from helpers.meshproxy import MeshProxy
from helpers.servers import det_bytes, sha256

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def inbound_proxy(upstream, tmp_path_factory):
    mp = MeshProxy(env={"MESHPROXY_INBOUND_DEFAULT_TARGET": upstream.hostport},
                   name="inbound-proxy", log_path=tmp_path_factory.mktemp("inbound") / "stderr.log")
    try:
        mp.start()
        yield mp
    finally:
        mp.close()


def test_inbound_http_to_default_target(inbound_proxy, upstream):
    before = inbound_proxy.metrics()
    count = len(upstream.requests)
    raw = b"GET /echo?in=1 HTTP/1.1\r\nHost: svc.ns.example:8080\r\nX-CaSe: v\r\n\r\n"
    with RawClient(inbound_proxy.inbound) as client:
        client.send(raw)
        resp = client.final()
    assert resp.status == 200
    assert upstream.wait_requests(count + 1)
    assert upstream.requests[count].head.raw == raw  # Host kept, nothing added
    after = inbound_proxy.metrics()
    assert delta(before, after, "request_total", direction="inbound") == 1
    assert delta(before, after, "response_total", direction="inbound", status_code="200", classification="success") == 1


def test_inbound_keep_alive_and_large_bodies(inbound_proxy, upstream):
    data = det_bytes(3_000_000, 51)
    with session() as sess:
        for _ in range(3):
            got = sess.post(f"http://{inbound_proxy.inbound_hostport}/echo", data=data,
                            headers={"Host": "app.example"}, timeout=30)
            assert got.status_code == 200
            assert got.headers["X-Body-Sha256"] == sha256(data)
            assert sha256(got.content) == sha256(data)
    assert len({r.conn_id for r in upstream.requests[-3:]}) == 1


def test_inbound_refuses_ambiguous_framing(inbound_proxy, upstream):
    received, count = len(upstream.received()), len(upstream.requests)
    raw = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    with RawClient(inbound_proxy.inbound) as client:
        client.send(raw)
        assert_proxy_error(client.final(), 400)
        assert client.closed_within(3)
    time.sleep(0.2)
    assert len(upstream.received()) == received and len(upstream.requests) == count


def test_inbound_without_default_target_is_closed_and_logged(make_proxy):
    mp = make_proxy()
    mark = mp.mark()
    with RawClient(mp.inbound) as client:
        try:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed even before the request went out: fine
        assert client.closed_within(5), "connection to the inbound listener itself must be closed"
        assert bytes(client.stream.received) == b""
    logged = mp.wait_line(lambda line: bool(line.strip()), since=mark, timeout=5)
    assert logged, "no log line for the refused connection"
    time.sleep(0.2)
    assert mp.running()
    mp.wait_ready(5)
