"""The access log's formatter (proxy/telemetry/accesslog.py) on edge cases the real clients rarely send."""

from __future__ import annotations

import asyncio
import json
import time
import types

import pytest

from proxy.protocol.http1 import parse_request_head
from proxy.protocol.request import h2_request_line
from proxy.telemetry.accesslog import AccessLog


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _exchange(head=None, headers=None, client=("127.0.0.1", 40000), client_id=None, status=200, length=5):
    now = time.perf_counter()
    meta = types.SimpleNamespace(client=client, client_id=client_id)
    return types.SimpleNamespace(t0=now - 0.002, t_sent=now - 0.001, meta=meta, head=head, headers=headers,
                                 status=status, req_length=-1, resp_length=length)


def _h1(raw: bytes):
    return parse_request_head(raw, 65536)


def test_apache_escapes_the_request_and_brackets_ipv6(loop):
    log = AccessLog("apache", 10, loop)
    ex = _exchange(h2_request_line([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a:80"),
                                    (b":path", b'/q"x\\y\x01')]), headers=[(b":scheme", b"http")],
                   client=("::1", 5000), client_id="web.default.serviceaccount.identity.cluster.local")
    line = log.format(ex)
    assert line.startswith("[::1]:5000 web.default.serviceaccount.identity.cluster.local - [")
    assert line.endswith('] "GET http://a:80/q\\"x\\\\y\\x01 HTTP/2.0" 200'), line


def test_a_request_refused_before_its_head_is_a_dash(loop):
    ex = _exchange(head=None, status=400, length=-1)
    assert AccessLog("apache", 10, loop).format(ex).endswith('] "-" 400')
    entry = json.loads(AccessLog("json", 10, loop).format(ex))
    assert (entry["method"], entry["uri"], entry["status"]) == ("", "", 400) and "response_bytes" not in entry


def test_json_reads_http1_fields_in_any_case_and_stays_valid(loop):
    head = _h1(b"GET /p?q=%C3%A9 HTTP/1.1\r\nHost: h\r\nUSER-AGENT:  ua \"1\" \xe9 \r\nX-Amzn-Trace-Id: amzn\r\n"
               b"X-Request-Id: rid\r\n\r\n")
    entry = json.loads(AccessLog("json", 10, loop).format(_exchange(head)))
    assert (entry["user_agent"], entry["trace_id"], entry["uri"], entry["host"]) == (
        'ua "1" \xe9', "rid", "/p?q=%C3%A9", "h")
    assert entry["total_ns"] >= entry["processing_ns"] > 0


def test_no_status_no_status_field(loop):
    ex = _exchange(_h1(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), status=0, length=-1)
    assert AccessLog("apache", 10, loop).format(ex).endswith('"GET / HTTP/1.1" -')
    assert "status" not in json.loads(AccessLog("json", 10, loop).format(ex))
