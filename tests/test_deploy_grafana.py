"""deploy/grafana/dashboards/*.json: what Grafana needs to import them (a schema version, unique ids,
panels on the grid, every query on the Prometheus data source variable, every variable defined), and
that they are what deploy/grafana/generate.py writes. tests/integration/test_grafana.py runs every
query against a real Prometheus scraping real proxies."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

GRAFANA = Path(__file__).resolve().parents[1] / "deploy" / "grafana"
FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN = {"__rate_interval", "__interval", "__range", "__range_s", "__all"}


def _generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_dashboards_the_issue_asks_for():
    uids = {_load(path)["uid"] for path in FILES}
    assert uids == {"meshproxy-top-line", "meshproxy-deployment", "meshproxy-routes", "meshproxy-authority",
                    "meshproxy-edges", "meshproxy-proxy", "meshproxy-identity"}
    assert len({_load(path)["title"] for path in FILES}) == len(FILES)


def test_the_files_are_what_the_generator_writes():
    rendered = _generator().render()
    assert sorted(rendered) == [path.name for path in FILES]
    for path in FILES:
        assert path.read_text() == rendered[path.name], f"{path.name}: run python deploy/grafana/generate.py"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dashboard_structure(path):
    board = _load(path)
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] == path.stem and board["title"]
    assert "id" not in board or board["id"] is None  # Grafana assigns it on import
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    assert "namespace" in variables
    for name, variable in variables.items():
        if name != "datasource":
            assert variable["type"] == "query" and variable["datasource"] == DS, name
            assert variable["definition"].startswith("label_values("), name
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            assert panel["panels"] == [] and not panel.get("targets")
            continue
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS and target["expr"].strip(), panel["title"]
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= set(variables) | BUILTIN, (panel["title"], used - set(variables))
    for variable in variables.values():
        used = set(re.findall(r"\$\{?(\w+)", variable.get("definition", "")))
        assert used <= set(variables), variable["name"]


def test_queries_use_the_proxys_metric_names():
    """Each metric a query names is one the proxy exports (README, Metrics), not a Linkerd name it lacks."""
    known = {"request_total", "response_total", "response_latency_ms_bucket", "tcp_open_connections",
             "tcp_open_total", "tcp_close_total", "tcp_read_bytes_total", "tcp_write_bytes_total",
             "route_request_total", "route_retry_total", "route_response_total", "route_response_latency_ms_bucket",
             "route_retry_budget_available", "outbound_http_route_request_statuses_total",
             "outbound_http_route_request_duration_seconds_bucket", "outbound_http_route_retry_requests_total",
             "outbound_http_route_retry_successes_total", "outbound_http_route_retry_overflow_total",
             "outbound_http_route_retry_limit_exceeded_total", "outbound_http_balancer_endpoints",
             "outbound_http_balancer_queue_length", "process_cpu_seconds_total", "process_resident_memory_bytes",
             "process_open_fds", "process_start_time_seconds", "identity_cert_expiration_timestamp_seconds",
             "identity_cert_refresh_total",
             "tls_connections_total", "tls_handshake_errors_total", "inbound_http_authz_allow_total",
             "inbound_http_authz_deny_total", "inbound_http_route_not_found_total", "inbound_tcp_authz_deny_total"}
    seen: set[str] = set()
    for path in FILES:
        for panel in _load(path)["panels"]:
            for target in panel.get("targets", []):
                seen |= set(re.findall(r"([a-z_]+)\{", target["expr"]))
    assert seen <= known, seen - known
    # The families the issue names are all on a dashboard.
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
            "identity_cert_expiration_timestamp_seconds", "tls_handshake_errors_total", "tls_connections_total",
            "inbound_http_authz_deny_total"} <= seen
