"""Tests of proxy/telemetry/metrics.py against the fast path's counters: values, label sets, family order."""

import errno
import os

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
    from proxy.telemetry.counters import ERROR_LABELS, ROUTE_ERRORS

    # The legacy families call every timeout a response timeout; the route families tell them apart.
    timeouts = (errors.ResponseTimeout(), errors.RouteTimeout(), errors.RouteIdleTimeout())
    assert {ERROR_LABELS[error_code(err)] for err in timeouts} == {("response timeout", "")}
    assert [ROUTE_ERRORS[error_code(err)] for err in timeouts] == [
        "RESPONSE_HEADERS_TIMEOUT", "REQUEST_TIMEOUT", "IDLE_TIMEOUT"]
    assert error_code(errors.LoadShed()) != error_code(errors.NoEndpoints())
    assert error_code(errors.ClientError()) == 0  # the client's own bad request: no proxy error
    assert error_code(errors.Unauthorized()) != 0


def test_a_stream_cut_after_its_head_is_named_by_how_it_ended():
    from proxy.telemetry.counters import ROUTE_ERRORS, stream_error_code

    cases = [(errors.StreamReset(0x2), "RESET"), (errors.StreamReset(0x0), "RESET"),
             (errors.StreamReset(0x8), "CANCEL"), (errors.StreamReset(0x7), "REFUSED"),
             (errors.StreamReset(0xB), "ENHANCE_YOUR_CALM"),
             (errors.UpstreamReset(), "IO"), (errors.BadResponse(), "UNKNOWN"),
             (errors.Http1ConnectionLost(), "UNKNOWN"),
             (errors.RouteTimeout(), "REQUEST_TIMEOUT"), (errors.RouteIdleTimeout(), "IDLE_TIMEOUT"),
             (errors.ClientError(), "UNKNOWN")]
    assert [ROUTE_ERRORS[stream_error_code(err)] for err, _ in cases] == [name for _, name in cases]
    assert errors.StreamReset(0x8).reset_code == 0x8 and errors.StreamReset(0).reset_code == 0x2


def test_a_stream_failed_before_its_head_is_named_as_linkerd_names_its_h2_error():
    from proxy.telemetry.counters import ERROR_LABELS, ROUTE_ERRORS

    # Before the head the route families name the upstream's HTTP/2 error as after it (a GOAWAY apart
    # from a reset); the legacy families keep calling them all i/o.
    cases = [(errors.StreamReset(0x7), "REFUSED"), (errors.StreamGoAway(0), "GO_AWAY"),
             (errors.StreamGoAway(0x2), "GO_AWAY"), (errors.StreamReset(0x8), "CANCEL"),
             (errors.StreamReset(0x1), "RESET"), (errors.UpstreamReset(), "IO"),
             (errors.Http1ConnectionLost(), "UNKNOWN")]
    assert [ROUTE_ERRORS[error_code(err)] for err, _ in cases] == [name for _, name in cases]
    assert {ERROR_LABELS[error_code(err)] for err, _ in cases} == {("i/o", "")}


def test_a_cut_response_names_its_h2_reason_in_the_legacy_error_label():
    from proxy.telemetry.counters import ERROR_LABELS, cut_error_code

    cases = [(errors.StreamReset(0x8), "h2(CANCEL)"), (errors.StreamReset(0x0), "h2(NO_ERROR)"),
             (errors.StreamReset(0xB), "h2(ENHANCE_YOUR_CALM)"), (errors.StreamReset(0xD), "h2(HTTP_1_1_REQUIRED)"),
             (errors.StreamReset(0x7777), "h2(INTERNAL_ERROR)"),  # undefined: bounded, as RFC 9113 allows
             (errors.UpstreamReset(), "unclassified"), (errors.Http1ConnectionLost(), "unclassified"),
             (errors.RouteTimeout(), "unclassified"), (errors.BadResponse(), "unclassified")]
    assert [ERROR_LABELS[cut_error_code(err)][0] for err, _ in cases] == [name for _, name in cases]
    stats = HttpStats("outbound", 'direction="outbound"')
    for err, _ in cases:
        stats.count(200, -1, cut_error_code(err), True)
    s = _series(render([stats], []).decode())
    assert s['response_total{direction="outbound",status_code="200",classification="failure",'
             'error="h2(CANCEL)"}'] == 1
    assert s['response_total{direction="outbound",status_code="200",classification="failure",'
             'error="unclassified"}'] == 4
    assert stats.outcomes()[-1] == (200, -1, cut_error_code(errors.UpstreamReset()), True, 4)


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
    # 3 HTTP, 6 TCP, 4 process and 4 garbage-collector families, none split in two.
    assert len(names) == len(set(names)) == 17, names


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


