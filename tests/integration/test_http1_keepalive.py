"""Keep-alive on both sides, upstream pooling, pipelining, Connection: close."""

from __future__ import annotations

import http.client
import re
import subprocess
import threading
import time

import pytest

from helpers import wire
from helpers.checks import delta
from helpers.clients import RawClient, clean_env, curl, session
from helpers.clients import host_header as host
from helpers.servers import det_bytes

pytestmark = pytest.mark.timeout(60)


def test_many_requests_one_upstream_connection(proxy, fresh_upstream):
    before = proxy.metrics()
    with RawClient(proxy.outbound) as client:
        for i in range(20):
            resp = client.exchange("POST", "/echo", host(fresh_upstream), f"req {i}".encode())
            assert resp.status == 200 and resp.data == f"req {i}".encode()
            assert resp.header("X-Index") == str(i)
    after = proxy.metrics()
    assert fresh_upstream.accept_count == 1
    assert {r.conn_id for r in fresh_upstream.requests} == {1}
    assert delta(before, after, "tcp_open_total", direction="outbound", peer="src") == 1
    assert delta(before, after, "tcp_open_total", direction="outbound", peer="dst") == 1
    assert delta(before, after, "request_total", direction="outbound") == 20


def test_requests_session_reuses_one_upstream_connection(proxy, fresh_upstream):
    with session() as sess:
        for i in range(10):
            got = sess.get(f"http://{proxy.outbound_hostport}/echo?i={i}",
                           headers={"Host": fresh_upstream.hostport}, timeout=10)
            assert got.status_code == 200
    assert fresh_upstream.accept_count == 1


def test_http_client_keeps_one_connection(proxy, fresh_upstream):
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    try:
        socks = set()
        for i in range(10):
            conn.request("POST", f"/echo?i={i}", body=f"body {i}".encode(), headers={"Host": fresh_upstream.hostport})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == f"body {i}".encode()
            socks.add(id(conn.sock))
    finally:
        conn.close()
    assert len(socks) == 1, "the proxy closed the client's keep-alive connection"
    assert fresh_upstream.accept_count == 1


def test_curl_several_urls_reuse(proxy, fresh_upstream):
    urls = [f"http://{fresh_upstream.hostport}/echo?n={i}" for i in range(5)]
    res = curl("-x", proxy.proxy_url, *urls)
    assert res.returncode == 0, res.stderr
    assert len(fresh_upstream.requests) == 5
    assert fresh_upstream.accept_count == 1


def test_upstream_connection_pooled_across_client_connections(proxy, fresh_upstream):
    for i in range(3):
        with RawClient(proxy.outbound) as client:
            assert client.exchange("GET", f"/echo?c={i}", host(fresh_upstream)).status == 200
        time.sleep(0.2)  # let the proxy put the idle connection back in its pool
    assert fresh_upstream.accept_count == 1


