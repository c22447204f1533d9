"""proxy/viz stat, routes and edges over a canned source: which queries they ask, how rows are made
and printed (Linkerd's columns and number formats), edges joined from both sides."""

from __future__ import annotations

import asyncio

from proxy.viz import edges, resources, routes, stat, table
from proxy.viz.query import Query, Vector, matches


class Canned:
    """A source answering each metric from fixed series (labels, value), filtered and summed like PromQL."""

    def __init__(self, series: dict[str, list[tuple[dict[str, str], float]]], seconds: float = 10.0,
                 proxies: dict[tuple[str, ...], tuple[int, int]] | None = None) -> None:
        self.series, self._seconds, self._proxies = series, seconds, proxies or {}
        self.asked: list[Query] = []

    async def evaluate(self, query: Query, window: float) -> Vector:
        self.asked.append(query)
        name = query.metric + (f"_q{query.q}" if query.func == "quantile" else "")
        sums: dict[tuple[str, ...], float] = {}
        for labels, value in self.series.get(name, []):
            if matches(labels, query.matchers):
                key = tuple(labels.get(b, "") for b in query.by)
                sums[key] = sums.get(key, 0.0) + value
        return [({b: v for b, v in zip(query.by, key, strict=True) if v}, value) for key, value in sums.items()]

    def seconds(self, window: float) -> float:
        return self._seconds

    async def proxies(self, by, window):
        return self._proxies


def test_number_formats_are_linkerds():
    assert (table.percent(1.0), table.percent(0.98765), table.percent(None)) == ("100.00%", "98.77%", "-")
    assert (table.rps(2.05), table.ms(122.6), table.ms(0.4), table.byte_rate(74.63)) == ("2.0rps", "123ms", "0ms",
                                                                                          "74.6B/s")


def test_table_layout_matches_linkerds_golden_file():
    row = stat.StatRow("emojivoto", "deployment", "emoji", (1, 2), 1.0, 2.0, (123.0, 123.0, 123.0), 123.0)
    assert stat.render([row]) == (
        "NAME    MESHED   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n"
        "emoji      1/2   100.00%   2.0rps         123ms         123ms         123ms        123")
    assert stat.render([]) == "No traffic found."


def _inbound(deploy: str, ok: float, failed: float) -> list[tuple[dict[str, str], float]]:
    base = {"direction": "inbound", "namespace": "default", "deployment": deploy}
    return [({**base, "classification": "success"}, ok), ({**base, "classification": "failure"}, failed)]


def test_stat_deploy_rows():
    source = Canned({
        "response_total": _inbound("web", 95, 5) + _inbound("api", 10, 0),
        "response_latency_ms_q0.5": [({"direction": "inbound", "namespace": "default", "deployment": "web"}, 3.0)],
        "response_latency_ms_q0.95": [({"direction": "inbound", "namespace": "default", "deployment": "web"}, 9.0)],
        "response_latency_ms_q0.99": [({"direction": "inbound", "namespace": "default", "deployment": "web"}, 9.8)],
        "tcp_open_connections": [({"direction": "inbound", "peer": "src", "namespace": "default",
                                   "deployment": "web"}, 2.0)],
    }, seconds=10.0, proxies={("default", "web"): (1, 1), ("default", "api"): (1, 1), ("default", "idle"): (0, 1)})
    rows = asyncio.run(stat.stat(source, stat.StatRequest(resources.parse("deploy"))))
    assert [r.name for r in rows] == ["api", "idle", "web"]
    web = rows[2]
    assert (web.success, web.rps, web.latency, web.tcp_conn, web.meshed) == (0.95, 10.0, (3.0, 9.0, 9.8), 2.0, (1, 1))
    assert rows[1].meshed == (0, 1) and rows[1].rps is None
    lines = stat.render(rows, wide=True).splitlines()
    assert lines[0].split()[-2:] == ["READ_BYTES/SEC", "WRITE_BYTES/SEC"]
    assert lines[2].split() == ["idle", "0/1", "-", "-", "-", "-", "-", "-", "-", "-"]
    assert lines[3].split()[:7] == ["web", "1/1", "95.00%", "10.0rps", "3ms", "9ms", "10ms"]
    asked = {qq.metric: qq for qq in source.asked}
    assert ("direction", "=", "inbound") in asked["response_total"].matchers
    assert ("namespace", "=", "default") in asked["response_total"].matchers


