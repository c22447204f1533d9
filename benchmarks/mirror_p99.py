"""The primary's latency with request mirroring: no mirror, a slow (+100 ms) mirror, a failing mirror; open loop.

Every request of the route is mirrored (``percent: 100``, the worst case).
The slow mirror is the runner's backend with 100 ms added to each answer;
the failing mirror is an address nothing listens on (every copy's connect
is refused). Each variant gets a fresh proxy, a warm-up, then the C
open-loop generator at a fixed rate (``benchmarks/lib/openloop.py``),
pinned as the other scenarios pin it; variants alternate, their order
rotated each round, and the report gives each variant's median over the
rounds with the p99 ratio against no mirroring, and the proxy's CPU time per
primary request (from /proc, over the measured run: copies included), which
the machine's other load moves much less than latency.

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.mirror_p99 [--rate 1000] [--seconds 8] [--rounds 3]
        [--baseline DIR]

``--baseline DIR`` (another checkout, built) adds its mirroring variants to
the same rounds, as ``slow-mirror@base`` and ``failing-mirror@base``, so
two versions are compared under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mirror_p99", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--baseline", type=Path, help="another checkout whose mirroring variants run alongside")
    args = parser.parse_args(argv)
    placement = Placement.choose()
    runs = {name: (REPO, filters) for name, filters in VARIANTS.items()}
    if args.baseline is not None:
        runs.update({f"{name}@base": (args.baseline.resolve(), filters)
                     for name, filters in VARIANTS.items() if name != "none"})
    results: dict[str, list[dict]] = {name: [] for name in runs}
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
            names = list(runs)
            for round_index in range(args.rounds):
                order = names[round_index % len(names):] + names[:round_index % len(names)]
                for variant in order:
                    repo, filters = runs[variant]
                    policy = run_dir / f"policy-{variant}.yaml"
                    policy.write_text(ROUTE.format(filters=filters))
                    proxy = start_meshproxy(group, placement, repo, web, pure=False, name=f"proxy-{variant}",
                                            extra_env={"MESHPROXY_DESTINATION": f"file://{endpoints}",
                                                       "MESHPROXY_POLICY": str(policy),
                                                       "MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE": "1000000"})
                    url = f"http://127.0.0.1:{proxy.port}/"
                    headers = {"Host": HOST}
                    openloop.run(url, openloop.LoadParams(args.rate, 2.0, args.connections), headers=headers,
                                 pin=placement.pin_load())  # warm-up
                    cpu0 = _cpu_seconds(proxy.proc.pid)
                    res = openloop.run(url, openloop.LoadParams(args.rate, args.seconds, args.connections),
                                       headers=headers, pin=placement.pin_load())
                    time.sleep(0.3)  # the last slow copies land
                    cpu = _cpu_seconds(proxy.proc.pid) - cpu0
                    row = {"ok": res.ok, "failure": res.failure, "achieved_rps": res.achieved_rps,
                           "failed": res.failed_requests if res.ok else None,
                           "p50_ms": res.latency.ms("p50"), "p99_ms": res.latency.ms("p99"),
                           "p999_ms": res.latency.ms("p999"),
                           "cpu_us": 1e6 * cpu / max(1.0, res.achieved_rps * args.seconds) if res.ok else None,
                           "mirror": _mirror_counts(proxy.admin_port or 0)}
                    results[variant].append(row)
                    print(f"round {round_index + 1} {variant}: {json.dumps(row)}", file=sys.stderr)
                    group.stop(proxy.proc)
    print(f"rate {args.rate:g} req/s, {args.seconds:g} s x {args.rounds} rounds, {args.connections} connections; "
          f"{placement.describe()}")
    print(f"{'variant':16} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'p99 vs none':>12} {'failed':>7} "
          f"{'CPU us/req':>11}")
    base = statistics.median(r["p99_ms"] for r in results["none"] if r["ok"])
    for variant, rows in results.items():
        good = [r for r in rows if r["ok"]]
        if not good:
            print(f"{variant:16} FAILED: {rows[0]['failure'] if rows else 'no run'}")
            continue
        p50 = statistics.median(r["p50_ms"] for r in good)
        p99 = statistics.median(r["p99_ms"] for r in good)
        p999 = statistics.median(r["p999_ms"] for r in good)
        failed = sum(r["failed"] for r in good)
        cpu_us = statistics.median(r["cpu_us"] for r in good)
        print(f"{variant:16} {p50:8.3f} {p99:8.3f} {p999:9.3f} {100 * (p99 / base - 1):+11.1f}% {failed:7d} "
              f"{cpu_us:11.1f}")
    for variant, rows in results.items():
        per_round = ", ".join(f"{r['p99_ms']:.3f}" for r in rows if r["ok"])
        print(f"{variant}: p99 per round (ms): {per_round}")
    for variant, rows in results.items():
        if rows and rows[-1]["mirror"]:
            print(f"{variant}: last run's mirror counters: {rows[-1]['mirror']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
