"""Scenario ``latency``: latency at fixed request rates (1,000 and 5,000 per second), open loop.

The C generator (``benchmarks/lib/openloop.py``) offers each rate over 50
keep-alive connections and measures every request from its intended send
time, so a stall of the path delays all the requests due during it, as it
would delay real clients (no coordinated omission). Variants, alternating
with the order rotated each round: direct (generator -> nginx), HAProxy,
nginx as a proxy and meshproxy's outbound listener, in front of the http1
scenario's nginx. The direct rows double as the generator's check: there it
must achieve the requested rate within 1%, and their p50 is its floor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.lib import compare, openloop, procs
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult
from benchmarks.lib.servers import start_templated
from benchmarks.scenarios.http1 import BODY, probe

NAME = "latency"
DESCRIPTION = "fixed-rate latency, open loop (1,000 and 5,000 req/s): generator -> [proxy] -> nginx, 64-byte responses"
RATES = (1000.0, 5000.0)
CONNECTIONS = 50
REQUEST_TIMEOUT_S = 2.0
RATE_TOLERANCE = 0.01        # the direct run must achieve the requested rate within 1%


@dataclasses.dataclass(frozen=True)
class Plan:
    duration_s: float
    warmup_s: float
    rounds: int

    @classmethod
    def of(cls, ctx: Context) -> Plan:
        # --quick: no warm-up run, the probe warms the path.
        return cls(ctx.run_seconds(1.0, 8.0), 0.0 if ctx.quick else 1.0, ctx.round_count())

    def load(self, rate: float, seconds: float) -> openloop.LoadParams:
        return openloop.LoadParams(rate, seconds, CONNECTIONS, REQUEST_TIMEOUT_S)


def _metrics(res: openloop.LoadResult) -> dict[str, float]:
    lat = res.latency
    out = {"achieved_rps": res.achieved_rps, "rate_error_pct": 100 * (res.rate_error() or 0.0)}
    for key, name in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p999"),
                      ("max_ms", "max")):
        value = lat.ms(name)
        if value is not None:
            out[key] = value
    if res.sched_lag.p99 is not None:
        out["gen_lag_p99_ms"] = res.sched_lag.ms("p99")
    return out


def _generator_check(direct: Contender, rate: float) -> str:
    """The direct rows as the generator's own check: achieved rate and floor."""
    good = [r for r in direct.rounds if r.ok]
    if not good:
        return f"generator check at {rate:,.0f} req/s: n/a (direct {direct.failure() or 'not run'})"
    worst = max(good, key=lambda r: abs(r.metrics["rate_error_pct"]))
    err = worst.metrics["rate_error_pct"]
    verdict = "met" if abs(err) <= 100 * RATE_TOLERANCE else "NOT met"
    return (f"generator check at {rate:,.0f} req/s (direct -> nginx): achieved {worst.metrics['achieved_rps']:,.1f}"
            f" req/s in the worst round ({err:+.3f}%; within {100 * RATE_TOLERANCE:g}%: {verdict}),"
            f" floor p50 {direct.median('p50_ms'):.3f} ms, p99 {direct.median('p99_ms'):.3f} ms,"
            f" its own scheduling lag p99 {direct.median('gen_lag_p99_ms'):.3f} ms")


def tail_note(contenders: list[Contender], rate: float) -> str:
    """meshproxy's p99.9 beside HAProxy's: the table's ratios divide the p99 only, and the 1-in-1,000 tail is
    where a pause of the proxy's own (a full garbage collection, a slow periodic callback) would show first."""
    by_name = {c.name: c for c in contenders}
    mine, ref = by_name.get("meshproxy"), by_name.get("haproxy")
    head = f"p99.9 at {rate:,.0f} req/s"
    if mine is None or ref is None:
        return f"{head}: n/a (meshproxy or HAProxy not run)"
    a, b = mine.median("p999_ms"), ref.median("p999_ms")
    failure = mine.failure() or ref.failure()
    if failure or a is None or not b:
        return f"{head}: n/a ({failure or 'no value'})"
    return f"{head}: meshproxy {a:.3f} ms, HAProxy {b:.3f} ms, {a / b:.2f}x (lower is better)"


