"""The primary's latency with request mirroring: no mirror, a slow (+100 ms) mirror, a failing mirror; open loop.

Every request of the route is mirrored (``percent: 100``, the worst case).
The slow mirror is a backend with 100 ms added to each answer; the failing
mirror is an address nothing listens on (every copy's connect is refused,
so the proxy soon leaves it alone). One proxy per variant is started once
and warmed up; then the C open-loop generator (``benchmarks/lib/openloop.py``)
loads them in many short rounds, the variants' order rotated each round, so
a slow spell of the shared machine falls on every variant alike.

The report gives, per variant, the median and range of the per-round p99
and p99.9, the median of the per-round ratio ``p99 / p99 of none in the same
round`` (paired: the machine's drift cancels), the generator's own
scheduling lag (its p99: when it is large the VM, not the proxy, set the
round's tail) and the proxy's CPU time per primary request (from /proc,
copies included). ``--realtime`` runs the proxies, backends and generator
under SCHED_FIFO (``chrt -f``; root), so other tenants' processes cannot
preempt them: what is left is the proxy's own work. The proxy is pinned to
one CPU, everything else to the other.

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.mirror_p99 [--rate 1000] [--seconds 2] [--rounds 15]
        [--realtime] [--baseline DIR]

``--baseline DIR`` (another checkout, built) adds its mirroring variants to
the same rounds, as ``slow-mirror@base`` and ``failing-mirror@base``, so
two versions are compared under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.lib import openloop
from benchmarks.lib.procs import ProcessGroup, free_port, free_ports, wait_tcp
from benchmarks.lib.servers import Placement, Server, start_meshproxy

REPO = Path(__file__).resolve().parents[1]
HOST = "web.bench.svc.cluster.local"
ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: bench}}
spec:
  parentRefs: [{{kind: Service, name: web, port: 80}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /}}}}]
      filters: {filters}
"""
# The proxies' upstream pools outlive a proxy's wait between its runs (3-4 variants: ~6 s), so every run measures
# mirroring in its steady state, as a proxy under continuous load runs it. With the proxy's default (3 s) each
# slow-mirror run starts with a cold pool and opens its ~100 connections to the mirror in its first 100 ms, a
# connect beside each of those primaries: a cost of the rounds' idle gaps, not of mirroring
# (``--pool-idle-timeout 0`` measures it; the runs' "opened" column shows it).
POOL_IDLE_TIMEOUT = 30.0
VARIANTS = {
    "none": "[]",
    "slow-mirror": "[{type: RequestMirror, requestMirror: {backendRef: {name: slow, port: 80}, percent: 100}}]",
    "failing-mirror": "[{type: RequestMirror, requestMirror: {backendRef: {name: dead, port: 80}, percent: 100}}]",
}


def _backend(group: ProcessGroup, placement: Placement, name: str, delay_ms: float) -> Server:
    port = free_port()
    proc = group.start(name, placement.pin_load() + [sys.executable, "-m", "benchmarks.lib.backend", "--name", name,
                                                     "--port", str(port), "--delay-ms", str(delay_ms)], cwd=REPO)
    wait_tcp(proc, "127.0.0.1", port, timeout=10)
    return Server(name, proc, port)


