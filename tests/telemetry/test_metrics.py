"""Tests of proxy/telemetry/metrics.py against the fast path's counters: values, label sets, family order."""

import errno

from prometheus_client.parser import text_string_to_metric_families

from proxy import errors
from proxy.telemetry.counters import HttpStats, RouteStats, TcpStats, error_code
from proxy.telemetry.metrics import render, with_labels


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


def test_grpc_status_and_error_labels_are_their_own_series():
    stats = HttpStats("inbound", 'direction="inbound",authority="a:80",tls="true",client_id="web"')
    stats.count(200, 0, 0, False)
    stats.count(200, 0, 0, False)
    stats.count(200, 14, 0, True)
    stats.count(502, -1, error_code(errors.ConnectRefused()), True)
    stats.count(503, -1, error_code(errors.NoEndpoints()), True)
    s = _series(render([stats], []).decode())
    base = 'direction="inbound",authority="a:80",tls="true",client_id="web"'
    assert s[f'response_total{{{base},status_code="200",classification="success",grpc_status="0"}}'] == 2
    assert s[f'response_total{{{base},status_code="200",classification="failure",grpc_status="14"}}'] == 1
    assert s[f'response_total{{{base},status_code="502",classification="failure",error="i/o",'
             'errno="ECONNREFUSED"}'] == 1
    assert s[f'response_total{{{base},status_code="503",classification="failure",error="failfast"}}'] == 1


def test_error_codes_name_linkerds_reasons():
    assert error_code(errors.ResponseTimeout()) == error_code(errors.RouteTimeout())
    assert error_code(errors.LoadShed()) != error_code(errors.NoEndpoints())
    assert error_code(errors.ClientError()) == 0  # the client's own bad request: no proxy error
    assert error_code(errors.Unauthorized()) != 0


def test_outcomes_past_the_table_count_as_other():
    stats = HttpStats("outbound")
    for status in range(100, 160):  # more distinct outcomes than a label set keeps
        stats.count(status, -1, 0, status >= 150)
    outcomes = stats.outcomes()
    kept = sum(n for *_, n in outcomes)
    assert kept + stats.other_successes + stats.other_failures == 60
    assert stats.other_successes + stats.other_failures > 0
    s = _series(render([stats], []).decode())
    other = [k for k in s if 'status_code="other"' in k]
    assert sum(s[k] for k in other) == stats.other_successes + stats.other_failures


def test_out_of_range_status_is_counted_not_lost():
    stats = HttpStats("outbound")
    stats.record_response(1234, 1.0, True)
    assert stats.outcomes() == [(0, -1, 0, True, 1)]


def test_tcp_series_close_errnos_lifetimes_and_process_metrics():
    tcp = TcpStats("inbound", "src")
    tcp.opened, tcp.read_bytes, tcp.write_bytes = 5, 100, 200
    tcp.close(0.0, 0)
    tcp.close(0.0, errno.ECONNRESET)
    text = render([], [tcp]).decode()
    s = _series(text)
    assert s['tcp_open_total{direction="inbound",peer="src"}'] == 5
    assert s['tcp_open_connections{direction="inbound",peer="src"}'] == 3
    assert s['tcp_read_bytes_total{direction="inbound",peer="src"}'] == 100
    assert s['tcp_write_bytes_total{direction="inbound",peer="src"}'] == 200
    assert s['tcp_close_total{direction="inbound",peer="src",classification="success"}'] == 1
    assert s['tcp_close_total{direction="inbound",peer="src",classification="failure",errno="ECONNRESET"}'] == 1
    assert s['tcp_connection_duration_ms_count{direction="inbound",peer="src"}'] == 2
    assert s["process_resident_memory_bytes"] > 1_000_000
    assert "# TYPE tcp_open_connections gauge" in text
    assert "# TYPE tcp_connection_duration_ms histogram" in text


def test_every_family_is_whole_with_one_help_and_type():
    sets = [HttpStats("inbound"), HttpStats("outbound", 'direction="outbound",authority="x:80"')]
    for s in sets:
        s.record_response(200, 1.0, False)
    tcp = [TcpStats("inbound", "src"), TcpStats("outbound", "dst")]
    text = render(sets, tcp).decode()
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    # 3 HTTP, 6 TCP and 4 process families, none split in two.
    assert len(names) == len(set(names)) == 13, names


def test_workload_labels_go_first_on_every_sample():
    lines = ["# HELP a_total x", "# TYPE a_total counter", 'a_total{direction="in"} 1', "b 2", "c{} 3"]
    assert with_labels(lines, 'namespace="shop",pod="p"') == [
        "# HELP a_total x", "# TYPE a_total counter", 'a_total{namespace="shop",pod="p",direction="in"} 1',
        'b{namespace="shop",pod="p"} 2', 'c{namespace="shop",pod="p"} 3']


def test_route_stats_keep_their_buckets():
    stats = RouteStats("web:80", "get")
    stats.record(2.5, False)
    stats.record(700.0, True)
    assert (stats.successes, stats.failures, stats.latency_count) == (1, 1, 2)
    assert stats.latency_buckets[2] == 1  # 2.5 ms: the 3 ms bucket (1, 2, 3, ...)
