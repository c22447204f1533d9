"""Scenario ``balancing``: three backends, one 50 ms slower, a fixed request rate; who avoids the slow one.

Balancers in front of the same three counting backends, offered the same
open-loop load (the C generator of ``benchmarks/lib/openloop.py``: latency
from each request's intended send time, so a stall cannot hide): meshproxy's
outbound with file discovery (PeakEWMA + P2C) and two round-robin
references, nginx ``upstream`` and HAProxy ``balance roundrobin``. They alternate, the order rotated each
round and rate. Per balancer and rate the table reports the achieved rate, the
share of requests the slow backend served (its own counter), p50/p99 and
errors, then p99(meshproxy) / p99(round-robin) against the issue's target of
0.3x. A ``floor`` run, the generator straight to a fast backend, shows what
the generator itself adds to every latency.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.lib import openloop, procs
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.sampling import LoadWindow
from benchmarks.lib.servers import (
    ENV,
    LOOPBACK,
    NotReady,
    Server,
    fastpath_status,
    has_setting,
    meshproxy_argv,
    meshproxy_env,
    render,
)

NAME = "balancing"
DESCRIPTION = "3 HTTP/1.1 backends, one +50 ms, fixed-rate open-loop load: PeakEWMA+P2C vs round-robin"

try:
    from proxy.config import DESTINATION as DESTINATION_ENV
except Exception:  # the proxy is being built; the documented name
    DESTINATION_ENV = "MESHPROXY_DESTINATION"

VARIANTS = ("meshproxy", "nginx", "haproxy")
ROUND_ROBIN = ("nginx", "haproxy")
FLOOR = "floor"
BALANCING = {
    "meshproxy": "PeakEWMA + P2C",
    "nginx": "round-robin",
    "haproxy": "round-robin",
    FLOOR: "none: generator -> fast-1",
}
# (name, added latency); the name is also the body each backend answers.
BACKENDS = (("fast-1", 0.0), ("slow", 0.050), ("fast-2", 0.0))
SLOW = "slow"
SERVICE = "web.bench:80"
HEADERS = {"Host": SERVICE}  # every balancer gets the identical request
P99_TARGET = 0.3             # the bar: p99(meshproxy) <= 0.3 x p99(round-robin)
GEN_LAG_WARN_MS = 5.0        # the generator's own scheduling lag, p99, above this: it fell behind
REQUEST_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Plan:
    rates: tuple[float, ...]
    duration_s: float
    warmup_s: float
    rounds: int
    floor_duration_s: float

    @classmethod
    def of(cls, ctx: Context) -> Plan:
        duration, rounds = ctx.run_seconds(3.0, 8.0), ctx.round_count(full=2)
        if ctx.quick:
            return cls((1000.0,), duration, 1.0, rounds, 2.0)
        return cls((500.0, 2000.0), duration, 1.5, rounds, 4.0)

    def load(self, rate: float, duration: float) -> openloop.LoadParams:
        return openloop.LoadParams(rate, duration, openloop.pool_size(rate), REQUEST_TIMEOUT_S)


@dataclass
class Backend:
    name: str
    delay_s: float
    server: Server


@dataclass
class Round:
    index: int
    rate: float
    load: openloop.LoadResult
    counts: dict[str, int] = field(default_factory=dict)   # requests each backend served in the run
    failure: str = ""
    proxy_process_cpu_percent: float | None = None
    proxy_cpu_percent: float | None = None
    load_cpu_percent: float | None = None

    @property
    def ok(self) -> bool:
        return not self.failure

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.index, "rate_rps": self.rate, "ok": self.ok, "failure": self.failure,
            "backend_counts": self.counts, "load": self.load.to_json(),
            "proxy_process_cpu_percent": _round(self.proxy_process_cpu_percent),
            "proxy_cpu_busy_percent": _round(self.proxy_cpu_percent),
            "load_cpu_busy_percent": _round(self.load_cpu_percent),
        }


@dataclass
class Variant:
    name: str
    server: Server | None = None  # None for the floor (no balancer)
    url: str = ""
    broken: str = ""
    rounds: list[Round] = field(default_factory=list)
    warmups: list[dict[str, Any]] = field(default_factory=list)
    fastpath: dict[str, Any] = field(default_factory=dict)

    def at(self, rate: float) -> list[Round]:
        return [r for r in self.rounds if r.rate == rate]


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# ---- servers ------------------------------------------------------------------------------


def _start_backends(ctx: Context) -> list[Backend]:
    ports = procs.free_ports(len(BACKENDS))
    started = []
    for (name, delay), port in zip(BACKENDS, ports, strict=True):
        argv = ctx.placement.pin_load() + [
            sys.executable, "-m", "benchmarks.lib.backend",
            "--name", name, "--port", str(port), "--delay-ms", f"{delay * 1000:g}",
        ]
        proc = ctx.group.start(f"backend-{name}", argv, cwd=ctx.repo)
        started.append(Backend(name, delay, Server(f"backend-{name}", proc, port)))
    for backend in started:
        procs.wait_tcp(backend.server.proc, LOOPBACK, backend.server.port)
    return started


def _ports(backends: list[Backend]) -> dict[str, int]:
    return {f"backend{i}_port": b.server.port for i, b in enumerate(backends, 1)}


def _fail(proc: procs.Managed, err: Exception) -> NotReady:
    tail = " | ".join(ln.strip() for ln in proc.log_tail(3).splitlines() if ln.strip())
    return NotReady(f"{err}" + (f"; log: {tail}" if tail else "") + f" (full log: {proc.log_path})")


def _start_nginx(ctx: Context, backends: list[Backend]) -> Server:
    (ctx.run_dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
    (port,) = procs.free_ports(1)
    error_log = ctx.log_dir / "balancing-nginx-error.log"
    conf = render("nginx-balancing.conf.tmpl", ctx.run_dir / "nginx-balancing.conf",
                  run_dir=ctx.run_dir, error_log=error_log, port=port, **_ports(backends))
    argv = ctx.placement.pin_proxy() + ["nginx", "-p", str(ctx.run_dir), "-e", str(error_log), "-c", str(conf)]
    proc = ctx.group.start("balancing-nginx", argv)
    try:
        procs.wait_tcp(proc, LOOPBACK, port)
    except NotReady as err:
        raise _fail(proc, err) from None
    return Server("nginx", proc, port)


def _start_haproxy(ctx: Context, backends: list[Backend]) -> Server:
    (port,) = procs.free_ports(1)
    conf = render("haproxy-balancing.cfg.tmpl", ctx.run_dir / "haproxy-balancing.cfg", port=port, **_ports(backends))
    proc = ctx.group.start("balancing-haproxy", ctx.placement.pin_proxy() + ["haproxy", "-db", "-f", str(conf)])
    try:
        procs.wait_tcp(proc, LOOPBACK, port)
    except NotReady as err:
        raise _fail(proc, err) from None
    return Server("haproxy", proc, port)


def _start_meshproxy(ctx: Context, backends: list[Backend]) -> Server:
    endpoints = render("endpoints-balancing.yaml.tmpl", ctx.run_dir / "endpoints-balancing.yaml",
                       service=SERVICE, **_ports(backends))
    outbound, inbound, admin, tap = procs.free_ports(4)
    ports = {"outbound": outbound, "inbound": inbound, "admin": admin}
    if has_setting(ctx.repo, ENV["tap"]):
        ports["tap"] = tap
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"
    # The inbound side is unused here; its default target just has to be valid.
    env = meshproxy_env(False, ports, backends[0].server, log_level)
    env[DESTINATION_ENV] = f"file://{endpoints}"
    status = fastpath_status(ctx.repo, env)
    proc = ctx.group.start("balancing-meshproxy", ctx.placement.pin_proxy() + meshproxy_argv(ctx.repo),
                           env=env, cwd=ctx.repo)
    try:
        procs.wait_http_ok(proc, f"http://{LOOPBACK}:{admin}/ready", timeout=20)
        procs.wait_tcp(proc, LOOPBACK, outbound, timeout=5)
    except NotReady as err:
        raise _fail(proc, err) from None
    return Server("meshproxy", proc, outbound, admin_port=admin, info={"fastpath": status})


STARTERS = {"meshproxy": _start_meshproxy, "nginx": _start_nginx, "haproxy": _start_haproxy}


def _start_variant(ctx: Context, name: str, backends: list[Backend]) -> Variant:
    variant = Variant(name)
    try:
        variant.server = STARTERS[name](ctx, backends)
        variant.url = variant.server.url
        variant.fastpath = variant.server.info.get("fastpath", {})
        # Discovery may answer a moment after /ready: wait for the first good answer.
        problem = _probe(variant.server.port, backends, patience_s=5.0)
        if problem:
            variant.broken = f"did not serve: {problem}"
    except (NotReady, OSError, KeyError, ValueError) as err:
        variant.broken = f"did not start: {err}"
    if variant.broken:
        ctx.progress(f"[{NAME}] {name}: FAILED: {variant.broken}")
    return variant


# ---- probes and counts ----------------------------------------------------------------------


def _get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _probe(port: int, backends: list[Backend], patience_s: float = 0.0) -> str:
    """'' when a request as the generator sends it gets 200 and a backend's name."""
    names = {b.name.encode() for b in backends}
    deadline = time.monotonic() + patience_s
    while True:
        try:
            status, body = _get(port, "/", SERVICE)
            problem = "" if status == 200 and body in names else f"got HTTP {status} with body {body[:60]!r}"
        except (OSError, http.client.HTTPException) as err:
            problem = f"probe request failed: {type(err).__name__}: {err}"
        if not problem or time.monotonic() > deadline:
            return problem
        time.sleep(0.1)


