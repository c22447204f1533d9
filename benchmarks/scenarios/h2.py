"""Scenario ``h2``: HTTP/2 cleartext (h2c), h2load -c 10 -m 10 through each proxy.

One nginx serves the http1 scenario's 64-byte body over h2c (and, on a second
listener, over HTTP/1.1 for the nginx proxy, which cannot proxy upstream h2).
Variants, alternating with the order rotated each round: direct (h2load ->
nginx), HAProxy (h2 on both sides), nginx (h2c front, HTTP/1.1 keep-alive
upstream) and meshproxy (its inbound listener with the backend as the default
target: it relays each stream over a pooled h2c upstream connection).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.lib import compare, h2load
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult
from benchmarks.lib.servers import LOOPBACK, start_meshproxy, start_templated
from benchmarks.scenarios.http1 import BODY

NAME = "h2"
DESCRIPTION = "HTTP/2 cleartext, 64-byte responses: h2load -c 10 -m 10 -> [proxy] -> nginx (h2c)"
CLIENTS, STREAMS = 10, 10


def _params(ctx: Context) -> tuple[float, float, int]:
    duration = ctx.run_seconds(2.0)
    rounds = ctx.round_count()
    return duration, (0.5 if ctx.quick else 2.0), rounds


def run(ctx: Context) -> ScenarioResult:
    duration, warmup, rounds = _params(ctx)
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-h2-backend.conf.tmpl",
                              "h2-backend", under_test=False, extra_ports=1, body=BODY)
    h1_port = backend.info["ports"]["port2"]
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"

    def direct() -> Contender:
        return Contender("direct", target=backend.address)

    def haproxy() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "haproxy", "haproxy-h2.cfg.tmpl",
                            "h2-haproxy", upstream_port=backend.port)
        return Contender("haproxy", servers=[s], target=s.address)

    def nginx() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-h2-front.conf.tmpl",
                            "h2-nginx", upstream_port=h1_port)
        return Contender("nginx", servers=[s], target=s.address)

    def meshproxy(repo: Path | None = None, name: str = "h2-meshproxy") -> Contender:
        s = start_meshproxy(ctx.group, ctx.placement, repo or ctx.repo, backend, pure=False, name=name,
                            log_level=log_level)
        return Contender("meshproxy", servers=[s], target=f"{LOOPBACK}:{s.info['ports']['inbound']}")

    contenders = [
        compare.start(ctx, NAME, "direct", "h2load -> nginx h2c", direct),
        compare.start(ctx, NAME, "haproxy", "h2 -> HAProxy -> h2", haproxy),
        compare.start(ctx, NAME, "nginx", "h2 -> nginx -> HTTP/1.1", nginx),
        compare.start(ctx, NAME, "meshproxy", "h2 -> inbound -> pooled h2", meshproxy),
        *compare.with_baseline(ctx, NAME, "h2 -> inbound -> pooled h2",
                               lambda where: meshproxy(where, f"h2-{compare.BASELINE}")),
    ]
    pin = ctx.placement.pin_load()

    def measure(c: Contender, index: int) -> Sample:
        url = f"http://{c.target}/"
        probe = h2load.run(url, clients=1, streams=1, duration_s=0.3, warmup_s=0, pin=pin)
        if not probe.ok:
            return Sample(index, False, f"probe: {probe.failure}", raw={"probe": probe.to_json()})
        res = h2load.run(url, clients=CLIENTS, streams=STREAMS, duration_s=duration, warmup_s=warmup, pin=pin)
        metrics = {"rps": res.rps, **{f"{k}_ms": v for k, v in res.latency_ms.items()},
                   "failed": float(res.counts.get("failed", 0) + res.counts.get("errored", 0)
                                   + res.counts.get("timeout", 0))}
        return Sample(index, res.ok, res.failure, metrics=metrics, raw={"h2load": res.to_json()})

    compare.alternate(ctx, NAME, contenders, rounds, measure, [backend],
                      unit=lambda s: f"{s.metrics['rps']:,.0f} req/s")
    table, data = compare.table(
        f"h2c throughput and latency (median of {rounds} round{'s' if rounds != 1 else ''})",
        contenders,
        ("req/s", "rps", ",.0f"),
        [("mean ms", "mean_ms", ".3f"), ("max ms", "max_ms", ".1f"), ("failed", "failed", ".0f")],
        [
            "h2load reports no percentiles: mean and max are its 'time for request' (send to end of response).",
            "nginx cannot proxy HTTP/2 upstream: its variant is h2c in front and HTTP/1.1 keep-alive behind,"
            " so it is not the same upstream protocol as HAProxy's and meshproxy's.",
            "FAILED: any failed, errored or timed-out request, any non-2xx status, a failed probe,"
            " or a process that died.",
        ],
    )
    notes = [line for line in (compare.baseline_note(contenders, "rps", label="req/s"),
                               compare.baseline_note(contenders, "mean_ms", higher_is_better=False,
                                                     label="mean latency")) if line]
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        notes=notes,
        params={
            "h2load": f"-t 1 -c {CLIENTS} -m {STREAMS} -D {duration:g} --warm-up-time {warmup:g}",
            "rounds": rounds, "order": "rotated each round",
            "cpu_placement": ctx.placement.describe(),
            "backend": "nginx, 1 worker, return 200 (64 bytes) on h2c and on HTTP/1.1",
            "haproxy": "nbthread 1, bind ... proto h2, server ... proto h2, http-reuse always",
            "nginx": "1 worker, listen ... http2 (h2c), proxy_pass HTTP/1.1 keepalive upstream",
            "meshproxy": "inbound listener, MESHPROXY_INBOUND_DEFAULT_TARGET = the h2c backend",
        },
        tables=[table],
        data={"variants": {c.name: c.to_json() for c in contenders}, "summary": data,
              "backend_command": backend.proc.argv},
    )
