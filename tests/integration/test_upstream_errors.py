"""Errors the upstream causes: refused, connect timeout, response timeout,
malformed or oversized response, a connection closed without an answer.

The module's proxy has short connect and response timeouts.
"""

from __future__ import annotations

import time

import pytest

from helpers import wire
from helpers.checks import assert_one_log_line, assert_proxy_error, assert_serving
from helpers.clients import RawClient
from helpers.ports import free_port
from helpers.servers import SilentServer, StuckListener, TcpServer

pytestmark = pytest.mark.timeout(60)

PROXY_ENV = {
    "MESHPROXY_CONNECT_TIMEOUT": "0.5s",
    "MESHPROXY_RESPONSE_TIMEOUT": "500ms",
}


def _get(proxy, target_hostport: str, path: str = "/echo", timeout: float = 10.0):
    with RawClient(proxy.outbound) as client:
        start = time.monotonic()
        resp = client.exchange("GET", path, [("Host", target_hostport)], timeout=timeout)
        return resp, time.monotonic() - start


def test_refused_502(proxy, upstream):
    closed = f"127.0.0.1:{free_port()}"
    mark = proxy.mark()
    resp, _ = _get(proxy, closed)
    reason = assert_proxy_error(resp, 502)
    assert_one_log_line(proxy, mark, reason)
    assert_serving(proxy, upstream)


def test_refused_502_via_dst_override_and_absolute_form(proxy):
    closed = f"127.0.0.1:{free_port()}"
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/", [("Host", "svc.example"), ("l5d-dst-override", closed)])
        assert_proxy_error(resp, 502)
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", f"http://{closed}/", [("Host", closed)])
        assert_proxy_error(resp, 502)


def test_connect_timeout_504(proxy, upstream):
    stuck = StuckListener()
    try:
        mark = proxy.mark()
        resp, elapsed = _get(proxy, stuck.hostport)
        reason = assert_proxy_error(resp, 504)
        assert 0.4 <= elapsed < 4.0, f"504 after {elapsed:.2f}s with a 0.5s connect timeout"
        assert_one_log_line(proxy, mark, reason)
    finally:
        stuck.stop()
    assert_serving(proxy, upstream)


def test_response_timeout_504(proxy, fresh_upstream):
    mark = proxy.mark()
    resp, elapsed = _get(proxy, fresh_upstream.hostport, "/never")
    reason = assert_proxy_error(resp, 504)
    assert 0.4 <= elapsed < 4.0, f"504 after {elapsed:.2f}s with a 0.5s response timeout"
    assert_one_log_line(proxy, mark, reason)
    assert len(fresh_upstream.requests) == 1  # the request itself was forwarded
    assert_serving(proxy, fresh_upstream)


def test_silent_server_response_timeout_504(proxy):
    server = SilentServer(name="silent")
    try:
        resp, elapsed = _get(proxy, server.hostport)
        assert_proxy_error(resp, 504)
        assert elapsed < 4.0
        assert server.received().startswith(b"GET /echo HTTP/1.1\r\n")
    finally:
        server.stop()


def test_slow_answer_within_timeout_is_not_cut(proxy, upstream):
    resp, _ = _get(proxy, upstream.hostport, "/slow?delay=0.2")
    assert resp.status == 200 and resp.data == b"slow done"


def test_upstream_closes_without_answer_502(proxy, upstream):
    def read_head_then_close(conn):
        wire.read_request_head(conn.stream, wire.deadline_in(5))

    server = TcpServer(read_head_then_close, name="closer")
    try:
        resp, _ = _get(proxy, server.hostport)
        assert_proxy_error(resp, 502)
    finally:
        server.stop()
    assert_serving(proxy, upstream)


def test_malformed_response_502(proxy, upstream):
    mark = proxy.mark()
    resp, _ = _get(proxy, upstream.hostport, "/bad-response")
    reason = assert_proxy_error(resp, 502)
    assert_one_log_line(proxy, mark, reason)
    assert_serving(proxy, upstream)


def test_oversized_response_head_502(proxy, upstream):
    resp, _ = _get(proxy, upstream.hostport, "/big-header")
    assert_proxy_error(resp, 502)
    assert_serving(proxy, upstream)


def test_response_timeout_is_time_to_head_only(proxy, upstream):
    """The body may take longer than the response timeout once the head came."""
    resp, elapsed = _get(proxy, upstream.hostport, "/slow-body?delay=1")
    assert resp.status == 200 and resp.data == b"head came at once, the rest later"
    assert elapsed >= 0.9


def test_timed_out_connection_not_reused(proxy, fresh_upstream):
    """After a 504 the upstream connection may still deliver a late answer;
    it must not carry the next request."""
    with RawClient(proxy.outbound) as client:
        assert_proxy_error(client.exchange("GET", "/never", [("Host", fresh_upstream.hostport)]), 504)
    for i in range(3):
        resp, _ = _get(proxy, fresh_upstream.hostport, f"/echo?after={i}")
        assert resp.status == 200 and resp.header("X-Target") == f"/echo?after={i}"
    never_conn = fresh_upstream.requests[0].conn_id
    assert all(r.conn_id != never_conn for r in fresh_upstream.requests[1:])
