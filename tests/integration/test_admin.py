"""The admin listener: /live, /ready, /metrics (names, labels, values),
/shutdown and /proxy-log-level; JSON log lines."""

from __future__ import annotations

import json
import math
import time

import pytest

from helpers.checks import delta, wait_metric
from helpers.clients import RawClient
from helpers.clients import host_header as host
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
    assert delta(before, after, "response_total", direction="outbound", status_code="200",
                 classification="success") == 5
    assert delta(before, after, "response_total", direction="outbound", status_code="500",
                 classification="failure") == 1
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
        # The _count of exactly this label set (get() would sum every set that includes these labels).
        [count] = [v for labels, v in after.series("response_latency_ms_count", **dict(key)) if labels == dict(key)]
        assert buckets[-1][1] == count, f"+Inf bucket {buckets[-1][1]} != _count {count} for {key}"


def test_tcp_connection_metrics(proxy, fresh_upstream):
    before = proxy.metrics()
    open_src = before.get("tcp_open_connections", direction="outbound", peer="src")
    client = RawClient(proxy.outbound)
    try:
        request = (b"POST /echo HTTP/1.1\r\nHost: " + fresh_upstream.hostport.encode()
                   + b"\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
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


def test_shutdown_is_off_by_default(make_proxy):
    """Linkerd's default: no shutdown endpoint unless enabled; it is a path like any unknown one."""
    mp = make_proxy({"MESHPROXY_LOG_LEVEL": "debug"})
    mark = mp.mark()
    status, _, body = mp.admin_request("POST", "/shutdown")
    assert status == 404 and body == b"not found\n", (status, body)
    assert mp.wait_line("shutdown endpoint disabled", since=mark, timeout=5)
    time.sleep(0.3)
    assert mp.running(), mp.tail()
    assert mp.admin_request("GET", "/ready")[0] == 200


SHUTDOWN_ON = {"MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED": "true"}


def test_shutdown_from_loopback(make_proxy, fresh_upstream):
    mp = make_proxy(SHUTDOWN_ON)
    with RawClient(mp.outbound) as client:
        assert client.exchange("GET", "/echo", host(fresh_upstream)).status == 200
    status, _, body = mp.admin_request("POST", "/shutdown")
    assert 200 <= status < 300, (status, body)
    code = mp.wait(15)
    assert code == 0, f"exit status {code} after /shutdown;\n{mp.tail()}"


def test_shutdown_from_other_loopback_address(make_proxy):
    """127.0.0.2 is a loopback address too (all of 127/8 is)."""
    mp = make_proxy(SHUTDOWN_ON)
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


def test_config_never_serves_credentials(make_proxy):
    mp = make_proxy({"MESHPROXY_K8S_API": "https://admin:hunter2@k8s.example.invalid:6443/?token=t0ken"})
    status, _, body = mp.admin_request("GET", "/config")
    assert status == 200
    config = json.loads(body)
    assert config["k8s_api"] == "https://***@k8s.example.invalid:6443/?***"
    assert b"hunter2" not in body and b"t0ken" not in body and b"admin:" not in body
    # File paths are not secrets: they stay readable.
    assert config["k8s_token_file"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def test_pipelined_requests_never_read_keep_memory_bounded(make_proxy):
    """20,000 pipelined /metrics requests whose responses are never read: the admin stops answering
    (and reading) at the write high-water mark instead of buffering every response."""
    import socket

    mp = make_proxy()
    for _ in range(20):  # the first renderings allocate what every later one reuses
        assert mp.admin_request("GET", "/metrics")[0] == 200
    time.sleep(0.5)
    idle = _rss_kib(mp.pid)
    payload = b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n" * 20_000
    sock = socket.create_connection(mp.admin, timeout=5)
    try:
        sock.setblocking(False)
        sent, deadline = 0, time.monotonic() + 10
        while sent < len(payload) and time.monotonic() < deadline:
            try:
                sent += sock.send(payload[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.05)  # the proxy stopped reading: as it should
        # The admin still serves everyone else; once it answers, its loop has done
        # all it was going to do with the pipelined requests.
        asked = time.monotonic()
        status, _, body = mp.admin_request("GET", "/live", timeout=60)
        answered_in = time.monotonic() - asked
        assert status == 200 and body == b"live\n"
        time.sleep(0.5)
        grown = _rss_kib(mp.pid) - idle
        assert grown < 16 * 1024, f"RSS grew by {grown} KiB with {sent} bytes of pipelined requests unread"
        assert answered_in < 5, f"/live took {answered_in:.1f}s beside the pipelining client"
    finally:
        sock.close()
    assert mp.admin_request("GET", "/ready")[0] == 200


def test_a_slow_request_head_gets_408_and_is_closed(make_proxy):
    """Slowloris: the head trickles in a byte at a time; the header timeout counts from its first byte."""
    import socket

    mp = make_proxy({"MESHPROXY_HEADER_TIMEOUT": "1s"})
    head = b"GET /live HTTP/1.1\r\nHost: admin\r\nX-Slow: " + b"a" * 40
    sock = socket.create_connection(mp.admin, timeout=5)
    try:
        start = time.monotonic()
        answered = b""
        for byte in head:  # bounded: about 20 s if the proxy never answered
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.3)
            try:
                answered = sock.recv(4096)
                break  # the answer (or a close)
            except TimeoutError:
                continue
        elapsed = time.monotonic() - start
        assert answered.startswith(b"HTTP/1.1 408 "), answered[:200]
        assert b"connection: close" in answered.lower()
        assert 0.9 <= elapsed < 3.0, f"408 after {elapsed:.2f}s with a 1s header timeout"
        sock.settimeout(3)
        try:
            rest = sock.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", "the connection stays open after the 408"
    finally:
        sock.close()
    assert mp.wait_line("admin request head not received in time", timeout=2)
    assert mp.admin_request("GET", "/live")[0] == 200


def test_a_whole_head_in_time_is_served_and_idle_connections_close(make_proxy):
    from helpers.clients import RawClient

    mp = make_proxy({"MESHPROXY_HEADER_TIMEOUT": "1s", "MESHPROXY_CLIENT_IDLE_TIMEOUT": "1s"})
    with RawClient(mp.admin) as client:
        client.send(b"GET /live HTTP/1.1\r\n")
        time.sleep(0.5)
        client.send(b"Host: admin\r\n\r\n")
        resp = client.final()
        assert resp.status == 200 and resp.data == b"live\n"
        start = time.monotonic()
        assert client.closed_within(4), "an idle admin connection outlived MESHPROXY_CLIENT_IDLE_TIMEOUT"
        assert time.monotonic() - start >= 0.5