class _Policy:
    """What render_routes reads of an OutboundPolicy: the registry and the budgets."""

    def __init__(self, registry):
        self.registry = registry

    def budgets(self, now):
        return iter(())


def test_linkerd_route_families_sum_an_httproutes_rules_and_parse_whole():
    from proxy.outbound.policy import Registry, route_labels
    from proxy.policy.model import DEFAULT_ROUTE, Route
    from proxy.telemetry.counters import ROUTE_ERRORS
    from proxy.telemetry.labels import parent_labels
    from proxy.telemetry.metrics import render_routes

    parent = parent_labels("web.shop.svc.cluster.local:80")
    rules = [Route(name=f"shop/web-route#{i}", source="HTTPRoute/shop/web-route", group="gateway.networking.k8s.io")
             for i in range(2)]
    registry = Registry(10)
    a, b = (registry.route_stats("web.shop.svc.cluster.local:80", r.name, route_labels(parent, r)) for r in rules)
    default = registry.route_stats("web.shop.svc.cluster.local:80", "default", route_labels(parent, DEFAULT_ROUTE))
    profile = registry.route_stats("web.shop.svc.cluster.local:80", "get",
                                   route_labels(parent, Route(name="get", source="ServiceProfile/web")))
    assert a.labels == b.labels and profile.labels == ""
    a.record(20.0, False)
    b.record(700.0, True)
    b.record(3000.0, True)
    default.record(1.0, False)
    # Linkerd's request duration runs to the response's end, not its head (a body trickled for 300 ms), and
    # its statuses are counted then: the head's status, and how the stream ended (0: the proxy answered itself).
    a.end(320.0, 200, -1, 0)
    b.end(700.0, 503, -1, 0)
    b.end(3000.0, 0, -1, ROUTE_ERRORS.index("RESPONSE_HEADERS_TIMEOUT"))
    a.end(40.0, 200, -1, ROUTE_ERRORS.index("RESET"))  # reset by its backend after a 200 head
    default.end(1.0, 200, -1, 0)
    a.retries, a.retry_successes, b.retry_limit_exceeded = 2, 1, 1
    out: list[str] = []
    render_routes(out, _Policy(registry))
    text = "\n".join(out) + "\n"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # 4 route_* families, 10 outbound_http_route_*, 10 outbound_grpc_route_* and 3 budget gauges, each whole.
    assert len(families) == 27, sorted(families)
    series = _series(text)
    web = (f'{parent},route_group="gateway.networking.k8s.io",route_kind="HTTPRoute",route_namespace="shop",'
           f'route_name="web-route",hostname=""')
    assert 'parent_name="web",parent_port="80"' in web
    assert series[f'outbound_http_route_request_statuses_total{{{web},http_status="200",error=""}}'] == 1
    assert series[f'outbound_http_route_request_statuses_total{{{web},http_status="503",error=""}}'] == 1
    assert series[f'outbound_http_route_request_statuses_total{{{web},http_status="",'
                  f'error="RESPONSE_HEADERS_TIMEOUT"}}'] == 1
    assert series[f'outbound_http_route_request_statuses_total{{{web},http_status="200",error="RESET"}}'] == 1
    assert [series[f'outbound_http_route_request_duration_seconds_bucket{{{web},le="{le}"}}']
            for le in ("0.05", "0.5", "1.0", "10.0", "+Inf")] == [1, 2, 3, 4, 4]
    assert series[f"outbound_http_route_request_duration_seconds_sum{{{web}}}"] == 4.06
    # The older route_response_latency_ms stays Linkerd's time to the response head.
    assert series['route_response_latency_ms_bucket{direction="outbound",dst="web.shop.svc.cluster.local:80",'
                  'rt_route="shop/web-route#0",le="20"}'] == 1
    assert series[f"outbound_http_route_retry_requests_total{{{web}}}"] == 2
    assert series[f"outbound_http_route_retry_successes_total{{{web}}}"] == 1
    assert series[f"outbound_http_route_retry_limit_exceeded_total{{{web}}}"] == 1
    http = f'{parent},route_group="",route_kind="default",route_namespace="",route_name="http",hostname=""'
    assert series[f'outbound_http_route_request_statuses_total{{{http},http_status="200",error=""}}'] == 1
    assert 'route_name="get"' not in "".join(line for line in out if line.startswith("outbound_http_route"))


