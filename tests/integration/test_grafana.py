"""Every query of the Grafana dashboards (deploy/grafana/dashboards) and every rule of the alerts
(deploy/prometheus/alerts.yml) against a real Prometheus scraping two real meshed proxies (web calls
api with mutual TLS under steady load, helpers/vizmesh.py), the template variables filled in as
Grafana fills them: each query must parse, and each that the test traffic feeds must return series.

api's proxy admits only authenticated callers (all-authenticated), and the test sends it a few plain
requests besides, so the denial panels and the authorization alert's expression have data too.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from helpers.meshproxy import REPO
from helpers.vizmesh import SERVICE, query, viz_mesh
from helpers.vizmesh import prometheus as start_prometheus

pytestmark = pytest.mark.timeout(240)

DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
# What Grafana puts in place of its variables: one namespace, both deployments picked (a multi-value
# variable becomes a regex alternation), one authority (regex-escaped), and the intervals of a 1 s
# scrape interval on a short range.
VALUES = {
    "$__rate_interval": "4s",
    "$__interval": "1s",
    "$__range": "20s",
    "$namespace": "(default)",
    "$deployment": "(api|web)",
    "$authority": SERVICE.replace(".", "\\\\."),
}
# Families that count only failures the test mesh has none of (mesh TLS handshakes, connections
# refused by policy or closed by an error, requests matching no route): their queries must parse, and
# may be empty. Every other query must return series.
QUIET = ("tls_handshake_errors_total", "inbound_http_route_not_found_total", "inbound_tcp_authz_deny_total",
         "tcp_close_total")


def fill(expr: str) -> str:
    for name in sorted(VALUES, key=len, reverse=True):
        expr = expr.replace(name, VALUES[name])
    assert "$" not in expr, expr
    return expr


def _queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((board["uid"], f"{panel['title']} {target['refId']}", target["expr"]))
    return out


def _alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule.get("alert") or rule["record"], rule["expr"]) for group in rules for rule in group["rules"]]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with viz_mesh(tmp_path_factory.mktemp("grafana"), api_default_policy="all-authenticated") as m:
        yield m


@pytest.fixture(scope="module")
def prometheus(mesh, tmp_path_factory):
    with start_prometheus(tmp_path_factory.mktemp("prometheus"), [mesh.web.admin, mesh.api.admin],
                          rule_files=[ALERTS]) as url:
        if url is None:
            pytest.skip("Debian's prometheus package is not installed (no prometheus binary on PATH)")
        # Plain requests straight to api's inbound port, which admits only mutual TLS: one, then (once
        # Prometheus holds the series) four more, so the denial counter has a rate.
        assert _plain_request(mesh) == 403
        deadline = time.monotonic() + 20
        while not query(url, "inbound_http_authz_deny_total"):
            assert time.monotonic() < deadline, "Prometheus did not scrape the denial within 20 s"
            time.sleep(0.5)
        assert [_plain_request(mesh) for _ in range(4)] == [403] * 4
        # Enough scrapes for rates over the 4 s rate interval and the 20 s range.
        deadline = time.monotonic() + 40
        while not query(url, "sum(rate(inbound_http_authz_deny_total[20s])) > 0") \
                or not query(url, 'sum(rate(request_total{direction="outbound"}[20s])) > 0'):
            assert time.monotonic() < deadline, "Prometheus has no rates after 40 s"
            time.sleep(1)
        time.sleep(5)
        yield url


def _plain_request(mesh) -> int | str:
    conn = http.client.HTTPConnection(*mesh.api.inbound, timeout=10)
    try:
        conn.request("GET", "/ok", headers={"Host": SERVICE})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as err:
        return repr(err)
    finally:
        conn.close()


def _check(url: str, expr: str) -> list:
    try:
        return query(url, expr)
    except urllib.error.HTTPError as err:
        pytest.fail(f"Prometheus refused {expr!r}: {err.code} {err.read().decode()[:500]}")


def test_every_dashboard_query_parses_and_the_fed_ones_have_series(prometheus):
    assert len(_queries()) >= 60
    empty = []
    for uid, where, expr in _queries():
        expr = fill(expr)
        result = _check(prometheus, expr)
        if not result and not any(quiet in expr for quiet in QUIET):
            empty.append(f"{uid} / {where}: {expr}")
    assert not empty, "queries without series:\n" + "\n".join(empty)


def test_the_numbers_are_the_loads(prometheus):
    """A few panels read back what the load does: about 90% success and 20 requests a second into api,
    all of it over mutual TLS between web and api."""
    def one(uid: str, title: str) -> list:
        [expr] = [e for u, w, e in _queries() if u == uid and w == title]
        return _check(prometheus, fill(expr))

    by_deployment = {s["metric"]["deployment"]: float(s["value"][1])
                     for s in one("meshproxy-top-line", "Success rate by deployment A")}
    assert 0.8 <= by_deployment["api"] <= 0.97, by_deployment
    [edge] = [s for s in one("meshproxy-edges", "Requests per second by edge A")
              if s["metric"].get("dst_deployment") == "api"]
    assert edge["metric"]["deployment"] == "web" and edge["metric"]["tls"] == "true", edge
    assert 10 <= float(edge["value"][1]) <= 30, edge
    [cert] = one("meshproxy-identity", "Soonest certificate expiry A")
    assert 3600 < float(cert["value"][1]) <= 24 * 3600 + 60, cert
    [rss] = [s for s in one("meshproxy-proxy", "Resident memory A") if s["metric"]["pod"] == "api-0"]
    assert float(rss["value"][1]) > 10 * 2 ** 20, rss


def test_template_variables_find_values(prometheus):
    """Grafana's label_values(selector, label) is Prometheus's label values API with match[]."""
    seen: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"]).groups()
            params = urllib.parse.urlencode({"match[]": fill(selector)})
            with urllib.request.urlopen(f"{prometheus}/api/v1/label/{label}/values?{params}", timeout=5) as r:
                seen.setdefault(variable["name"], set()).update(json.loads(r.read())["data"])
    assert seen["namespace"] == {"default"}
    assert seen["deployment"] == {"api", "web"}
    assert SERVICE in seen["authority"]


def test_every_rule_loads_and_evaluates(prometheus):
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=5) as r:
        groups = json.loads(r.read())["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == {name for name, _ in _alert_exprs()}
    deadline = time.monotonic() + 10
    while any(rule.get("health") != "ok" for rule in loaded.values()) and time.monotonic() < deadline:
        time.sleep(1)
        with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=5) as r:
            loaded = {rule["name"]: rule for g in json.loads(r.read())["data"]["groups"] for rule in g["rules"]}
    assert all(rule["health"] == "ok" for rule in loaded.values()), \
        {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"}
    for _, expr in _alert_exprs():
        _check(prometheus, expr)
    # The recorded failure ratio is the load's; nothing here should page.
    [ratio] = [s for s in _check(prometheus, "deployment:response_failure:ratio_rate5m")
               if s["metric"]["deployment"] == "api"]
    assert 0.03 <= float(ratio["value"][1]) <= 0.2, ratio
    # The latency SLO's bucket (le="500") is one the proxy exports: a loopback app answers within it.
    [slow] = [s for s in _check(prometheus, "deployment:response_slow:ratio_rate5m")
              if s["metric"]["deployment"] == "api"]
    assert 0 <= float(slow["value"][1]) < 0.05, slow
    with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=5) as r:
        firing = {a["labels"]["alertname"] for a in json.loads(r.read())["data"]["alerts"] if a["state"] == "firing"}
    assert "MeshproxyProxyDown" not in firing and "MeshproxyCertificateExpiring" not in firing, firing


def test_a_stopped_proxy_is_down(prometheus, mesh):
    """Last: the proxy-down alert's expression turns true for a proxy that stops answering."""
    mesh.web.kill()
    deadline = time.monotonic() + 15
    while not query(prometheus, 'up{job="meshproxy"} == 0'):
        assert time.monotonic() < deadline, "Prometheus still scrapes a stopped proxy"
        time.sleep(0.5)
    [down] = query(prometheus, [expr for name, expr in _alert_exprs() if name == "MeshproxyProxyDown"][0])
    assert down["metric"]["instance"] == f"127.0.0.1:{mesh.web.admin[1]}"