def test_client_connection_close_honoured(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/echo", host(upstream) + [("Connection", "close")])
        assert resp.status == 200
        assert client.closed_within(3), "proxy kept the connection after Connection: close"


def test_upstream_connection_close_not_reused(proxy, fresh_upstream):
    with RawClient(proxy.outbound) as client:
        for _ in range(2):
            resp = client.exchange("GET", "/close-after", host(fresh_upstream))
            assert resp.status == 200 and resp.data == b"closing"
        resp = client.exchange("GET", "/echo", host(fresh_upstream))
        assert resp.status == 200
    assert fresh_upstream.accept_count == 3


def test_connection_of_http10_request_not_reused(proxy, make_upstream):
    """An HTTP/1.0 request without keep-alive ends its upstream connection
    after the response; the proxy must not pool it. The upstream here closes
    late (``linger``), so a proxy that reuses the connection loses the next
    request (a POST, which it cannot safely retry)."""
    server = make_upstream(linger=0.5, name="http10-origin")
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/echo", host(server), version="HTTP/1.0")
        assert client.final().status == 200
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("POST", "/echo", host(server), b"payload")
    assert resp.status == 200 and resp.data == b"payload", (resp.status, resp.data)
    assert server.accept_count == 2


def test_connection_after_http10_response_not_reused(proxy, make_upstream):
    """An HTTP/1.0 response without keep-alive ends the connection too."""
    server = make_upstream(linger=0.5, name="http10-answers")
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/http10-response", host(server))
        assert resp.status == 200 and resp.data == b"old one"
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("POST", "/echo", host(server), b"payload")
    assert resp.status == 200 and resp.data == b"payload", (resp.status, resp.data)
    assert server.accept_count == 2


def test_http11_client_keeps_its_connection_past_http10_and_close_delimited_answers(proxy, fresh_upstream):
    """An app that answers in HTTP/1.0 (Python's http.server) or ends a body by closing ends its own
    connection, not the client's: the proxy answers an HTTP/1.1 client in its own version (RFC 9110 2.5), a
    body the app ends by closing goes on re-chunked, and the next request works on the same connection."""
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/http10-response", host(fresh_upstream))
        assert (resp.status, resp.data) == (200, b"old one")
        assert resp.head.raw.startswith(b"HTTP/1.1 200 OK\r\n"), resp.head.raw
        assert not resp.head.has_token("connection", "close"), resp.headers
        resp = client.exchange("GET", "/close?n=300000", host(fresh_upstream))
        assert resp.status == 200 and resp.data == det_bytes(300_000)
        assert resp.head.has_token("transfer-encoding", "chunked"), resp.headers
        assert not resp.head.has_token("connection", "close"), resp.headers
        resp = client.exchange("GET", "/echo?after=1", host(fresh_upstream))
        assert resp.status == 200 and resp.header("X-Target") == "/echo?after=1"
    assert fresh_upstream.accept_count == 3


def test_stale_pooled_connection_is_not_used(proxy, fresh_upstream):
    """The upstream closes an idle pooled connection; the next request must
    still succeed (on a new connection), not fail with a synthesized error."""
    with RawClient(proxy.outbound) as client:
        assert client.exchange("GET", "/idle-close", host(fresh_upstream)).status == 200
        assert fresh_upstream.wait_for(lambda: fresh_upstream.conns[0].closed.is_set(), 3)
        time.sleep(0.3)
        resp = client.exchange("GET", "/echo", host(fresh_upstream))
    assert resp.status == 200, (resp.status, resp.headers)
    assert fresh_upstream.accept_count == 2


def test_pipelined_requests_answered_in_order(proxy, fresh_upstream):
    batch = (
        wire.request_bytes("GET", "/slow?delay=0.5", host(fresh_upstream))
        + wire.request_bytes("POST", "/echo", host(fresh_upstream), b"second")
        + wire.request_bytes("POST", "/echo", host(fresh_upstream), b"third")
    )
    with RawClient(proxy.outbound) as client:
        client.send(batch)
        bodies = [client.final(timeout=10).data for _ in range(3)]
    assert bodies == [b"slow done", b"second", b"third"]


def test_fifty_pipelined_requests(proxy, fresh_upstream):
    batch = b"".join(
        wire.request_bytes("POST", f"/echo?n={i}", host(fresh_upstream), f"pipelined {i}".encode())
        for i in range(50)
    )
    with RawClient(proxy.outbound) as client:
        client.send(batch)
        bodies = [client.final(timeout=10).data for _ in range(50)]
    assert bodies == [f"pipelined {i}".encode() for i in range(50)]


def test_pipelined_requests_to_two_targets(proxy, make_upstream):
    one, two = make_upstream(name="one"), make_upstream(name="two")
    batch = (
        wire.request_bytes("POST", "/echo", host(one), b"to one")
        + wire.request_bytes("GET", "/slow?delay=0.3", host(two))
        + wire.request_bytes("POST", "/echo", host(one), b"one again")
    )
    with RawClient(proxy.outbound) as client:
        client.send(batch)
        bodies = [client.final(timeout=10).data for _ in range(3)]
    assert bodies == [b"to one", b"slow done", b"one again"]
    assert [r.body.data for r in one.requests] == [b"to one", b"one again"]


def test_pipelined_chunked_request_then_get(proxy, fresh_upstream):
    batch = (
        wire.request_bytes("POST", "/echo", host(fresh_upstream) + [("Transfer-Encoding", "chunked")],
                           wire.chunked_bytes([b"chunk", b"ed"], [("X-T", "1")]))
        + wire.request_bytes("GET", "/echo?second", host(fresh_upstream))
    )
    with RawClient(proxy.outbound) as client:
        client.send(batch)
        first, second = client.final(), client.final()
    assert first.data == b"chunked" and first.header("X-Trailers") == "X-T=1"
    assert second.header("X-Target") == "/echo?second"


def test_client_abort_mid_request_leaves_pool_clean(proxy, fresh_upstream):
    """A client that dies halfway through a body must not leave a half-used
    upstream connection in the pool for the next request."""
    with RawClient(proxy.outbound) as client:
        client.send(wire.request_bytes("POST", "/echo", host(fresh_upstream) + [("Content-Length", "100")]) + b"x" * 10)
        time.sleep(0.3)
    time.sleep(0.3)
    for i in range(3):
        with RawClient(proxy.outbound) as client:
            resp = client.exchange("POST", "/echo", host(fresh_upstream), f"clean {i}".encode())
            assert resp.status == 200 and resp.data == f"clean {i}".encode()
    assert [r.body.data for r in fresh_upstream.requests] == [b"clean 0", b"clean 1", b"clean 2"]


def test_client_abort_mid_response_leaves_pool_clean(proxy, fresh_upstream):
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/stream-out", host(fresh_upstream))
        client.read_exact(1000)
    time.sleep(0.3)
    fresh_upstream.release.set()
    time.sleep(0.3)
    for i in range(3):
        with RawClient(proxy.outbound) as client:
            resp = client.exchange("POST", "/echo", host(fresh_upstream), f"after abort {i}".encode())
            assert resp.status == 200 and resp.data == f"after abort {i}".encode()


def test_alternating_targets_on_one_client_connection(proxy, make_upstream):
    one, two = make_upstream(name="one"), make_upstream(name="two")
    with RawClient(proxy.outbound) as client:
        for i in range(6):
            target = one if i % 2 == 0 else two
            resp = client.exchange("POST", "/echo", host(target), f"{i}".encode())
            assert resp.status == 200 and resp.data == f"{i}".encode()
    assert [r.body.data for r in one.requests] == [b"0", b"2", b"4"]
    assert [r.body.data for r in two.requests] == [b"1", b"3", b"5"]
    assert one.accept_count == 1 and two.accept_count == 1


def test_concurrent_clients(proxy, fresh_upstream):
    errors: list[str] = []

    def worker(n: int) -> None:
        try:
            with RawClient(proxy.outbound) as client:
                for i in range(10):
                    body = det_bytes(1000 + n * 10 + i, n)
                    resp = client.exchange("POST", "/echo", host(fresh_upstream), body, timeout=15)
                    if resp.status != 200 or resp.data != body:
                        errors.append(f"worker {n} request {i}: {resp.status}")
        except Exception as err:  # collected and asserted below
            errors.append(f"worker {n}: {err!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(fresh_upstream.requests) == 80
    assert fresh_upstream.accept_count <= 8


def test_wrk_load_through_proxy_to_nginx(proxy, nginx):
    """A short, bounded load: no errors, and the proxy pools upstream
    connections instead of opening one per request."""
    before = proxy.metrics()
    entries_before = len(nginx.access_entries())
    res = subprocess.run(
        ["wrk", "-t1", "-c4", "-d1s", "--timeout", "5s", "-H", f"l5d-dst-override: {nginx.hostport}",
         f"http://{proxy.outbound_hostport}/ok"],
        capture_output=True, timeout=30, env=clean_env(), check=False,
    )
    out = res.stdout.decode()
    assert res.returncode == 0, out + res.stderr.decode()
    done = int(re.search(r"(\d+) requests in", out).group(1))
    assert done > 50, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    after = proxy.metrics()
    assert delta(before, after, "request_total", direction="outbound") >= done
    entries = nginx.wait_access_entries(entries_before + done)[entries_before:]
    assert len(entries) >= done
    assert all(e[4] == "200" for e in entries)
    connections = {e[0] for e in entries}
    assert len(connections) <= 8, f"{len(connections)} upstream connections for {done} requests"
