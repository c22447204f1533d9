"""The admin listener: /live, /ready, /metrics (names, labels, values),
/shutdown and /proxy-log-level; JSON log lines."""

from __future__ import annotations

import json
import math
import time

import pytest

from helpers.checks import delta, wait_metric
from helpers.clients import RawClient, host_header as host
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(60)

METRIC_NAMES = (
    "request_total",
    "response_total",
    "response_latency_ms_bucket",
    "response_latency_ms_sum",
    "response_latency_ms_count",
    "tcp_open_total",
    "tcp_open_connections",
    "tcp_read_bytes_total",
    "tcp_write_bytes_total",
)


def test_live_and_ready(proxy):
    assert proxy.admin_request("GET", "/live")[0] == 200
    assert proxy.admin_request("GET", "/ready")[0] == 200


def test_metrics_exposition(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        assert client.exchange("GET", "/echo", host(upstream)).status == 200
    status, headers, body = proxy.admin_request("GET", "/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain")
    parsed = proxy.metrics()
    missing = [name for name in METRIC_NAMES if name not in parsed]
    assert not missing, f"missing metrics {missing}; have {sorted(parsed.names())}"
    for name in METRIC_NAMES:
        for labels, _ in parsed.series(name):
            assert labels.get("direction") in ("outbound", "inbound"), (name, labels)
    for name in ("tcp_open_total", "tcp_open_connections", "tcp_read_bytes_total", "tcp_write_bytes_total"):
        assert {labels.get("peer") for labels, _ in parsed.series(name)} <= {"src", "dst"}, name


def test_request_and_response_counters(proxy, upstream):
    before = proxy.metrics()
    with RawClient(proxy.outbound) as client:
        for _ in range(5):
            assert client.exchange("GET", "/echo", host(upstream)).status == 200
        assert client.exchange("GET", "/status/500", host(upstream)).status == 500
        assert client.exchange("GET", "/status/404", host(upstream)).status == 404
    after = proxy.metrics()
    assert delta(before, after, "request_total", direction="outbound") == 7
    assert delta(before, after, "response_total", direction="outbound", status_code="200", classification="success") == 5
    assert delta(before, after, "response_total", direction="outbound", status_code="500", classification="failure") == 1
    assert delta(before, after, "response_total", direction="outbound", status_code="404") == 1
    assert delta(before, after, "response_total", direction="outbound") == 7
    assert delta(before, after, "request_total", direction="inbound") == 0


def _histograms(parsed, direction: str):
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for labels, value in parsed.series("response_latency_ms_bucket", direction=direction):
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        le = math.inf if labels["le"] in ("+Inf", "Inf", "inf") else float(labels["le"])
        groups.setdefault(key, []).append((le, value))
    return groups


def test_latency_histogram(proxy, upstream):
    before = proxy.metrics()
    with RawClient(proxy.outbound) as client:
        assert client.exchange("GET", "/slow?delay=0.3", host(upstream)).status == 200
        for _ in range(3):
            assert client.exchange("GET", "/echo", host(upstream)).status == 200
    after = proxy.metrics()
    assert delta(before, after, "response_latency_ms_count", direction="outbound") == 4
    assert delta(before, after, "response_latency_ms_sum", direction="outbound") >= 300
    groups = _histograms(after, "outbound")
    assert groups, "no response_latency_ms_bucket series"
    for key, buckets in groups.items():
        buckets.sort()
        values = [v for _, v in buckets]
        assert values == sorted(values), f"buckets not cumulative for {key}: {buckets}"
        assert buckets[-1][0] == math.inf, f"no +Inf bucket for {key}"
        count = after.get("response_latency_ms_count", **dict(key))
        assert buckets[-1][1] == count, f"+Inf bucket {buckets[-1][1]} != _count {count} for {key}"


def test_tcp_connection_metrics(proxy, fresh_upstream):
    before = proxy.metrics()
    open_src = before.get("tcp_open_connections", direction="outbound", peer="src")
    client = RawClient(proxy.outbound)
    try:
        request = b"POST /echo HTTP/1.1\r\nHost: " + fresh_upstream.hostport.encode() + b"\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
        client.send(request)
        resp = client.final()
        assert resp.status == 200
        during = proxy.metrics()
        assert delta(before, during, "tcp_open_total", direction="outbound", peer="src") == 1
        assert delta(before, during, "tcp_open_total", direction="outbound", peer="dst") == 1
        assert during.get("tcp_open_connections", direction="outbound", peer="src") == open_src + 1
        assert delta(before, during, "tcp_read_bytes_total", direction="outbound", peer="src") >= len(request)
        assert delta(before, during, "tcp_write_bytes_total", direction="outbound", peer="src") >= 1000
        assert delta(before, during, "tcp_write_bytes_total", direction="outbound", peer="dst") >= 1000
        assert delta(before, during, "tcp_read_bytes_total", direction="outbound", peer="dst") >= 1000
    finally:
        client.close()
    value = wait_metric(proxy, "tcp_open_connections", lambda v: v == open_src, direction="outbound", peer="src")
    assert value == open_src, "tcp_open_connections did not go back down after the client closed"


def test_log_level_changed_at_runtime(make_proxy):
    mp = make_proxy({"MESHPROXY_LOG_LEVEL": "info"})
    status, _, body = mp.admin_request("GET", "/proxy-log-level")
    assert status == 200 and body.strip() == b"info"
    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"debug")
    assert 200 <= status < 300, (status, body)
    status, _, body = mp.admin_request("GET", "/proxy-log-level")
    assert status == 200 and body.strip() == b"debug"
    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"warning")
    assert 200 <= status < 300, (status, body)
    assert mp.admin_request("GET", "/proxy-log-level")[2].strip() == b"warning"


