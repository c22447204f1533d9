"""``meshproxy viz stat|routes|edges`` against real proxies: web's proxy (A) calls the api service
meshed behind api's proxy (B) with mutual TLS, under steady bounded load (every tenth request a 500),
and the commands print what the load did. Then a real Prometheus scrapes both proxies and
``--prometheus`` must agree with the embedded mode for the same traffic.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time

import pytest

from helpers.clients import clean_env
from helpers.meshproxy import REPO
from helpers.ports import free_port
from helpers.vizmesh import API_ID, FAIL_EVERY, RATE, SERVICE, WEB_ID, query, viz_mesh
from helpers.vizmesh import prometheus as start_prometheus
from proxy.viz import promql

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with viz_mesh(tmp_path_factory.mktemp("viz")) as m:
        yield m.web, m.api, m.endpoints, m.load


def viz(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "viz", *args], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def _sources(mesh) -> list[str]:
    a, _, endpoints, _ = mesh
    return ["--endpoints", str(endpoints), "--proxy", f"127.0.0.1:{a.admin[1]}"]


def _rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines()[1:] if line.strip()}


def _ms(cell: str) -> int:
    assert cell.endswith("ms"), cell
    return int(cell[:-2])


def test_stat_deploy_shows_the_load(mesh):
    run = viz("stat", "deploy", "--interval", "4s", *_sources(mesh))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99",
                                "TCP_CONN"]
    rows = _rows(run.stdout)
    api = rows["api"]
    assert api[1] == "1/1"
    success = float(api[2].rstrip("%"))
    assert 100 - 100 / FAIL_EVERY - 3 <= success <= 100 - 100 / FAIL_EVERY + 3, run.stdout
    assert abs(float(api[3].removesuffix("rps")) - RATE) <= RATE * 0.25, run.stdout
    p50, p95, p99 = (_ms(c) for c in api[4:7])
    assert p50 <= p95 <= p99, run.stdout
    assert int(api[7]) >= 1  # A's connection into B
    # web's proxy answers but nothing calls web: a row without numbers.
    assert rows["web"][1:] == ["1/1", "-", "-", "-", "-", "-", rows["web"][7]], run.stdout


def test_stat_to_from_and_services(mesh):
    to = viz("stat", "deploy/web", "--to", "deploy/api", "-o", "wide", "--interval", "3s", *_sources(mesh))
    assert to.returncode == 0, to.stderr
    web = _rows(to.stdout)["web"]
    assert web[1] == "1/1", to.stdout
    assert abs(float(web[3].removesuffix("rps")) - RATE) <= RATE * 0.25, to.stdout
    assert web[-2].endswith("B/s") and float(web[-1].removesuffix("B/s")) > 0, to.stdout
    frm = viz("stat", "deploy", "--from", "deploy/web", "--interval", "3s", *_sources(mesh))
    assert frm.returncode == 0 and "api" in _rows(frm.stdout), frm.stdout + frm.stderr
    svc = viz("stat", "svc", "-o", "json", "--interval", "3s", *_sources(mesh))
    assert svc.returncode == 0, svc.stderr
    [row] = json.loads(svc.stdout)
    assert (row["namespace"], row["kind"], row["name"]) == ("default", "service", "api")
    assert abs(row["rps"] - RATE) <= RATE * 0.25 and 0.85 <= row["success"] <= 0.95, row


def test_routes_per_route(mesh):
    run = viz("routes", "deploy/web", "-o", "wide", "--interval", "4s", *_sources(mesh))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["ROUTE", "SERVICE", "EFFECTIVE_SUCCESS", "EFFECTIVE_RPS", "ACTUAL_SUCCESS",
                                "ACTUAL_RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
    rows = _rows(run.stdout)
    assert list(rows) == ["ok", "retried", "[DEFAULT]"], run.stdout
    assert rows["retried"][1:] == ["api"] + ["-"] * 7, run.stdout  # a route without traffic, as Linkerd shows it
    ok, default = rows["ok"], rows["[DEFAULT]"]
    expected_ok = RATE * (FAIL_EVERY - 1) / FAIL_EVERY
    assert ok[1] == "api" and ok[2] == "100.00%" and abs(float(ok[3][:-3]) - expected_ok) <= RATE * 0.25, run.stdout
    assert default[2] == "0.00%" and abs(float(default[3][:-3]) - RATE / FAIL_EVERY) <= 1.5, run.stdout
    assert ok[2:4] == ok[4:6], run.stdout  # no retries configured: actual is effective
    p50, p95, p99 = (_ms(c) for c in ok[6:9])
    assert p50 <= p95 <= p99


def test_edges_are_mutual_tls_with_both_identities(mesh):
    run = viz("edges", "deploy", "-o", "wide", "--interval", "2s", *_sources(mesh))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["SRC", "DST", "SRC_NS", "DST_NS", "CLIENT_ID", "SERVER_ID", "SECURED"]
    assert [line.split() for line in lines[1:]] == [
        ["web", "api", "default", "default", "web.default", "api.default", "\u221a"]], run.stdout
    as_json = json.loads(viz("edges", "deploy", "-o", "json", "--interval", "1s", *_sources(mesh)).stdout)
    edge = next(e for e in as_json if (e["src"], e["dst"]) == ("web", "api"))
    assert (edge["client_id"], edge["server_id"], edge["secured"]) == (WEB_ID, API_ID, True)


def test_a_proxy_that_does_not_answer_is_reported(mesh):
    dead = f"127.0.0.1:{free_port()}"
    run = viz("stat", "pod", "--interval", "1s", *_sources(mesh), "--proxy", dead)
    assert run.returncode == 0, run.stderr
    assert f"proxy {dead} unreachable: connection refused" in run.stdout, run.stdout
    assert _rows(run.stdout)[dead][1] == "0/1", run.stdout
    alone = viz("stat", "--interval", "1s", "--proxy", dead)
    assert alone.returncode == 69 and "unreachable" in alone.stdout, alone.stdout + alone.stderr
    bad = viz("stat", "--proxy", "nonsense:port")
    assert bad.returncode == 64 and "HOST:PORT" in bad.stderr


# ---- the same numbers from a real Prometheus ------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(mesh, tmp_path_factory):
    a, b, _, _ = mesh
    with start_prometheus(tmp_path_factory.mktemp("prometheus"), [a.admin, b.admin]) as url:
        if url is None:
            pytest.skip("Debian's prometheus package is not installed (no prometheus binary on PATH)")
        yield url


def test_prometheus_and_embedded_agree(mesh, prometheus):
    time.sleep(16)  # 15 s of samples at 1 s under steady load
    from_prom = viz("stat", "deploy", "-t", "15s", "-o", "json", "--prometheus", prometheus)
    embedded = viz("stat", "deploy", "-t", "15s", "--interval", "5s", "-o", "json", *_sources(mesh))
    assert from_prom.returncode == 0, from_prom.stderr
    assert embedded.returncode == 0, embedded.stderr
    prom_rows = {r["name"]: r for r in json.loads(from_prom.stdout)}
    own_rows = {r["name"]: r for r in json.loads(embedded.stdout)}
    p, e = prom_rows["api"], own_rows["api"]
    assert (p["meshed"], e["meshed"]) == ("1/1", "1/1")
    assert abs(p["success"] - e["success"]) <= 0.04, (p, e)
    assert abs(p["rps"] - e["rps"]) <= RATE * 0.2, (p, e)
    # Latency: Linkerd's query takes irate (the last two scrapes, one second here) where the embedded
    # window is five seconds, so only the median is steady enough to compare on a shared machine; the
    # arithmetic itself is compared exactly in test_promql_arithmetic_is_prometheuss.
    assert abs(p["latency_ms_p50"] - e["latency_ms_p50"]) <= max(5.0, max(p["latency_ms_p50"], e["latency_ms_p50"]))
    for row in (p, e):
        assert row["latency_ms_p50"] <= row["latency_ms_p95"] <= row["latency_ms_p99"], row
    assert p["tcp_open_connections"] == e["tcp_open_connections"], (p, e)
    table = viz("stat", "deploy", "-t", "15s", "--prometheus", prometheus)
    assert table.returncode == 0 and _rows(table.stdout)["api"][1] == "1/1", table.stdout + table.stderr
    edges = viz("edges", "deploy", "-o", "wide", "-t", "15s", "--prometheus", prometheus)
    assert ["web", "api", "default", "default", "web.default", "api.default", "\u221a"] in \
        [line.split() for line in edges.stdout.splitlines()], edges.stdout + edges.stderr
    routes = viz("routes", "deploy/web", "-t", "15s", "--prometheus", prometheus)
    assert "[DEFAULT]" in routes.stdout, routes.stdout + routes.stderr


def _at(url: str, promql: str, at: float) -> list:
    return query(url, promql, at)


def test_promql_arithmetic_is_prometheuss(mesh, prometheus):
    """The same raw samples through proxy/viz/promql.py and through Prometheus itself, at one instant:
    ``increase`` (with its extrapolation) and ``histogram_quantile`` must agree to rounding."""
    selector = '{direction="inbound",deployment="api"}'
    deadline = time.monotonic() + 30  # run alone, the test may come before Prometheus has 10 s of samples
    while not _at(prometheus, f"increase(response_total{selector}[10s])", time.time() - 1.0):
        assert time.monotonic() < deadline, "Prometheus has no samples of the load"
        time.sleep(0.5)
    # Prometheus evaluates at whole milliseconds: the same instant for both.
    at = round(time.time() - 1.0, 3)

    def points(metric: str) -> dict[tuple, list[tuple[float, float]]]:
        raw = _at(prometheus, f"{metric}{selector}[10s]", at)
        return {tuple(sorted(s["metric"].items())): [(float(t), float(v)) for t, v in s["values"]] for s in raw}

    ours: dict[str, float] = {}
    for labels, pts in points("response_total").items():
        grown = promql.increase(pts, at - 10, at)
        if grown is not None:
            klass = dict(labels)["classification"]
            ours[klass] = ours.get(klass, 0.0) + grown
    theirs = {s["metric"]["classification"]: float(s["value"][1])
              for s in _at(prometheus, f"sum(increase(response_total{selector}[10s])) by (classification)", at)}
    assert theirs and ours.keys() == theirs.keys()
    for klass, value in theirs.items():
        # Timestamps near 1.8e9 s are doubles good to ~2e-7 s: the extrapolated edges of the window
        # differ in the sixth or seventh digit, the arithmetic itself not at all.
        assert ours[klass] == pytest.approx(value, rel=1e-6), (ours, theirs)
    buckets: dict[float, float] = {}
    for labels, pts in points("response_latency_ms_bucket").items():
        grown = promql.increase(pts, at - 10, at)
        if grown is not None:
            le = float(dict(labels)["le"])
            buckets[le] = buckets.get(le, 0.0) + grown
    for q in (0.5, 0.95, 0.99):
        [sample] = _at(prometheus, f"histogram_quantile({q}, sum(increase(response_latency_ms_bucket{selector}[10s]))"
                                   " by (le))", at)
        assert promql.histogram_quantile(q, buckets.items()) == pytest.approx(float(sample["value"][1]), rel=1e-6)


def test_retries_show_in_actual(mesh):
    """Last in the module (it adds failures): a retryable route whose every attempt fails, so each
    request is tried more than once; ACTUAL_RPS counts the attempts, EFFECTIVE_RPS the requests."""
    a = mesh[0]
    stop = threading.Event()
    sent = [0]

    def failing() -> None:
        conn = http.client.HTTPConnection(*a.outbound, timeout=10)
        deadline = time.monotonic() + 8
        while not stop.is_set() and time.monotonic() < deadline:
            conn.request("GET", "/status/503", headers={"Host": SERVICE})
            conn.getresponse().read()
            sent[0] += 1
            stop.wait(0.2)
        conn.close()

    thread = threading.Thread(target=failing, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        run = viz("routes", "deploy/web", "-o", "wide", "--interval", "4s", *_sources(mesh))
    finally:
        stop.set()
        thread.join(15)
    assert run.returncode == 0 and sent[0] > 0, run.stderr
    row = _rows(run.stdout)["retried"]
    effective, actual = float(row[3][:-3]), float(row[5][:-3])
    assert row[2] == row[4] == "0.00%", run.stdout
    assert actual >= 1.5 * effective > 0, run.stdout