def test_backend_stats_use_linkerds_backend_buckets_and_render_by_grpc_status():
    from proxy.telemetry.counters import BACKEND_BUCKETS_MS, ROUTE_ERRORS, BackendStats
    from proxy.telemetry.metrics import render_linkerd_routes

    assert BACKEND_BUCKETS_MS == (25, 50, 100, 250, 500, 1000, 10000)
    b = BackendStats('backend_name="echo-v1"', grpc=True)
    b.requests = 4
    for ms, grpc, error in ((10.0, 0, 0), (30.0, 14, 0), (20000.0, -1, 3)):
        b.end(ms, 200, grpc, error)
    for size in (5, 128, 129, 16384):  # a response head, then its body for 300 ms
        b.frame(size)
    b.end(300.0, 200, 0, 0)
    assert list(b.duration_buckets) == [1, 1, 0, 0, 1, 0, 0, 1]
    assert list(b.frame_buckets) == [2, 1, 0, 1] and b.frame_sum == 16646 and b.frame_count == 4
    out: list[str] = []
    render_linkerd_routes(out, [], [b])
    text = "\n".join(out) + "\n"
    assert len(list(text_string_to_metric_families(text))) == 20
    series = _series(text)
    name = "outbound_grpc_route_backend_response_statuses_total"
    assert series[f'{name}{{backend_name="echo-v1",grpc_status="OK",error=""}}'] == 2
    assert series[f'{name}{{backend_name="echo-v1",grpc_status="UNAVAILABLE",error=""}}'] == 1
    timeout = ROUTE_ERRORS[3]
    assert series[f'{name}{{backend_name="echo-v1",grpc_status="UNKNOWN",error="{timeout}"}}'] == 1
    assert series['outbound_grpc_route_backend_requests_total{backend_name="echo-v1"}'] == 4
    hist = "outbound_grpc_route_backend_response_duration_seconds"
    assert [series[f'{hist}_bucket{{backend_name="echo-v1",le="{le}"}}']
            for le in ("0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "10.0", "+Inf")] == [1, 2, 2, 2, 3, 3, 3, 4]
    frames = "outbound_grpc_route_backend_response_frame_size_bytes"
    assert [series[f'{frames}_bucket{{backend_name="echo-v1",le="{le}"}}']
            for le in ("128.0", "1024.0", "10240.0", "+Inf")] == [2, 3, 3, 4]
    assert series[f'{frames}_sum{{backend_name="echo-v1"}}'] == 16646
    assert not any(line.startswith("outbound_http_route_backend") for line in out)


def test_the_collector_families_count_collections_by_generation_and_the_frozen_heap():
    import gc

    from proxy.telemetry import memory
    from proxy.telemetry.metrics import render_gc

    out: list[str] = []
    before = gc.get_stats()[0]["collections"]
    gc.collect(0)
    render_gc(out)
    families = {f.name: f for f in text_string_to_metric_families("\n".join(out) + "\n")}
    collections = {s.labels["generation"]: s.value for s in families["python_gc_collections"].samples}
    assert set(collections) == {"0", "1", "2"}
    assert collections["0"] >= before + 1
    assert [s.value for s in families["python_gc_objects_frozen"].samples] == [memory.frozen_objects()]


def test_open_fds_counts_the_descriptors_opened_and_closed():
    import socket

    from proxy.telemetry.metrics import open_fds

    before = open_fds()
    assert abs(before - (len(os.listdir("/proc/self/fd")) - 1)) <= 1  # the listing holds one more open
    socks = [socket.socket() for _ in range(100)]
    try:
        assert open_fds() == before + 100
    finally:
        for s in socks:
            s.close()
    assert open_fds() == before