def _counts(backends: list[Backend]) -> dict[str, int]:
    """Requests each backend has served so far (asked directly, not through a balancer); {} if one cannot say."""
    try:
        return {b.name: int(_get(b.server.port, "/count")[1]) for b in backends}
    except (OSError, http.client.HTTPException, ValueError):
        return {}


def _died(server: Server) -> str:
    text = f"{server.name} {server.proc.exit_text()}"
    tail = " | ".join(ln.strip() for ln in server.proc.log_tail(2).splitlines() if ln.strip())
    return text + (f" ({tail})" if tail and server.proc.popen.returncode not in (0, None) else "")


def _dead(variant: Variant, backends: list[Backend]) -> str:
    servers = [b.server for b in backends] + ([variant.server] if variant.server else [])
    return "; ".join(_died(s) for s in servers if not s.proc.alive())


# ---- one measured run --------------------------------------------------------------------------


def _measure(ctx: Context, variant: Variant, backends: list[Backend], plan: Plan,
             rate: float, index: int, duration: float) -> None:
    if variant.broken:
        return
    label = f"[{NAME}] {rate:g} req/s round {index} {variant.name}"
    port = variant.server.port if variant.server else backends[0].server.port
    dead = _dead(variant, backends)
    problem = f"{dead} before the run" if dead else _probe(port, backends)
    if problem:
        variant.broken = problem
        ctx.progress(f"{label}: FAILED: {problem}")
        return
    pin = ctx.placement.pin_load()
    if plan.warmup_s > 0:
        warm = openloop.run(variant.url, plan.load(rate, plan.warmup_s), headers=HEADERS, pin=pin)
        variant.warmups.append({"round": index, "rate_rps": rate, "ok": warm.ok, "failure": warm.failure,
                                "errors": warm.errors})
    before = _counts(backends)
    pid = variant.server.proc.pid if variant.server else None
    with LoadWindow(pid, ctx.placement) as window:
        result = openloop.run(variant.url, plan.load(rate, duration), headers=HEADERS, pin=pin)
    after = _counts(backends)
    counts = {k: after[k] - before[k] for k in after} if before and after else {}
    record = Round(index, rate, result, counts, failure=result.failure,
                   proxy_process_cpu_percent=window.process_cpu_percent,
                   proxy_cpu_percent=window.proxy_cpu_busy, load_cpu_percent=window.load_cpu_busy)
    dead = _dead(variant, backends)
    if dead:
        record.failure = f"{dead} during the load"
        variant.broken = record.failure
    elif not counts and record.ok:
        record.failure = "could not read the backends' request counts"
    variant.rounds.append(record)
    if record.ok:
        share = _share(record.counts)
        ctx.progress(f"{label}: {result.achieved_rps:,.0f} req/s, slow share {_pct(share)},"
                     f" p50 {result.latency.ms('p50'):.2f} ms, p99 {result.latency.ms('p99'):.2f} ms")
    else:
        ctx.progress(f"{label}: FAILED: {record.failure}")


