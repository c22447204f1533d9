"""``meshproxy demo`` (the proxy/demo/ package): the metric arithmetic and the
table on their own, the choice of mode, then whole loopback runs as a user
starts them: to the end of --duration, stopped by Ctrl-C, failing proxies, and
the demo itself killed outright. Every run must leave no process behind.
Namespace mode (root) is tested in tests/integration/test_demo_netns.py."""

from __future__ import annotations

import asyncio
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from proxy import demo
from proxy.demo import apps, http, netns, spec
from proxy.demo.mesh import Net
from proxy.demo.metrics import DirectionStats, histogram_quantile, parse_prometheus, summarize
from proxy.demo.summary import format_edges, format_table

REPO = Path(__file__).resolve().parents[1]
INF = math.inf

# ---- percentiles from histogram buckets --------------------------------------


def test_quantile_of_an_empty_histogram_is_none():
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(1.0, 0), (INF, 0)]) is None


def test_quantile_interpolates_inside_the_bucket():
    # 100 observations, all between 5 and 10.
    buckets = [(5.0, 0), (10.0, 100), (INF, 100)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(7.5)
    assert histogram_quantile(0.99, buckets) == pytest.approx(9.95)
    assert histogram_quantile(1.0, buckets) == pytest.approx(10.0)


def test_first_bucket_starts_at_zero():
    assert histogram_quantile(0.5, [(4.0, 10), (8.0, 10), (INF, 10)]) == pytest.approx(2.0)


def test_rank_in_the_inf_bucket_gives_the_highest_finite_bound():
    buckets = [(1.0, 90), (2.0, 95), (INF, 100)]
    assert histogram_quantile(0.99, buckets) == 2.0
    assert histogram_quantile(0.9, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.5, [(INF, 3)]) is None


def test_quantiles_across_buckets_are_ordered():
    # Linkerd's bucket bounds (ms) with a long-tailed distribution.
    bounds = [1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, INF]
    counts = [5, 30, 60, 80, 88, 95, 97, 98, 99, 99, 100, 100, 100]
    buckets = list(zip(bounds, counts, strict=True))
    p50, p95, p99 = (histogram_quantile(q, buckets) for q in (0.5, 0.95, 0.99))
    assert p50 == pytest.approx(2 + (50 - 30) / 30)  # inside (2, 3]
    assert p95 == pytest.approx(10.0)  # the 95th observation closes the (5, 10] bucket
    assert p99 == pytest.approx(30 + (99 - 98) / 1 * 10)
    assert p50 < p95 < p99


def test_unsorted_and_dipping_counts_are_tolerated():
    # A scrape can catch a bucket mid-update; the estimate must stay monotonic.
    buckets = [(INF, 10), (2.0, 9), (1.0, 10)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.5)


@pytest.mark.parametrize("q", [-0.1, 1.5])
def test_quantile_outside_0_1_is_an_error(q):
    with pytest.raises(ValueError):
        histogram_quantile(q, [(1.0, 1), (INF, 1)])


# ---- reading /metrics ---------------------------------------------------------

METRICS = """\
# HELP request_total Total number of HTTP requests.
# TYPE request_total counter
request_total{direction="inbound"} 10
request_total{direction="outbound"} 4
response_total{direction="inbound",status_code="200",classification="success"} 8
response_total{direction="inbound",status_code="500",classification="failure"} 2
response_total{direction="outbound",status_code="503"} 1
response_total{direction="outbound",status_code="200"} 3
response_latency_ms_bucket{direction="inbound",le="1"} 2
response_latency_ms_bucket{direction="inbound",le="10"} 10
response_latency_ms_bucket{direction="inbound",le="+Inf"} 10
response_latency_ms_sum{direction="inbound"} 40.5
tcp_open_total{direction="inbound",peer="src",note="a \\"quoted\\", value"} 3
tcp_open_total{direction="inbound",peer="src",tls="true",client_id="web.demo.serviceaccount.identity.cluster.local"} 9
tcp_open_total{direction="inbound",peer="dst"} 12
process_cpu_seconds_total 1.5
"""


def test_parse_prometheus_reads_names_labels_and_values():
    samples = parse_prometheus(METRICS)
    assert ("request_total", {"direction": "inbound"}, 10.0) in samples
    assert ("response_latency_ms_bucket", {"direction": "inbound", "le": "+Inf"}, 10.0) in samples
    assert ("tcp_open_total", {"direction": "inbound", "peer": "src", "note": 'a "quoted", value'}, 3.0) in samples
    assert ("process_cpu_seconds_total", {}, 1.5) in samples
    assert not any(name.startswith("#") for name, _, _ in samples)


def test_summarize_per_direction():
    stats = summarize(parse_prometheus(METRICS))
    inbound, outbound = stats["inbound"], stats["outbound"]
    assert (inbound.requests, inbound.success, inbound.failure) == (10, 8, 2)
    assert inbound.success_rate() == pytest.approx(0.8)
    assert inbound.buckets == {1.0: 2, 10.0: 10, INF: 10}
    # Without a classification label, 5xx counts as failure.
    assert (outbound.requests, outbound.success, outbound.failure) == (4, 3, 1)
    assert outbound.quantile(0.5) is None


def test_window_between_two_scrapes():
    earlier = DirectionStats(10, 9, 1, {1.0: 5, INF: 10})
    later = DirectionStats(30, 28, 2, {1.0: 5, INF: 30})
    window = later.minus(earlier)
    assert (window.requests, window.success, window.failure) == (20, 19, 1)
    assert window.buckets == {1.0: 0, INF: 20}
    assert window.quantile(0.5) == 1.0  # all 20 landed above the 1 ms bound
    assert DirectionStats().success_rate() is None


def test_tls_share_counts_accepted_connections_by_their_tls_label():
    inbound = summarize(parse_prometheus(METRICS))["inbound"]
    # 9 of the 12 accepted (peer="src") connections were mTLS; peer="dst" ones are the proxy's own.
    assert (inbound.tls, inbound.tls_of, inbound.tls_unit) == (9, 12, "connections")
    assert inbound.tls_share() == pytest.approx(0.75)


def test_tls_share_prefers_requests_when_they_carry_a_tls_label():
    text = (
        'request_total{direction="inbound",tls="true",client_id="a"} 30\n'
        'request_total{direction="inbound",tls="no_identity"} 10\n'
        'tcp_open_total{direction="inbound",peer="src",tls="true"} 1\n'
    )
    inbound = summarize(parse_prometheus(text))["inbound"]
    assert (inbound.requests, inbound.tls, inbound.tls_of, inbound.tls_unit) == (40, 30, 40, "requests")
    assert DirectionStats().tls_share() is None


def test_tls_share_from_a_series_of_mtls_connections():
    # A proxy that counts mTLS connections apart: their share of the accepted ones.
    text = (
        'tcp_open_total{direction="inbound",peer="src"} 4\n'
        'tcp_open_total{direction="inbound",peer="dst"} 9\n'
        'tls_connections_total{direction="inbound",tls="true",client_id="load.demo.serviceaccount.identity.x"} 3\n'
        'tls_connections_total{direction="outbound",tls="true",server_id="api.demo.serviceaccount.identity.x"} 2\n'
        'tcp_open_total{direction="outbound",peer="src"} 5\n'
    )
    stats = summarize(parse_prometheus(text))
    assert (stats["inbound"].tls, stats["inbound"].tls_of) == (3, 4)
    assert (stats["outbound"].tls, stats["outbound"].tls_of) == (2, 5)


def test_table_has_a_row_per_service():
    snapshot = {"web": summarize(parse_prometheus(METRICS)), "api": None}
    table = format_table(snapshot, None, 2.0)
    lines = table.splitlines()
    assert lines[0].split() == ["SERVICE", "MESHED", "SUCCESS", "RPS", "P50", "P95", "P99", "TLS"]
    assert lines[1].split()[:4] == ["web", "yes", "80.00%", "5.0"]
    assert lines[1].split()[-1] == "75%"
    assert lines[2].split()[:2] == ["api", "no"] and "unavailable" in lines[2]


def test_window_tls_falls_back_to_the_totals_without_new_connections():
    # Keep-alive connections: a window with no new connection shows the share so far.
    earlier = {"web": {"inbound": DirectionStats(10, 10, 0, {INF: 10}, tls=4, tls_of=4)}}
    later = {"web": {"inbound": DirectionStats(30, 30, 0, {INF: 30}, tls=4, tls_of=4)}}
    [_, row] = format_table(later, earlier, 2.0).splitlines()
    assert row.split()[3] == "10.0" and row.split()[-1] == "100%"


def test_edges_per_caller_identity():
    text = (
        'request_total{direction="inbound",tls="true",client_id="web.demo.serviceaccount.identity.x"} 30\n'
        'request_total{direction="inbound",tls="true",client_id="load.demo.serviceaccount.identity.x"} 5\n'
        'request_total{direction="inbound",tls="no_identity",no_tls_reason="no_tls_from_remote"} 2\n'
        'request_total{direction="outbound",tls="true",server_id="backend.demo.serviceaccount.identity.x"} 7\n'
    )
    earlier = {"api": summarize(parse_prometheus(text.replace(" 30", " 10")))}
    later = {"api": summarize(parse_prometheus(text)), "down": None}
    assert later["api"]["inbound"].callers == {
        ("web.demo.serviceaccount.identity.x", ""): 30, ("load.demo.serviceaccount.identity.x", ""): 5,
        ("", "no_tls_from_remote"): 2}
    assert later["api"]["outbound"].callers == {}  # the callers of a service are its inbound side's
    window = later["api"]["inbound"].minus(earlier["api"]["inbound"])
    assert window.callers[("web.demo.serviceaccount.identity.x", "")] == 20
    lines = format_edges(later).splitlines()
    assert lines[0].split() == ["SRC", "DST", "REQUESTS", "SECURED"]
    assert [line.split() for line in lines[1:]] == [
        ["-", "api", "2", "no", "(no_tls_from_remote)"],
        ["load.demo.serviceaccount.identity.x", "api", "5", "\u221a"],
        ["web.demo.serviceaccount.identity.x", "api", "30", "\u221a"],
    ]


def _edge_rows(output: str) -> list[list[str]]:
    """The final edges table: [SRC, DST, REQUESTS, SECURED...] per row."""
    edges = output.split("\nedges:", 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in edges.splitlines()[2:]]


@pytest.mark.parametrize("argv", [["--rps", "0"], ["--rps", "100000"], ["--duration", "-1"], ["--failure-rate", "2"]])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.parse_args(argv)
    assert exc.value.code == 2


def test_the_mesh_is_load_web_api_backend():
    chain = {s.name: s.calls for s in spec.SERVICES}
    assert chain == {"load": ("web",), "web": ("api",), "api": ("backend",), "backend": ()}
    assert [s.name for s in spec.SERVICES if not s.serves] == ["load"]
    assert spec.identity_name("web") == "web.demo.serviceaccount.identity.cluster.local"
    assert spec.service_authority("api") == "api.demo.svc.cluster.local:8080"


def test_auto_mode_falls_back_to_loopback_with_the_reason(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(netns, "unavailable", lambda state_dir: "network namespaces and iptables need root")
    assert demo._choose_mode("auto", tmp_path) == "loopback"
    assert "need root); running on loopback" in capsys.readouterr().out
    with pytest.raises(spec.DemoError, match="not available: network namespaces and iptables need root"):
        demo._choose_mode("netns", tmp_path)
    assert demo._choose_mode("loopback", tmp_path) == "loopback"


def test_namespace_mode_needs_root(monkeypatch, tmp_path):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert netns.unavailable(tmp_path) == "network namespaces and iptables need root"


# ---- the sample app and its client, without proxies ----------------------------


def test_sample_app_answers_over_keep_alive():
    async def scenario() -> None:
        service = spec.ServiceSpec("api", latency_ms=(0.0, 1.0), failure_rate=0.0)
        app = apps.SampleApp(service, callees=[])
        port = await app.start(Net().listen("127.0.0.1", 0))
        client = http.Http1Client(http.tcp("127.0.0.1", port), max_idle=2)
        try:
            first = await client.get("/", f"127.0.0.1:{port}")
            assert first.status == 200 and json.loads(first.body)["service"] == "api"
            assert len(client._idle) == 1
            pooled = client._idle[0]
            assert (await client.get("/nope", "api")).status == 404
            assert client._idle == [pooled]  # the same connection served both
            # Once the app is gone, the pooled connection is dead (retried
            # once) and a new one is refused: an error of the expected kinds.
            await app.stop()
            with pytest.raises(http.CLIENT_ERRORS):
                await client.get("/", "api", timeout=2.0)
        finally:
            client.close()
            await app.stop()

    asyncio.run(scenario())


def test_an_app_reports_a_failing_callee_as_502():
    async def scenario() -> None:
        dead = http.Http1Client(http.tcp("127.0.0.1", 1), max_idle=0)
        app = apps.SampleApp(spec.ServiceSpec("web", calls=("api",)), [apps.Callee("api", dead, "api:8080")])
        status, payload = await app.handle("GET", "/")
        assert status == 502 and payload["error"].startswith("api unreachable")

    asyncio.run(scenario())


def test_the_cleanup_ignores_ctrl_c_and_then_gives_sigint_and_sigterm_back():
    # main() is callable in-process: its shielded cleanup left SIGINT ignored in the caller, and every child
    # the caller started afterwards (a test's ``viz tap``) inherited it and outlived its Ctrl-C.
    class Mesh:
        def close(self) -> None:
            self.during = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    mesh = Mesh()
    demo.close_shielded(mesh)  # type: ignore[arg-type]
    assert mesh.during == (signal.SIG_IGN, signal.SIG_IGN)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ---- whole runs ---------------------------------------------------------------

COMMAND = [sys.executable, "-m", "proxy", "demo", "--mode", "loopback"]
PODS = ("load", "web", "api", "backend")
SERVICES = ("web", "api", "backend")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _proxy_pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"proxy pid (\d+)", output)]