def test_log_level_change_takes_effect(make_proxy):
    """A refused upstream is logged as a warning: visible at info, silent at
    error, visible again at debug."""
    mp = make_proxy({"MESHPROXY_LOG_LEVEL": "info"})
    closed = f"127.0.0.1:{free_port()}"

    def refused_logged() -> bool:
        mark = mp.mark()
        with RawClient(mp.outbound) as client:
            reason = client.exchange("GET", "/", [("Host", closed)]).header("l5d-proxy-error")
        assert reason
        return mp.wait_line(reason, since=mark, timeout=1.0) is not None

    assert refused_logged()
    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"error")
    assert 200 <= status < 300, (status, body)
    assert not refused_logged(), "a warning was logged at level error"
    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"debug")
    assert 200 <= status < 300, (status, body)
    assert refused_logged()


def test_shutdown_from_loopback(make_proxy, fresh_upstream):
    mp = make_proxy()
    with RawClient(mp.outbound) as client:
        assert client.exchange("GET", "/echo", host(fresh_upstream)).status == 200
    status, _, body = mp.admin_request("POST", "/shutdown")
    assert 200 <= status < 300, (status, body)
    code = mp.wait(15)
    assert code == 0, f"exit status {code} after /shutdown;\n{mp.tail()}"


def test_shutdown_from_other_loopback_address(make_proxy):
    """127.0.0.2 is a loopback address too (all of 127/8 is)."""
    mp = make_proxy()
    with RawClient(mp.admin, source=("127.0.0.2", 0)) as client:
        resp = client.exchange("POST", "/shutdown", [("Host", "admin"), ("Content-Length", "0")])
    assert 200 <= resp.status < 300, (resp.status, resp.data)
    assert mp.wait(15) == 0


def test_json_log_format(make_proxy, fresh_upstream):
    mp = make_proxy({"MESHPROXY_LOG_FORMAT": "json", "MESHPROXY_LOG_LEVEL": "debug"})
    with RawClient(mp.outbound) as client:
        assert client.exchange("GET", "/echo", host(fresh_upstream)).status == 200
    closed = f"127.0.0.1:{free_port()}"
    with RawClient(mp.outbound) as client:
        resp = client.exchange("GET", "/", [("Host", closed)])
        assert resp.status == 502
    reason = resp.header("l5d-proxy-error")
    assert mp.wait_line(reason, timeout=5), "no log line for the 502"
    time.sleep(0.2)
    lines = [line for line in mp.lines() if line.strip()]
    assert lines, "no log lines at debug level"
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            pytest.fail(f"log line is not JSON: {line!r}")
        assert isinstance(value, dict), line