def _share(counts: dict[str, int]) -> float | None:
    total = sum(counts.values())
    return counts.get(SLOW, 0) / total if total else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def run(ctx: Context) -> ScenarioResult:
    plan = Plan.of(ctx)
    background = procs.background_busy(1.0)
    ctx.progress(f"[{NAME}] CPU busy before start (other load): {_fmt_busy(background)}")
    ctx.progress(f"[{NAME}] starting 3 backends and {', '.join(VARIANTS)} ({_placement(ctx)})")
    backends = _start_backends(ctx)
    floor = Variant(FLOOR, url=backends[0].server.url)
    variants = [_start_variant(ctx, name, backends) for name in VARIANTS]
    for r in range(plan.rounds):
        for i, rate in enumerate(plan.rates):
            if r == 0:
                _measure(ctx, floor, backends, plan, rate, 1, plan.floor_duration_s)
            shift = (r + i) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                _measure(ctx, variant, backends, plan, rate, r + 1, plan.duration_s)
    return _result(ctx, plan, [floor, *variants], backends, background)


# ---- report ------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summary(variant: Variant, rate: float) -> dict[str, Any]:
    rounds = variant.at(rate)
    bad = [r for r in rounds if not r.ok]
    failure = (f"round {bad[0].index}: {bad[0].failure}" if bad
               else variant.broken or ("" if rounds else "not run"))
    counts: dict[str, int] = {}
    for r in rounds:
        for name, n in r.counts.items():
            counts[name] = counts.get(name, 0) + n
    loads = [r.load for r in rounds if r.ok]
    errors = _sum_dicts([r.load.errors for r in rounds])
    lat = [lr.latency for lr in loads]
    return {
        "ok": not failure,
        "failure": failure,
        "rounds": len(rounds),
        "achieved_rps_median": _round(_median([lr.achieved_rps for lr in loads])),
        "slow_share": None if _share(counts) is None else round(_share(counts), 5),
        "backend_counts": counts,
        "answered": sum(lr.completed for lr in loads),
        "p50_ms_median": _median([x.ms("p50") for x in lat]),
        "p90_ms_median": _median([x.ms("p90") for x in lat]),
        "p99_ms_median": _median([x.ms("p99") for x in lat]),
        "p99_ms_min": min((x.ms("p99") for x in lat), default=None),
        "p99_ms_max": max((x.ms("p99") for x in lat), default=None),
        "max_ms": max((x.ms("max") for x in lat), default=None),
        "failed_requests": sum(r.load.failed_requests for r in rounds),
        "errors_by_kind": errors,
        "generator_lag_p99_ms_max": max((lr.sched_lag.ms("p99") or 0.0 for lr in loads), default=None),
        "waited_for_connection": sum(lr.waited_for_connection for lr in loads),
        "proxy_process_cpu_percent_median": _round(_median(
            [r.proxy_process_cpu_percent for r in rounds if r.ok and r.proxy_process_cpu_percent is not None])),
    }