def test_stat_to_and_from_ask_the_callers_outbound_series():
    to = stat.plan(stat.StatRequest(resources.parse("deploy/web"), to=resources.parse("deploy/api")))
    assert to.matchers == (("direction", "=", "outbound"), ("deployment", "=", "web"), ("namespace", "=", "default"),
                           ("dst_deployment", "=", "api"), ("dst_namespace", "=", "default"))
    assert (to.ns_label, to.name_label, to.tcp_peer) == ("namespace", "deployment", "dst")
    frm = stat.plan(stat.StatRequest(resources.parse("deploy"), from_=resources.parse("deploy/web"),
                                     from_namespace="default"))
    assert frm.matchers == (("direction", "=", "outbound"), ("deployment", "=", "web"), ("namespace", "=", "default"),
                            ("dst_namespace", "=", "default"))
    assert (frm.ns_label, frm.name_label) == ("dst_namespace", "dst_deployment")
    svc = stat.plan(stat.StatRequest(resources.parse("svc/api"), namespace=None))
    assert svc.matchers == (("direction", "=", "outbound"), ("dst_service", "=", "api"))


def test_routes_effective_and_actual():
    base = {"direction": "outbound", "dst": "api.default.svc.cluster.local:80"}
    source = Canned({
        "route_response_total": [({**base, "rt_route": "GET /users", "classification": "success"}, 90),
                                 ({**base, "rt_route": "GET /users", "classification": "failure"}, 10),
                                 ({**base, "rt_route": "default", "classification": "success"}, 20)],
        "route_retry_total": [({**base, "rt_route": "GET /users"}, 20)],
        "route_response_latency_ms_q0.5": [({**base, "rt_route": "GET /users"}, 4.0)],
    }, seconds=10.0)
    rows = asyncio.run(routes.routes(source, routes.matchers(None, None, None), 60.0))
    assert [r.route for r in rows] == ["GET /users", "[DEFAULT]"]
    users = rows[0]
    assert (users.success, users.rps, users.actual_success, users.actual_rps) == (0.9, 10.0, 0.75, 12.0)
    assert users.service == "api" and users.latency == (4.0, None, None)
    lines = routes.render(rows, wide=True).splitlines()
    assert lines[0].split()[:6] == ["ROUTE", "SERVICE", "EFFECTIVE_SUCCESS", "EFFECTIVE_RPS", "ACTUAL_SUCCESS",
                                    "ACTUAL_RPS"]
    assert lines[1].split()[2:] == ["api", "90.00%", "10.0rps", "75.00%", "12.0rps", "4ms", "-", "-"]
    assert "[DEFAULT]" in lines[2] and "100.00%" in lines[2]


ID_WEB = "web.default.serviceaccount.identity.cluster.local"
ID_API = "api.default.serviceaccount.identity.cluster.local"


def test_edges_join_both_sides():
    source = Canned({"request_total": [
        ({"direction": "outbound", "namespace": "default", "deployment": "web", "dst_namespace": "default",
          "dst_deployment": "api", "tls": "true", "server_id": ID_API}, 30),
        ({"direction": "inbound", "namespace": "default", "deployment": "api", "tls": "true", "client_id": ID_WEB}, 30),
        ({"direction": "inbound", "namespace": "default", "deployment": "web", "tls": "no_identity",
          "no_tls_reason": "no_tls_from_remote"}, 4),
        ({"direction": "inbound", "namespace": "default", "deployment": "db"}, 0),  # the catch-all: no caller
        ({"direction": "outbound", "namespace": "default", "deployment": "api", "dst_namespace": "default",
          "dst_deployment": "db", "tls": "no_identity", "no_tls_reason": "not_provided_by_service_discovery"}, 2),
    ]})
    rows = asyncio.run(edges.edges(source, resources.parse("deploy"), "default", 60.0))
    assert [(e.src, e.dst, e.client_id, e.server_id, e.secured) for e in rows] == [
        ("web", "api", ID_WEB, ID_API, True),
        ("api", "db", "", "", False),
        ("-", "web", "", "", False),
    ]
    text = edges.render(rows, wide=True).splitlines()
    assert text[0].split() == ["SRC", "DST", "SRC_NS", "DST_NS", "CLIENT_ID", "SERVER_ID", "SECURED"]
    assert text[1].split() == ["web", "api", "default", "default", "web.default", "api.default", "\u221a"]
    assert text[2].split()[-1] == "not_provided_by_service_discovery"
    assert text[3].split()[-1] == "no_tls_from_remote"


def test_routes_without_route_metrics_are_the_default_route():
    # A proxy without a policy file has no route_* series: its requests went by the default route.
    base = {"direction": "outbound", "authority": "api.default.svc.cluster.local:80"}
    source = Canned({"response_total": [({**base, "classification": "success"}, 40),
                                        ({"direction": "outbound", "classification": "failure"}, 3)],
                     "response_latency_ms_q0.5": [(base, 2.0)]}, seconds=10.0)
    [row] = asyncio.run(routes.routes(source, routes.matchers(None, None, "api.default.svc.cluster.local:80"), 60.0))
    assert (row.route, row.service, row.success, row.rps, row.actual_rps) == ("[DEFAULT]", "api", 1.0, 4.0, 4.0)
    assert row.latency[0] == 2.0
    assert ("authority", "=", "api.default.svc.cluster.local:80") in source.asked[-1].matchers
