"""Scenario ``connrate``: new connections per second, one small request on each.

wrk sends every request with ``Connection: close``, so each request opens a
new client connection (the proxies keep their upstream connections to the
http1 scenario's nginx alive). Variants, alternating: direct, HAProxy, nginx
(proxy, keep-alive upstream) and meshproxy's outbound listener (routes by Host).
"""

from __future__ import annotations

from benchmarks.lib import compare, wrk
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult
from benchmarks.lib.servers import start_templated
from benchmarks.scenarios.http1 import BODY, probe

NAME = "connrate"
DESCRIPTION = "new connections per second: wrk -H 'Connection: close' -> [proxy] -> nginx, 64-byte responses"
CONNECTIONS = 50


def _params(ctx: Context) -> tuple[wrk.WrkParams, float, int]:
    duration = ctx.run_seconds(2.0)
    rounds = ctx.round_count()
    return wrk.WrkParams(threads=1, connections=CONNECTIONS, duration_s=duration), (0.0 if ctx.quick else 2.0), rounds


def run(ctx: Context) -> ScenarioResult:
    params, warmup, rounds = _params(ctx)
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-http1.conf.tmpl",
                              "connrate-backend", under_test=False, body=BODY)
    host = backend.address
    starters = compare.http1_proxies(ctx, NAME, backend)
    contenders = [
        compare.start(ctx, NAME, "direct", "wrk -> nginx", starters["direct"]),
        compare.start(ctx, NAME, "haproxy", "HAProxy, keep-alive upstream", starters["haproxy"]),
        compare.start(ctx, NAME, "nginx", "nginx, keepalive upstream", starters["nginx"]),
        compare.start(ctx, NAME, "meshproxy", "outbound, routed by Host", starters["meshproxy"]),
        *compare.with_baseline(ctx, NAME, "outbound, routed by Host", starters[compare.BASELINE]),
    ]
    headers = {"Host": host, "Connection": "close"}
    pin = ctx.placement.pin_load()

    def measure(c: Contender, index: int) -> Sample:
        problem = probe(int(c.target.rpartition(":")[2]), host)
        if problem:
            return Sample(index, False, problem)
        url = f"http://{c.target}/"
        if warmup:  # quick runs skip the warm-up
            wrk.run(url, wrk.WrkParams(params.threads, params.connections, warmup), headers=headers, pin=pin)
        res = wrk.run(url, params, headers=headers, pin=pin)
        metrics = {"cps": res.rps, "p50_ms": res.latency_ms.get("p50", 0.0), "p99_ms": res.latency_ms.get("p99", 0.0)}
        return Sample(index, res.ok, res.failure, metrics=metrics, raw={"wrk": res.to_json()})

    compare.alternate(ctx, NAME, contenders, rounds, measure, [backend],
                      unit=lambda s: f"{s.metrics['cps']:,.0f} conn/s")
    table, data = compare.table(
        f"New connections per second (median of {rounds} round{'s' if rounds != 1 else ''})",
        contenders,
        ("conn/s", "cps", ",.0f"),
        [("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f")],
        [
            "conn/s: wrk's completed requests per second; each request is on its own new connection"
            " (Connection: close), so this is also the accept rate of the first hop.",
            "FAILED: socket errors, status >= 400, a failed probe, or a process that died.",
        ],
    )
    base = compare.baseline_note(contenders, "cps", label="conn/s")
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        notes=[base] if base else [],
        params={
            **params.describe(), "header": "Connection: close", "warmup_s": warmup, "rounds": rounds,
            "order": "rotated each round", "cpu_placement": ctx.placement.describe(),
            "haproxy": "nbthread 1, mode http, http-reuse always",
            "nginx": "1 worker, upstream keepalive 1024, proxy_http_version 1.1, Connection \"\"",
            "meshproxy": "outbound listener, routed by Host",
        },
        tables=[table],
        data={"variants": {c.name: c.to_json() for c in contenders}, "summary": data},
    )