def _sum_dicts(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _quality_table(variants: list[Variant], plan: Plan, summaries: dict) -> Table:
    rows, notes = [], []
    for rate in plan.rates:
        for v in variants:
            s = summaries[(v.name, rate)]
            head = [f"{rate:,.0f}", v.name, BALANCING[v.name]]
            if not s["ok"]:
                short = s["failure"] if len(s["failure"]) <= 80 else s["failure"][:77] + "..."
                rows.append(head + ["FAILED", "-", "-", "-", "-", f"{s['failed_requests']:,}", "-", short])
                if short != s["failure"]:
                    notes.append(f"{v.name} at {rate:g} req/s FAILED: {s['failure']}")
                continue
            share = "-" if v.name == FLOOR else _pct(s["slow_share"])
            status = "ok"
            lag = s["generator_lag_p99_ms_max"]
            if lag is not None and lag > GEN_LAG_WARN_MS:
                status = f"ok, generator lagged (its scheduling lag p99 {lag:.1f} ms)"
            rows.append(head + [
                f"{s['achieved_rps_median']:,.0f}", share,
                _fmt(s["p50_ms_median"], ".2f"), _fmt(s["p99_ms_median"], ".2f"), _fmt(s["max_ms"], ".1f"),
                f"{s['failed_requests']:,}", _fmt(s["proxy_process_cpu_percent_median"], ".0f", "%"), status,
            ])
    rounds = f"{plan.rounds} round{'s' if plan.rounds != 1 else ''}"
    return Table(
        title=f"Balancing quality (median of {rounds}; floor: 1 run)",
        headers=["req/s target", "balancer", "method", "achieved req/s", "slow share",
                 "p50 ms", "p99 ms", "max ms", "errors", "proxy", "status"],
        rows=rows,
        numeric={"req/s target", "achieved req/s", "slow share", "p50 ms", "p99 ms", "max ms", "errors", "proxy"},
        notes=[
            "latency: from each request's intended send time (open loop) to the end of its response;"
            " it includes any wait for a free connection and the generator's own scheduling lag.",
            "slow share: requests the +50 ms backend served / all three backends' requests, from the backends'"
            " own counters over the measured runs (round-robin's expected share is 33.3%).",
            "floor: the generator straight to a fast backend, no balancer: the latency the measurement itself adds.",
            "proxy: CPU time of the balancer process (100% = one core).",
            "errors: requests without a good answer (timeout, connection lost, status >= 400).",
            "FAILED: any error (failed connects included), a failed probe, or a process that died.",
            *notes,
        ],
    )


def _ratio_table(plan: Plan, summaries: dict) -> tuple[Table, dict[str, Any]]:
    rows, data = [], {}
    for rate in plan.rates:
        mesh = summaries[("meshproxy", rate)]
        for ref in ROUND_ROBIN:
            other = summaries[(ref, rate)]
            label = f"meshproxy / {ref}"
            key = f"{rate:g} rps: {label}"
            failed = [n for n, s in (("meshproxy", mesh), (ref, other)) if not s["ok"]]
            if failed:
                data[key] = None
                rows.append([f"{rate:,.0f}", label, f"n/a ({failed[0]} FAILED)", f"<= {P99_TARGET}x: n/a"])
                continue
            value = mesh["p99_ms_median"] / other["p99_ms_median"]
            data[key] = round(value, 3)
            verdict = "met" if value <= P99_TARGET else "NOT met"
            rows.append([f"{rate:,.0f}", label, f"{value:.2f}x", f"<= {P99_TARGET}x: {verdict}"])
    table = Table("p99 latency ratio: PeakEWMA + P2C / round-robin", ["req/s target", "ratio", "value", "target"],
                  rows, numeric={"req/s target", "value"})
    return table, data


def _placement(ctx: Context) -> str:
    # The same placement as http1: here the load side is the generator and the backends.
    return ctx.placement.describe().replace("wrk + nginx", "generator + backends")


def _fmt_busy(busy: dict[int, float]) -> str:
    return ", ".join(f"CPU {cpu} {value:.0f}%" for cpu, value in sorted(busy.items()))


def _result(ctx: Context, plan: Plan, variants: list[Variant], backends: list[Backend],
            background: dict[int, float]) -> ScenarioResult:
    summaries = {(v.name, rate): _summary(v, rate) for v in variants for rate in plan.rates}
    ratio_table, ratios = _ratio_table(plan, summaries)
    notes = [f"CPU busy in the 1 s before the servers started (other load): {_fmt_busy(background)}"]
    if any(value > 10 for value in background.values()):
        notes.append("WARNING: the machine was not idle before the run; numbers are noisier than usual")
    for (name, rate), s in summaries.items():
        counted = sum(s["backend_counts"].values())
        answered = s["answered"]
        if s["ok"] and counted != answered:
            notes.append(f"{name} at {rate:g} req/s: the backends counted {counted} requests,"
                         f" the generator got {answered} answers (retries or stray requests?)")
        if s["ok"] and s["waited_for_connection"]:
            notes.append(f"{name} at {rate:g} req/s: {s['waited_for_connection']} requests waited for a free"
                         " connection (the pool was too small; the wait is in their latency)")
    for v in variants:
        if v.name == "meshproxy" and v.fastpath.get("all") is False:
            notes.append(f"WARNING: meshproxy ran WITHOUT the full compiled fast path: {v.fastpath.get('compiled')}")
        elif v.fastpath.get("error"):
            notes.append(f"{v.name}: could not check the fast path build: {v.fastpath['error']}")
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={
            "rates_rps": list(plan.rates),
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "rounds": plan.rounds,
            "floor_duration_s": plan.floor_duration_s,
            "connections": {f"{r:g}": openloop.pool_size(r) for r in plan.rates},
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "order": "rotated each round and rate: " + ", ".join(v.name for v in variants[1:]),
            "backends": ", ".join(f"{n} (+{d * 1000:g} ms)" if d else n for n, d in BACKENDS),
            "host_header": SERVICE,
            "generator": "benchmarks/openloop/openloop.c (via lib/openloop.py): open loop, evenly spaced sends,"
                         " keep-alive pool, latency from the intended send time",
            "cpu_placement": _placement(ctx),
            "nginx": "1 worker, upstream round-robin, keepalive 512 to the backends",
            "haproxy": "nbthread 1, balance roundrobin, http-reuse always, no checks, no logging",
            "meshproxy": f"outbound, {DESTINATION_ENV}=file://.../endpoints-balancing.yaml; MESHPROXY_LOG_LEVEL="
                         + (getattr(ctx.options, "meshproxy_log_level", None) or "warning"),
        },
        tables=[_quality_table(variants, plan, summaries), ratio_table],
        data={
            "variants": {
                v.name: {
                    "method": BALANCING[v.name],
                    "summary": {f"{rate:g}": summaries[(v.name, rate)] for rate in plan.rates},
                    "url": v.url,
                    "server_command": v.server.proc.argv if v.server else None,
                    "fastpath": v.fastpath or None,
                    "warmups": v.warmups,
                    "rounds": [r.to_json() for r in v.rounds],
                }
                for v in variants
            },
            "p99_ratios": ratios,
            "p99_target": P99_TARGET,
            "cpu_busy_before_start_percent": {str(k): round(v, 1) for k, v in background.items()},
            "backend_commands": {b.name: b.server.proc.argv for b in backends},
        },
        notes=notes,
    )
