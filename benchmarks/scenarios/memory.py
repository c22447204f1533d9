"""Scenario ``memory``: each proxy's resident memory idle, with 1,000 keep-alive connections, and after.

HAProxy, nginx (proxy, one worker) and meshproxy (outbound) sit in front of
the http1 scenario's nginx. For each, in turn: VmRSS right after it is ready,
the maximum during a wrk run with 1,000 keep-alive connections, and 10 s
after that run ended (read by a timer while the next proxy is loaded: each
proxy's memory is its own process's).
"""

from __future__ import annotations

import threading

from benchmarks.lib import procs, wrk
from benchmarks.lib.compare import Contender, died, http1_proxies, start
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.sampling import LoadWindow
from benchmarks.lib.servers import start_templated
from benchmarks.scenarios.http1 import BODY, probe

NAME = "memory"
DESCRIPTION = "proxy RSS: idle, under wrk -c 1000 keep-alive, 10 s after the load"
CONNECTIONS = 1000
AFTER_S = 10.0
AFTER_QUICK_S = 5.0  # the proxy trims its heap every second: 5 s still shows whether RSS came back


def _after_s(ctx: Context) -> float:
    return AFTER_QUICK_S if ctx.quick else AFTER_S


def run(ctx: Context) -> ScenarioResult:
    duration = ctx.run_seconds(2.0)
    params = wrk.WrkParams(threads=1, connections=CONNECTIONS, duration_s=duration, timeout_s=5.0)
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-http1.conf.tmpl",
                              "memory-backend", under_test=False, body=BODY)
    host = backend.address
    starters = http1_proxies(ctx, NAME, backend)
    contenders = [
        start(ctx, NAME, "haproxy", "HAProxy nbthread 1", starters["haproxy"]),
        start(ctx, NAME, "nginx", "nginx 1 worker", starters["nginx"]),
        start(ctx, NAME, "meshproxy", "outbound", starters["meshproxy"]),
    ]
    for c in contenders:
        if c.servers:
            c.extra["idle_kib"] = procs.rss_kib(c.servers[0].proc.pid)
    timers: list[threading.Timer] = []
    try:
        for c in contenders:
            _load(ctx, c, params, host, backend, timers)
    finally:
        for t in timers:
            t.join()
    for c in contenders:
        if c.servers:
            c.extra["hwm_kib"] = procs.hwm_kib(c.servers[0].proc.pid)
            if not c.broken and not c.servers[0].proc.alive():
                c.broken = f"{died(c.servers[0])} after the load"
    return _result(ctx, contenders, params)


def _load(ctx: Context, c: Contender, params: wrk.WrkParams, host: str, backend, timers: list) -> None:
    if c.broken:
        return
    server = c.servers[0]
    for s in (server, backend):
        if not s.proc.alive():
            c.broken = f"{died(s)} before the load"
            return
    problem = probe(server.port, host)
    if problem:
        c.broken = problem
        return
    with LoadWindow(server.proc.pid, ctx.placement) as window:
        res = wrk.run(f"http://{c.target}/", params, headers={"Host": host}, pin=ctx.placement.pin_load())
    c.extra.update(load_kib=window.rss_max_kib, rps=res.rps, wrk=res.to_json(),
                   cpu_percent=window.process_cpu_percent)
    if not res.ok:
        c.broken = res.failure
    for s in (server, backend):
        if not s.proc.alive():
            c.broken = f"{died(s)} during the load"
    ctx.progress(f"[{NAME}] {c.name}: " + (f"FAILED: {c.broken}" if c.broken else
                 f"{res.rps:,.0f} req/s, RSS max {(window.rss_max_kib or 0) / 1024:.1f} MiB"))

    def after(c: Contender = c, pid: int = server.proc.pid) -> None:
        c.extra["after_kib"] = procs.rss_kib(pid)

    timer = threading.Timer(_after_s(ctx), after)
    timer.daemon = True
    timer.start()
    timers.append(timer)


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _result(ctx: Context, contenders: list[Contender], params: wrk.WrkParams) -> ScenarioResult:
    rows, data = [], {}
    for c in contenders:
        e = c.extra
        per_conn = None
        if e.get("load_kib") is not None and e.get("idle_kib") is not None:
            per_conn = (e["load_kib"] - e["idle_kib"]) / CONNECTIONS
        data[c.name] = {k: v for k, v in e.items() if k != "wrk"} | {"failure": c.broken, "wrk": e.get("wrk")}
        if c.broken:
            rows.append([c.name, _mib(e.get("idle_kib")), "-", "-", "-", "-", "-", f"FAILED: {c.broken[:90]}"])
            continue
        rows.append([
            c.name, _mib(e.get("idle_kib")), _mib(e.get("load_kib")), _mib(e.get("after_kib")),
            _mib(e.get("hwm_kib")), "-" if per_conn is None else f"{per_conn:.1f}",
            f"{e.get('rps', 0):,.0f}", "ok",
        ])
    after_s = _after_s(ctx)
    after = f"{after_s:.0f} s after"
    table = Table(
        f"Resident memory (VmRSS, MiB) with {CONNECTIONS:,} keep-alive connections",
        ["proxy", "idle", "under load (max)", after, "peak (VmHWM)", "KiB / conn", "req/s under load", "status"],
        rows,
        numeric={"idle", "under load (max)", after, "peak (VmHWM)", "KiB / conn", "req/s under load"},
        notes=[
            "idle: right after the proxy is ready, before any request; under load: max of 200 ms samples"
            f" during the {params.duration_s:g} s wrk run; {after}: {after_s:.0f} s after that run ended.",
            "KiB / conn: (under load - idle) / connections. req/s is only there to show the load was real.",
            "FAILED: socket errors or status >= 400 under load, a failed probe, or a process that died.",
        ],
    )
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={**params.describe(), "order": "haproxy, nginx, meshproxy (one load each)",
                "cpu_placement": ctx.placement.describe()},
        tables=[table],
        data={"proxies": data},
    )
