"""The comparison shape the h2, grpc, tcp and connrate scenarios share.

Each scenario names its contenders (``direct``, ``haproxy``, ``nginx``,
``meshproxy``...), starts them through ``start``, and hands ``alternate``
one ``measure`` function that runs a load against a contender and returns a
``Sample``. ``alternate`` rotates the order every round, checks before and
after each run that every process involved is still alive, and records the
proxies' CPU and RSS; ``table`` turns the medians into one table with the
ratios to HAProxy and to direct. A contender with any failed round is FAILED
(no numbers, ratios ``n/a``), with the reason in the status column.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lib import procs
from benchmarks.lib.context import Context
from benchmarks.lib.report import Table
from benchmarks.lib.sampling import LoadWindow
from benchmarks.lib.servers import NotReady, Server, start_meshproxy, start_templated


@dataclass
class Sample:
    """One measured run: ``metrics`` holds numbers by key, ``value`` is the headline one."""

    index: int
    ok: bool
    failure: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    proxy_process_cpu_percent: float | None = None
    rss_max_kib: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.index, "ok": self.ok, "failure": self.failure,
            "metrics": {k: round(v, 4) for k, v in self.metrics.items()},
            "proxy_process_cpu_percent": _round(self.proxy_process_cpu_percent),
            "proxy_rss_max_kib": self.rss_max_kib, "raw": self.raw,
        }


@dataclass
class Contender:
    name: str
    path: str = ""                                        # what the load goes through, for the table
    servers: list[Server] = field(default_factory=list)   # the proxies under test; [] for direct
    target: str = ""                                      # host:port the load connects to
    extra: dict[str, Any] = field(default_factory=dict)   # scenario-specific (authority, URL...)
    broken: str = ""
    rounds: list[Sample] = field(default_factory=list)

    def failure(self) -> str:
        if self.broken:
            return self.broken
        bad = [r for r in self.rounds if not r.ok]
        if bad:
            return f"round {bad[0].index}: {bad[0].failure}"
        return "" if self.rounds else "not run"

    def median(self, key: str) -> float | None:
        values = [r.metrics[key] for r in self.rounds if r.ok and key in r.metrics]
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "target": self.target, "failure": self.failure(),
            "server_commands": [s.proc.argv for s in self.servers],
            "rounds": [r.to_json() for r in self.rounds],
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def start(ctx: Context, scenario: str, name: str, path: str, starter: Callable[[], Contender]) -> Contender:
    """Run ``starter``; a server that does not come up makes the contender FAILED, not the scenario."""
    try:
        contender = starter()
    except (NotReady, OSError, KeyError, ValueError) as err:
        ctx.progress(f"[{scenario}] {name}: FAILED to start: {err}")
        return Contender(name, path, broken=f"did not start: {err}")
    contender.name, contender.path = name, path
    return contender


BASELINE = "meshproxy-baseline"
# The bar the issue sets against the revision before the data-path work: no more than 5% worse.
BASELINE_TOLERANCE = 0.05


def baseline_dir(ctx: Context) -> Path | None:
    """``--baseline DIR``: a checkout of another revision, built in place, run beside this one."""
    value = getattr(ctx.options, "baseline", None)
    return Path(value) if value else None


def with_baseline(ctx: Context, scenario: str, path: str, starter: Callable[[Path], Contender]) -> list[Contender]:
    """``[meshproxy-baseline]`` started by ``starter(DIR)`` when ``--baseline DIR`` was given, else []."""
    where = baseline_dir(ctx)
    if where is None:
        return []
    return [start(ctx, scenario, BASELINE, f"{path} ({where.name})", lambda: starter(where))]


def baseline_note(contenders: list[Contender], key: str, higher_is_better: bool = True,
                  label: str = "") -> str | None:
    """One line: meshproxy / meshproxy-baseline on ``key`` and whether it is within 5%; None without one."""
    by_name = {c.name: c for c in contenders}
    base, mine = by_name.get(BASELINE), by_name.get("meshproxy")
    if base is None or mine is None:
        return None
    ratio = _ratio(mine, base, key)
    what = label or key
    if ratio in ("n/a", "-"):
        return f"meshproxy / {BASELINE} ({what}): n/a ({mine.failure() or base.failure() or 'no value'})"
    value = float(ratio.rstrip("x"))
    ok = value >= 1 - BASELINE_TOLERANCE if higher_is_better else value <= 1 + BASELINE_TOLERANCE
    bar = f">= {1 - BASELINE_TOLERANCE:.2f}" if higher_is_better else f"<= {1 + BASELINE_TOLERANCE:.2f}"
    return (f"meshproxy / {BASELINE} ({what}): {value:.3f}x, the issue's bar {bar} (no more than 5% worse):"
            f" {'met' if ok else 'NOT met'}")


def http1_proxies(ctx: Context, scenario: str, backend: Server) -> dict[str, Callable[[], Contender]]:
    """Starters of the HTTP/1 contenders in front of the nginx ``backend``: direct, HAProxy and nginx
    (one thread or worker, keep-alive upstream) and meshproxy's outbound listener (routed by Host)."""
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"

    def direct() -> Contender:
        return Contender("direct", target=backend.address)

    def haproxy() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "haproxy", "haproxy-http1.cfg.tmpl",
                            f"{scenario}-haproxy", upstream_port=backend.port)
        return Contender("haproxy", servers=[s], target=s.address)

    def nginx() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-proxy-http1.conf.tmpl",
                            f"{scenario}-nginx", upstream_port=backend.port)
        return Contender("nginx", servers=[s], target=s.address)

    def meshproxy() -> Contender:
        s = start_meshproxy(ctx.group, ctx.placement, ctx.repo, backend, pure=False, name=f"{scenario}-meshproxy",
                            log_level=log_level)
        return Contender("meshproxy", servers=[s], target=s.address, extra={"fastpath": s.info.get("fastpath")})

    def baseline(where: Path) -> Contender:
        s = start_meshproxy(ctx.group, ctx.placement, where, backend, pure=False, name=f"{scenario}-{BASELINE}",
                            log_level=log_level)
        return Contender(BASELINE, servers=[s], target=s.address, extra={"fastpath": s.info.get("fastpath")})

    return {"direct": direct, "haproxy": haproxy, "nginx": nginx, "meshproxy": meshproxy, BASELINE: baseline}