def _mirror_counts(admin: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("outbound_http_mirror_") and not line.startswith("outbound_http_mirror_in_flight"):
            name, value = line.rsplit(" ", 1)
            if float(value):
                out[name] = out.get(name, 0.0) + float(value)
    return out


def _opened_upstream(admin: int) -> float:
    """Connections the proxy has opened to upstreams so far (``tcp_open_total``, peer="dst"): the primary's
    backend and the mirror's; a copy that finds no idle pooled connection opens one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tcp_open_total{") and 'peer="dst"' in line)


class _PerfStat:
    """``perf stat`` attached to the proxy for one run: its task clock and context switches (each one a sleep in
    ``epoll_wait`` and a wakeup: what a copy's answer arriving on its own costs)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(["perf", "stat", "-x,", "-e", "task-clock,context-switches", "-o", str(out),
                                      "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.1)  # attached before the load starts

    def stop(self) -> dict[str, float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        found: dict[str, float] = {}
        for line in self.out.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2] in ("task-clock", "context-switches"):
                try:
                    found[fields[2]] = float(fields[0])
                except ValueError:  # "<not counted>"
                    pass
        return found


def _run_wait_ms(pid: int) -> float:
    """Milliseconds ``pid``'s threads have waited, runnable, for a CPU so far (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass  # a thread that just ended
    return total / 1e6


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Realtime(Placement):
    """The run's placement with every process under SCHED_FIFO: other tenants' processes cannot preempt them."""

    PRIORITY = "50"

    def pin_proxy(self) -> list[str]:
        return super().pin_proxy() + ["chrt", "-f", self.PRIORITY]

    def pin_load(self) -> list[str]:
        return super().pin_load() + ["chrt", "-f", self.PRIORITY]


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else "-"


def _table(results: dict[str, list[dict]], max_lag_ms: float) -> None:
    """Per variant, over its runs whose generator lag p99 <= ``max_lag_ms``: medians, ranges and the paired
    ratio against none (rounds where none's run qualifies too)."""
    kept = {variant: [r for r in rows if r["ok"] and r["lag_p99_ms"] <= max_lag_ms]
            for variant, rows in results.items()}
    none_by_round = {r["round"]: r["p99_ms"] for r in kept["none"]}
    perf = any("task_us" in r for rows in kept.values() for r in rows)
    print(f"{'variant':20} {'n':>3} {'p50':>6} {'p99 med':>8} {'p99 range':>13} {'p99.9 med':>9} {'p99/none':>9} "
          f"{'ratio IQR':>15} {'lag p99':>8} {'wait ms':>7} {'failed':>6} {'CPU us':>7} {'opened':>6}"
          + (f" {'task us':>7} {'switches':>8}" if perf else ""))
    for variant, rows in results.items():
        good = kept[variant]
        if not good or not none_by_round:
            print(f"{variant:20} no good round: {rows[0]['failure'] if rows else 'no run'}")
            continue
        p99s = [r["p99_ms"] for r in good]
        ratios = sorted(r["p99_ms"] / none_by_round[r["round"]] for r in good if r["round"] in none_by_round)
        if not ratios:
            print(f"{variant:20} no round where it and none were both quiet")
            continue
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        print(f"{variant:20} {len(good):3d} {statistics.median(r['p50_ms'] for r in good):6.3f} "
              f"{statistics.median(p99s):8.3f} "
              f"{_spread(p99s):>13} {statistics.median(r['p999_ms'] for r in good):9.3f} "
              f"{100 * (statistics.median(ratios) - 1):+8.1f}% "
              f"{100 * (q[0] - 1):+6.1f}..{100 * (q[2] - 1):+.1f}% "
              f"{statistics.median(r['lag_p99_ms'] for r in good):8.3f} "
              f"{statistics.median(r['proxy_wait_ms'] for r in good):7.2f} {sum(r['failed'] for r in good):6d} "
              f"{statistics.median(r['cpu_us'] for r in good):7.1f} "
              f"{statistics.median(r.get('upstream_opened', 0) for r in good):6.0f}"
              + (f" {statistics.median(r.get('task_us', 0.0) for r in good):7.1f}"
                 f" {statistics.median(r.get('switches', 0.0) for r in good):8.2f}" if perf else ""))


def _report(results: dict[str, list[dict]], args: argparse.Namespace, placement: Placement, elapsed: float) -> None:
    print(f"rate {args.rate:g} req/s, {args.rounds} rounds x {args.seconds:g} s per variant, "
          f"{args.connections} connections, {'SCHED_FIFO' if args.realtime else 'normal scheduling'}; "
          f"{placement.describe()}; pool idle timeout "
          f"{f'{args.pool_idle_timeout:g} s' if args.pool_idle_timeout else 'the proxy default'}; {elapsed:.0f} s")
    print("Every run:")
    _table(results, float("inf"))
    print(f"Quiet runs only (the generator's lag p99 <= {args.quiet_lag_us:g} us; n: how many):")
    _table(results, args.quiet_lag_us / 1000)
    print("(ms; p99/none: median over rounds of the round's p99 over none's in the same round, with its "
          "interquartile range; lag p99: the generator's own scheduling lag; wait ms: time the proxy was "
          "runnable but not running; CPU us: proxy CPU per primary request; opened: upstream connections the "
          "proxy opened during the run, the mirror's included; with --perf, task us and switches: the proxy's "
          "task clock and context switches per primary request)")
    for variant, rows in results.items():
        print(f"{variant}: p99/lag p99 per round (ms): "
              + ", ".join(f"{r['p99_ms']:.3f}/{r['lag_p99_ms']:.3f}" for r in rows if r["ok"]))
    for variant, rows in results.items():
        if rows and rows[-1]["mirror"]:
            print(f"{variant}: mirror counters after the last round: {rows[-1]['mirror']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mirror_p99", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per variant per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load per proxy before the rounds")
    parser.add_argument("--realtime", action="store_true", help="run every process under SCHED_FIFO (root)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose mirroring variants run alongside")
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    parser.add_argument("--control", action="store_true",
                        help="add a second proxy without mirroring: its ratio to none is the method's resolution")
    parser.add_argument("--pool-idle-timeout", type=float, default=POOL_IDLE_TIMEOUT,
                        help="the proxies' MESHPROXY_POOL_IDLE_TIMEOUT in seconds (0: the proxy's default, 3 s)")
    parser.add_argument("--perf", action="store_true",
                        help="attach perf stat to the proxy for each run: its task clock and context switches per "
                             "primary request (finer than /proc's CPU ticks)")
    parser.add_argument("--quiet-lag-us", type=float, default=50.0,
                        help="runs whose generator lag p99 stays under this are 'quiet' (a second table)")
    args = parser.parse_args(argv)
    chosen = Placement.choose()
    placement = _Realtime(chosen.proxy_cpus, chosen.load_cpus) if args.realtime else chosen
    runs = {name: (REPO, filters) for name, filters in VARIANTS.items()}
    if args.control:
        runs["none-again"] = (REPO, VARIANTS["none"])
    if args.baseline is not None:
        runs.update({f"{name}@base": (args.baseline.resolve(), filters)
                     for name, filters in VARIANTS.items() if name != "none"})
    results: dict[str, list[dict]] = {name: [] for name in runs}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp:
        run_dir = Path(tmp)
        with ProcessGroup(run_dir) as group:
            web = _backend(group, placement, "web", 0.0)
            slow = _backend(group, placement, "slow", 100.0)
            (dead,) = free_ports(1)  # nothing listens there
            endpoints = run_dir / "endpoints.yaml"
            endpoints.write_text(
                "services:\n" + "".join(
                    f"  {name}.bench.svc.cluster.local:80:\n"
                    f"    endpoints: [{{address: 127.0.0.1:{port}, protocol: http1}}]\n"
                    for name, port in (("web", web.port), ("slow", slow.port), ("dead", dead))))
            headers = {"Host": HOST}
            pool_env = {"MESHPROXY_POOL_IDLE_TIMEOUT": f"{args.pool_idle_timeout:g}s"} if args.pool_idle_timeout else {}
            proxies = {}
            for variant, (repo, filters) in runs.items():  # one proxy per variant, for all the rounds
                policy = run_dir / f"policy-{variant}.yaml"
                policy.write_text(ROUTE.format(filters=filters))
                proxies[variant] = start_meshproxy(
                    group, placement, repo, web, pure=False, name=f"proxy-{variant}",
                    extra_env={"MESHPROXY_DESTINATION": f"file://{endpoints}", "MESHPROXY_POLICY": str(policy),
                               "MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE": "1000000", **pool_env})
                openloop.run(f"http://127.0.0.1:{proxies[variant].port}/",
                             openloop.LoadParams(args.rate, args.warmup, args.connections),
                             headers=headers, pin=placement.pin_load())
            names = list(runs)
            for round_index in range(args.rounds):
                shift = round_index % len(names)
                for variant in names[shift:] + names[:shift]:
                    proxy = proxies[variant]
                    time.sleep(0.2)  # the previous variant's last slow copies land on their own proxy
                    opened0 = _opened_upstream(proxy.admin_port or 0)
                    perf = _PerfStat(proxy.proc.pid, run_dir / "perf.txt") if args.perf else None
                    cpu0, wait0 = _cpu_seconds(proxy.proc.pid), _run_wait_ms(proxy.proc.pid)
                    res = openloop.run(f"http://127.0.0.1:{proxy.port}/",
                                       openloop.LoadParams(args.rate, args.seconds, args.connections),
                                       headers=headers, pin=placement.pin_load())
                    cpu = _cpu_seconds(proxy.proc.pid) - cpu0
                    counted = perf.stop() if perf is not None else {}
                    primaries = max(1.0, res.achieved_rps * args.seconds)
                    wait = _run_wait_ms(proxy.proc.pid) - wait0
                    opened = _opened_upstream(proxy.admin_port or 0) - opened0
                    row: dict[str, Any] = {
                        "round": round_index, "ok": res.ok, "failure": res.failure,
                        "achieved_rps": res.achieved_rps, "failed": res.failed_requests if res.ok else None,
                        "p50_ms": res.latency.ms("p50"), "p99_ms": res.latency.ms("p99"),
                        "p999_ms": res.latency.ms("p999"), "lag_p99_ms": res.sched_lag.ms("p99"),
                        "proxy_wait_ms": wait, "upstream_opened": opened,
                        "cpu_us": 1e6 * cpu / max(1.0, res.achieved_rps * args.seconds) if res.ok else None,
                        "mirror": {}}
                    if counted:  # per primary request; perf's window is the run plus ~0.1 s of idle before it
                        row["task_us"] = 1000 * counted.get("task-clock", 0.0) / primaries
                        row["switches"] = counted.get("context-switches", 0.0) / primaries
                    results[variant].append(row)
                    print(f"round {round_index + 1} {variant}: {json.dumps(row)}", file=sys.stderr)
            for variant, proxy in proxies.items():
                results[variant][-1]["mirror"] = _mirror_counts(proxy.admin_port or 0)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    _report(results, args, placement, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