def run(ctx: Context) -> ScenarioResult:
    plan = Plan.of(ctx)
    binary = openloop.build()  # no compiler: the scenario cannot run, say so once
    background = procs.background_busy(0.5)
    busy = ", ".join(f"CPU {cpu} {value:.0f}%" for cpu, value in sorted(background.items()))
    ctx.progress(f"[{NAME}] CPU busy before start (other load): {busy}")
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe().replace('wrk', 'generator')})")
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-http1.conf.tmpl",
                              "latency-backend", under_test=False, body=BODY)
    host = backend.address
    starters = compare.http1_proxies(ctx, NAME, backend)
    started = [
        compare.start(ctx, NAME, "direct", "generator -> nginx", starters["direct"]),
        compare.start(ctx, NAME, "haproxy", "HAProxy, keep-alive upstream", starters["haproxy"]),
        compare.start(ctx, NAME, "nginx", "nginx, keepalive upstream", starters["nginx"]),
        compare.start(ctx, NAME, "meshproxy", "outbound, routed by Host", starters["meshproxy"]),
        *compare.with_baseline(ctx, NAME, "outbound, routed by Host", starters[compare.BASELINE]),
    ]
    headers = {"Host": host}
    pin = ctx.placement.pin_load()
    by_rate: dict[float, list[Contender]] = {}
    tables, summaries, notes = [], {}, []

    for rate in RATES:
        contenders = [dataclasses.replace(c, rounds=[]) for c in started]
        by_rate[rate] = contenders

        def measure(c: Contender, index: int, rate: float = rate) -> Sample:
            problem = probe(int(c.target.rpartition(":")[2]), host)
            if problem:
                return Sample(index, False, problem)
            url = f"http://{c.target}/"
            raw: dict[str, Any] = {}
            failure = ""
            if plan.warmup_s > 0:
                warm = openloop.run(url, plan.load(rate, plan.warmup_s), headers=headers, pin=pin)
                raw["warmup"] = warm.to_json()
                failure = f"warm-up: {warm.failure}" if not warm.ok else ""
            res = openloop.run(url, plan.load(rate, plan.duration_s), headers=headers, pin=pin)
            raw["load"] = res.to_json()
            failure = res.failure or failure
            return Sample(index, not failure, failure, metrics=_metrics(res) if res.ok else {}, raw=raw)

        compare.alternate(ctx, f"{NAME} {rate:g}/s", contenders, plan.rounds, measure, [backend],
                          unit=lambda s: f"p50 {s.metrics['p50_ms']:.3f} ms, p99 {s.metrics['p99_ms']:.3f} ms,"
                                         f" {s.metrics['achieved_rps']:,.0f} req/s")
        rounds = f"{plan.rounds} round{'s' if plan.rounds != 1 else ''}"
        table, summary = compare.table(
            f"Latency at {rate:,.0f} req/s, open loop (median of {rounds})",
            contenders,
            ("p99 ms", "p99_ms", ".3f"),
            [("achieved req/s", "achieved_rps", ",.0f"), ("p50 ms", "p50_ms", ".3f"), ("p90 ms", "p90_ms", ".3f"),
             ("p99.9 ms", "p999_ms", ".3f"), ("max ms", "max_ms", ".2f"),
             ("gen lag p99 ms", "gen_lag_p99_ms", ".3f")],
            [
                "latency: from each request's intended send time (start + i / rate) to the last byte of its"
                " response, so it includes any wait for a free connection and the generator's own lag.",
                "/ haproxy, / direct here divide p99 latencies: lower is better.",
                "gen lag: how late the generator noticed a request was due (its own scheduling delay, p99).",
                "FAILED: any connect, read, parse or timeout error, a non-2xx answer, a failed probe,"
                " or a process that died.",
            ],
        )
        tables.append(table)
        summaries[f"{rate:g}"] = summary
        notes.append(_generator_check(contenders[0], rate))
        notes.append(tail_note(contenders, rate))
        for key, label in (("p99_ms", "p99"), ("p999_ms", "p99.9"), ("p50_ms", "p50")):
            line = compare.baseline_note(contenders, key, higher_is_better=False, label=f"{label} at {rate:,.0f} req/s")
            if line:
                notes.append(line)

    fastpath = next((c.extra.get("fastpath") for c in started if c.name == "meshproxy"), None) or {}
    if fastpath.get("all") is False:
        notes.append(f"WARNING: meshproxy ran WITHOUT the full compiled fast path: {fastpath.get('compiled')}")
    notes.append(f"CPU busy in the 0.5 s before the servers started (other load): {busy}")
    if any(value > 10 for value in background.values()):
        notes.append("WARNING: the machine was not idle before the run; tail latencies are noisier than usual")
    data: dict[str, Any] = {
        "variants": {f"{rate:g}": {c.name: c.to_json() for c in cs} for rate, cs in by_rate.items()},
        "summary": summaries,
        "generator_binary": str(binary),
        "cpu_busy_before_start_percent": {str(k): round(v, 1) for k, v in background.items()},
    }
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={
            "rates_rps": list(RATES), "connections": CONNECTIONS, "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s, "rounds": plan.rounds, "request_timeout_s": REQUEST_TIMEOUT_S,
            "order": "rotated each round; one rate after the other",
            "generator": "benchmarks/openloop/openloop.c (cc -O2): open loop, evenly spaced sends,"
                         " keep-alive pool, latency from the intended send time",
            "cpu_placement": ctx.placement.describe().replace("wrk", "generator"),
            "haproxy": "nbthread 1, mode http, http-reuse always",
            "nginx": "1 worker, upstream keepalive 1024, proxy_http_version 1.1, Connection \"\"",
            "meshproxy": "outbound listener, routed by Host",
        },
        tables=tables,
        data=data,
        notes=notes,
    )