def died(server: Server) -> str:
    text = f"{server.name} {server.proc.exit_text()}"
    if server.proc.popen.returncode not in (0, None):
        tail = " | ".join(ln.strip() for ln in server.proc.log_tail(2).splitlines() if ln.strip())
        if tail:
            text += f" ({tail})"
    return text


def alternate(
    ctx: Context,
    scenario: str,
    contenders: list[Contender],
    rounds: int,
    measure: Callable[[Contender, int], Sample],
    shared: list[Server],
    unit: Callable[[Sample], str],
) -> None:
    """Every round runs every contender once, in an order rotated per round."""
    live = [c for c in contenders if not c.broken]
    for r in range(rounds):
        order = live[r % len(live):] + live[: r % len(live)] if live else []
        for c in order:
            if c.broken:
                continue
            dead = [s for s in (*shared, *c.servers) if not s.proc.alive()]
            if dead:
                c.broken = f"{died(dead[0])} before round {r + 1}"
                ctx.progress(f"[{scenario}] round {r + 1} {c.name}: FAILED: {c.broken}")
                continue
            pids = [s.proc.pid for s in c.servers]
            cpu0 = sum(procs.cpu_seconds(p) or 0.0 for p in pids)
            t0 = time.monotonic()
            with LoadWindow(pids[0] if pids else None, ctx.placement) as window:
                sample = measure(c, r + 1)
            elapsed = time.monotonic() - t0
            if pids and elapsed > 0:
                cpu1 = sum(procs.cpu_seconds(p) or 0.0 for p in pids)
                sample.proxy_process_cpu_percent = 100.0 * (cpu1 - cpu0) / elapsed
            sample.rss_max_kib = window.rss_max_kib
            dead = [s for s in (*c.servers, *shared) if not s.proc.alive()]
            if dead:
                sample.ok = False
                sample.failure = f"{died(dead[0])} during the load"
                c.broken = sample.failure
            c.rounds.append(sample)
            status = unit(sample) if sample.ok else f"FAILED: {sample.failure}"
            ctx.progress(f"[{scenario}] round {r + 1} {c.name}: {status}")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def _ratio(c: Contender, ref: Contender | None, key: str) -> str:
    if ref is None or ref is c:
        return "-"
    if c.failure() or ref.failure():
        return "n/a"
    a, b = c.median(key), ref.median(key)
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def table(
    title: str,
    contenders: list[Contender],
    headline: tuple[str, str, str],
    columns: list[tuple[str, str, str]],
    notes: list[str],
) -> tuple[Table, dict[str, Any]]:
    """Median per contender, the headline's ratios to haproxy and direct, proxy CPU, status.

    ``headline`` and ``columns`` are (header, metrics key, format spec).
    Ratios compare the headline key; ``data`` carries them for the JSON.
    With a ``meshproxy-baseline`` contender (``--baseline``) a ``/ baseline``
    column gives meshproxy's headline divided by the baseline's.
    """
    by_name = {c.name: c for c in contenders}
    base = by_name.get(BASELINE)
    head, key, spec = headline
    rows, data, long_notes = [], {}, []
    for c in contenders:
        failure = c.failure()
        ratios = {
            "vs_haproxy": _ratio(c, by_name.get("haproxy"), key),
            "vs_direct": _ratio(c, by_name.get("direct"), key),
        }
        if base is not None:
            ratios["vs_baseline"] = _ratio(c, base, key) if c.name == "meshproxy" else "-"
        cpu = [r.proxy_process_cpu_percent for r in c.rounds if r.ok and r.proxy_process_cpu_percent is not None]
        values = [r.metrics[key] for r in c.rounds if r.ok and key in r.metrics]
        data[c.name] = {
            "failure": failure,
            "median": {k: _round(c.median(k), 4) for _, k, _ in (headline, *columns)},
            "ratios": ratios,
        }
        extra = [ratios["vs_baseline"]] if base is not None else []
        if failure:
            short = failure if len(failure) <= 90 else failure[:87] + "..."
            if short != failure:
                long_notes.append(f"{c.name} FAILED: {failure}")
            rows.append([c.name, c.path, "FAILED", "-", *["-" for _ in columns], "-", "-", *["-" for _ in extra],
                         "-", short])
            continue
        spread = f"{min(values):{spec}}-{max(values):{spec}}" if values else "-"
        rows.append([
            c.name, c.path, _fmt(c.median(key), spec), spread,
            *[_fmt(c.median(k), s) for _, k, s in columns],
            ratios["vs_haproxy"], ratios["vs_direct"], *extra,
            _fmt(statistics.median(cpu), ".0f") + "%" if cpu else "-", "ok",
        ])
    base_headers = ["/ baseline"] if base is not None else []
    headers = ["variant", "path", head, "min-max", *[h for h, _, _ in columns],
               "/ haproxy", "/ direct", *base_headers, "proxy", "status"]
    base_notes = ([f"/ baseline: meshproxy's median {head} divided by {BASELINE}'s (the same scenario run by"
                   " the --baseline checkout, in the same run, on the same machine)."] if base is not None else [])
    return Table(
        title=title,
        headers=headers,
        rows=rows,
        numeric={head, "min-max", *[h for h, _, _ in columns], "/ haproxy", "/ direct", *base_headers, "proxy"},
        notes=[
            f"/ haproxy, / direct: median {head} divided by HAProxy's and by direct's; n/a when either FAILED.",
            *base_notes,
            "proxy: CPU time of the proxy process(es) under test during the measured run (100% = one core).",
            *notes,
            *long_notes,
        ],
    ), data
