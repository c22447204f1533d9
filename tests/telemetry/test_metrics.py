"""Tests of proxy/telemetry/metrics.py against the fast path's counters."""

from proxy.telemetry.counters import HttpStats, TcpStats
from proxy.telemetry.metrics import render


def _series(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_http_counts_classification_and_cumulative_latency_buckets():
    stats = HttpStats("outbound")
    stats.requests = 4
    stats.record_response(200, 0.5, False)
    stats.record_response(200, 3.5, False)
    stats.record_response(503, 12.0, True)
    stats.record_response(404, 60000.0, False)
    s = _series(render([stats], []).decode())
    assert s['request_total{direction="outbound"}'] == 4
    assert s['response_total{direction="outbound",status_code="200",classification="success"}'] == 2
    assert s['response_total{direction="outbound",status_code="503",classification="failure"}'] == 1
    assert s['response_total{direction="outbound",status_code="404",classification="success"}'] == 1
    assert s['response_latency_ms_bucket{direction="outbound",le="1"}'] == 1
    assert s['response_latency_ms_bucket{direction="outbound",le="4"}'] == 2
    assert s['response_latency_ms_bucket{direction="outbound",le="20"}'] == 3
    assert s['response_latency_ms_bucket{direction="outbound",le="50000"}'] == 3
    assert s['response_latency_ms_bucket{direction="outbound",le="+Inf"}'] == 4
    assert s['response_latency_ms_count{direction="outbound"}'] == 4
    assert abs(s['response_latency_ms_sum{direction="outbound"}'] - 60016.0) < 0.01


def test_tcp_series_and_process_metrics():
    tcp = TcpStats("inbound", "src")
    tcp.opened, tcp.closed, tcp.read_bytes, tcp.write_bytes = 5, 2, 100, 200
    text = render([], [tcp]).decode()
    s = _series(text)
    assert s['tcp_open_total{direction="inbound",peer="src"}'] == 5
    assert s['tcp_open_connections{direction="inbound",peer="src"}'] == 3
    assert s['tcp_read_bytes_total{direction="inbound",peer="src"}'] == 100
    assert s['tcp_write_bytes_total{direction="inbound",peer="src"}'] == 200
    assert s["process_resident_memory_bytes"] > 1_000_000
    assert "# TYPE tcp_open_connections gauge" in text


def test_out_of_range_status_is_counted_not_lost():
    stats = HttpStats("outbound")
    stats.record_response(1234, 1.0, True)
    assert stats.failure_counts[0] == 1
