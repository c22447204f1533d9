"""Scenario ``grpc``: unary gRPC calls per second, direct and through one and two proxies.

A grpcio server (generic handler, 64-byte reply) and a grpc.aio client that
keeps a fixed number of calls in flight (``lib/grpcbench.py``) both run on
the load CPUs. Variants, alternating: direct; HAProxy (h2 both sides); nginx
(``grpc_pass``, upstream keep-alive); meshproxy (inbound listener, the server
as default target); and meshproxy x2, the meshed path: client -> proxy A's
outbound listener, which routes by the :authority (``grpc.default_authority``
= B's inbound address) -> proxy B's inbound listener -> the server. Both proxies of x2 share the proxy CPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.lib import compare
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.context import Context
from benchmarks.lib.grpcbench import MARKER
from benchmarks.lib.procs import Managed, NotReady, free_ports, run_bounded, wait_tcp
from benchmarks.lib.report import ScenarioResult
from benchmarks.lib.servers import LOOPBACK, Server, start_meshproxy, start_templated

NAME = "grpc"
DESCRIPTION = "gRPC unary calls (64-byte reply): grpc.aio client -> [proxy / two proxies] -> grpcio server"
CONCURRENCY, CHANNELS = 64, 2


def _params(ctx: Context) -> tuple[float, float, int]:
    duration = ctx.run_seconds(2.0)
    rounds = ctx.round_count()
    return duration, (0.5 if ctx.quick else 2.0), rounds


def start_server(ctx: Context) -> Server:
    (port,) = free_ports(1)
    argv = ctx.placement.pin_load() + [sys.executable, "-m", "benchmarks.lib.grpcbench", "serve", str(port)]
    proc: Managed = ctx.group.start("grpc-server", argv, cwd=ctx.repo)
    try:
        wait_tcp(proc, LOOPBACK, port, timeout=15)
    except NotReady as err:
        raise NotReady(f"{err}; log: {proc.log_tail(3)}") from None
    return Server("grpc-server", proc, port)


def run(ctx: Context) -> ScenarioResult:
    duration, warmup, rounds = _params(ctx)
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    server = start_server(ctx)
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"

    def mesh(name: str, upstream: Server, repo: Path | None = None) -> Server:
        return start_meshproxy(ctx.group, ctx.placement, repo or ctx.repo, upstream, pure=False, name=name,
                               log_level=log_level)

    def direct() -> Contender:
        return Contender("direct", target=server.address)

    def haproxy() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "haproxy", "haproxy-h2.cfg.tmpl",
                            "grpc-haproxy", upstream_port=server.port)
        return Contender("haproxy", servers=[s], target=s.address)

    def nginx() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-grpc.conf.tmpl",
                            "grpc-nginx", upstream_port=server.port)
        return Contender("nginx", servers=[s], target=s.address)

    def one(repo: Path | None = None, name: str = "grpc-meshproxy") -> Contender:
        s = mesh(name, server, repo)
        return Contender("meshproxy", servers=[s], target=f"{LOOPBACK}:{s.info['ports']['inbound']}")

    def two() -> Contender:
        b = mesh("grpc-meshproxy-b", server)
        a = mesh("grpc-meshproxy-a", server)
        authority = f"{LOOPBACK}:{b.info['ports']['inbound']}"
        return Contender("meshproxy x2", servers=[a, b], target=a.address, extra={"authority": authority})

    contenders = [
        compare.start(ctx, NAME, "direct", "client -> server", direct),
        compare.start(ctx, NAME, "haproxy", "HAProxy h2 -> h2", haproxy),
        compare.start(ctx, NAME, "nginx", "nginx grpc_pass", nginx),
        compare.start(ctx, NAME, "meshproxy", "inbound -> server", one),
        compare.start(ctx, NAME, "meshproxy x2", "A outbound -> B inbound -> server", two),
        *compare.with_baseline(ctx, NAME, "inbound -> server", lambda where: one(where, f"grpc-{compare.BASELINE}")),
    ]

    def measure(c: Contender, index: int) -> Sample:
        argv = ctx.placement.pin_load() + [
            sys.executable, "-m", "benchmarks.lib.grpcbench", "load", c.target,
            f"--concurrency={CONCURRENCY}", f"--channels={CHANNELS}",
            f"--duration={duration:g}", f"--warmup={warmup:g}",
        ]
        if "authority" in c.extra:
            argv.append(f"--authority={c.extra['authority']}")
        try:
            done = run_bounded(argv, timeout=duration + warmup + 30, cwd=ctx.repo)
        except TimeoutError as err:
            return Sample(index, False, str(err))
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
        if line is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return Sample(index, False, f"client status {done.returncode}: {tail[0]}")
        raw = json.loads(line[len(MARKER):])
        metrics = {"cps": raw.get("calls_per_s", 0.0), **{f"{k}_ms": v for k, v in raw.get("latency_ms", {}).items()},
                   "errors": float(sum(raw.get("errors", {}).values()))}
        return Sample(index, bool(raw["ok"]), raw.get("failure", ""), metrics=metrics,
                      raw={"client": raw, "argv": argv})

    compare.alternate(ctx, NAME, contenders, rounds, measure, [server],
                      unit=lambda s: f"{s.metrics['cps']:,.0f} calls/s")
    table, data = compare.table(
        f"gRPC unary calls (median of {rounds} round{'s' if rounds != 1 else ''})",
        contenders,
        ("calls/s", "cps", ",.0f"),
        [("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"), ("errors", "errors", ".0f")],
        [
            "The Python client and server share the load CPU and are the bottleneck of every variant here:"
            " compare the ratios, and the proxy's CPU, not the absolute calls/s.",
            "meshproxy x2: both proxies run on the proxy CPU; 'proxy' is their sum.",
            "FAILED: any call that did not return OK (the status codes are in the JSON), a wrong reply,"
            " or a process that died.",
        ],
    )
    notes = [line for line in (compare.baseline_note(contenders, "cps", label="calls/s"),
                               compare.baseline_note(contenders, "p99_ms", higher_is_better=False,
                                                     label="p99")) if line]
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        notes=notes,
        params={
            "client": f"grpc.aio, {CONCURRENCY} calls in flight over {CHANNELS} channels, {duration:g} s"
                      f" after {warmup:g} s warm-up",
            "rounds": rounds, "order": "rotated each round", "grpcio": _grpc_version(),
            "cpu_placement": ctx.placement.describe() + " (client and server on the load CPUs)",
            "haproxy": "nbthread 1, bind ... proto h2, server ... proto h2",
            "nginx": "1 worker, listen ... http2, grpc_pass with upstream keepalive 64",
            "meshproxy": "inbound, default target = server; x2: A outbound (routes by :authority) -> B inbound",
        },
        tables=[table],
        data={"variants": {c.name: c.to_json() for c in contenders}, "summary": data},
    )


def _grpc_version() -> str:
    import grpc

    return grpc.__version__