def _running(pid: int) -> bool:
    """A live (not zombie) process that is a meshproxy."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and b"proxy" in cmdline


def _assert_gone(pids: list[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _running(pid)], "meshproxy processes left behind"


def _summary_rows(output: str) -> dict[str, list[str]]:
    """The final table: service -> its 8 columns."""
    summary = output.split("\nsummary:", 1)[1]
    rows = {}
    for line in summary.splitlines()[2:]:
        fields = line.split()
        if len(fields) == 8 and fields[0] in SERVICES:
            rows[fields[0]] = fields
    return rows


class Demo:
    """A demo child whose stdout is read line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(COMMAND + args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        self.proc.kill()
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.seen)}")

    def finish(self, timeout: float) -> tuple[int, str, str]:
        try:
            returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        time.sleep(0.1)  # let the reader thread drain
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.proc.stderr is not None
        return returncode, "".join(self.seen), self.proc.stderr.read()


def test_demo_runs_for_its_duration_and_cleans_up(tmp_path):
    run = subprocess.run(COMMAND + ["--duration", "6", "--log-dir", str(tmp_path)], env=_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=90)
    out = run.stdout
    assert run.returncode == 0, f"stdout:\n{out}\nstderr:\n{run.stderr}"
    pids = _proxy_pids(out)
    assert len(pids) == 4
    issuer = re.search(r"issuer +https://127\.0\.0\.1:\d+ +pid (\d+)", out)
    assert issuer, out
    _assert_gone(pids + [int(issuer[1])])
    assert str(tmp_path) in out
    names = {p.name for p in tmp_path.iterdir()}
    assert {f"{pod}-proxy.log" for pod in PODS} | {f"{pod}-proxy.yaml" for pod in PODS} <= names
    assert {"endpoints.yaml", "issuer.log", "trust-anchors.pem", "identity", "tokens"} <= names
    # Periodic tables came every 2 s before the final summary.
    assert out.count("] last ") >= 2

    rows = _summary_rows(out)
    # ~50 rps for 6 s crossed every service's inbound proxy, each hop meshed.
    for service in SERVICES:
        _, meshed, success, rps, p50, p95, p99, tls = rows[service]
        assert meshed == "yes", out
        assert float(success.rstrip("%")) >= 90.0, (service, out)
        assert 25 <= float(rps) <= 60, (service, out)
        assert p50 != "-" and p99 != "-"
        assert tls == "100%", (service, out)
    load = re.search(r"load generator: sent (\d+), answered (\d+) .* errors (\d+)", out)
    assert load, out
    sent, answered, errors = map(int, load.groups())
    assert sent >= 150 and answered >= sent - 2 and errors <= 2, out
    # Every service was called over mutual TLS by an identity its caller's proxy proved.
    edges = {row[1]: row for row in _edge_rows(out)}
    assert set(edges) == set(SERVICES), out
    for service, (src, _, requests, *secured) in edges.items():
        assert ".serviceaccount.identity." in src and src.split(".")[0] != service, (service, out)
        assert int(requests) >= 100 and secured == ["\u221a"], (service, out)


def test_without_identity_the_hops_are_plaintext(tmp_path):
    run = subprocess.run(COMMAND + ["--duration", "3", "--no-identity", "--log-dir", str(tmp_path)], env=_env(),
                         cwd=REPO, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "identity off" in run.stdout
    rows = _summary_rows(run.stdout)
    assert {service: rows[service][-1] for service in SERVICES} == {s: "0%" for s in SERVICES}
    edges = _edge_rows(run.stdout)
    assert {row[1] for row in edges} == set(SERVICES), run.stdout
    assert all(row[0] == "-" and row[3] == "no" for row in edges), run.stdout
    assert "issuer.log" not in {p.name for p in tmp_path.iterdir()}
    _assert_gone(_proxy_pids(run.stdout))


def test_ctrl_c_ends_the_demo_cleanly(tmp_path):
    run = Demo(["--interval", "1", "--no-identity", "--log-dir", str(tmp_path)], _env())
    run.wait_for(r"^\[\s*1\.\d+s\]", timeout=45)  # the first periodic table: traffic is flowing
    pids = _proxy_pids("".join(run.seen))
    assert len(pids) == 4
    run.proc.send_signal(signal.SIGINT)
    returncode, out, err = run.finish(timeout=30)
    assert returncode == 0, err
    assert "\nsummary:" in out
    assert "web" in _summary_rows(out)
    _assert_gone(pids)


def test_a_proxy_that_cannot_start_fails_the_demo_and_is_cleaned_up(tmp_path):
    # A bad setting in the user's environment makes every proxy exit 64.
    run = subprocess.run(COMMAND + ["--duration", "3", "--no-identity", "--log-dir", str(tmp_path)],
                         env=_env(MESHPROXY_LOG_LEVEL="loud"), cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"proxy exited with status 64", run.stderr), run.stderr
    assert "MESHPROXY_LOG_LEVEL" in run.stderr  # the proxy's own complaint, from its log
    _assert_gone(_proxy_pids(run.stdout))


def test_proxies_die_with_a_killed_demo(tmp_path):
    run = Demo(["--duration", "60", "--log-dir", str(tmp_path)], _env())
    run.wait_for(r"^load: ", timeout=45)
    seen = "".join(run.seen)
    pids = _proxy_pids(seen) + [int(re.search(r"issuer .* pid (\d+)", seen)[1])]
    assert len(pids) == 5 and all(_running(pid) for pid in pids)
    run.proc.kill()
    run.proc.wait(10)
    _assert_gone(pids, within=15.0)


def test_keep_leaves_the_mesh_running_and_the_printed_viz_commands_work(tmp_path):
    """--keep: the summary after --duration, then the mesh stays under load; the viz commands the demo
    printed (stat, top, tap) show it, then Ctrl-C takes everything down."""
    import shlex
    import signal

    demo = Demo(["--duration", "3", "--keep", "--log-dir", str(tmp_path)], _env())
    commands = {}
    demo.wait_for(r"see the mesh from another terminal", 60)
    for _ in range(4):
        line = demo.wait_for(r" viz (stat|edges|top|tap) ", 10)
        argv = shlex.split(line)
        commands[argv[argv.index("viz") + 1]] = argv
    demo.wait_for(r"the mesh keeps running \(--keep\)", 60)
    stat = subprocess.run(commands["stat"], capture_output=True, text=True, timeout=60, env=_env())
    rows = {line.split()[0]: line.split() for line in stat.stdout.splitlines()[1:] if line.strip()}
    assert set(rows) == set(SERVICES) and all(row[1] == "1/1" for row in rows.values()), stat.stdout + stat.stderr
    top = subprocess.run(commands["top"] + ["--duration", "3"], capture_output=True, text=True, timeout=60,
                         env=_env())
    assert top.stdout.startswith("Source") and len(top.stdout.splitlines()) >= 2, top.stdout + top.stderr
    tap = subprocess.Popen(commands["tap"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert tap.stdout is not None
        first = tap.stdout.readline()
        assert first.startswith("req ") and ":authority=web." in first, first
    finally:
        tap.send_signal(signal.SIGINT)
        tap.communicate(timeout=10)
    pids = _proxy_pids("".join(demo.seen))
    assert all(_running(pid) for pid in pids)  # still there under --keep
    demo.proc.send_signal(signal.SIGINT)
    code, out, err = demo.finish(30)
    assert code == 0, out + err
    _assert_gone(pids)
