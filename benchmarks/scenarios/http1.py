"""Scenario ``http1``: HTTP/1.1 keep-alive, 64-byte responses, wrk through each proxy.

Variants, all against the same nginx and sending identical requests:
direct (wrk -> nginx), haproxy, nginx (a second nginx as the proxy, one
worker, keep-alive upstream), meshproxy (compiled fast path) and
meshproxy-pure (MESHPROXY_PURE=1). They run alternately, one measured wrk
run per variant per round with the order rotated each round, so drift of the
machine over time spreads over all variants instead of biasing one. The
table reports per-variant medians over rounds, the ratios the issue asks for,
and meshproxy's memory: idle, under load and 5 s after the load.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lib import procs, wrk
from benchmarks.lib.context import Context
from benchmarks.lib.meshtls import series_value
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.sampling import LoadWindow
from benchmarks.lib.servers import NotReady, Server, start_haproxy, start_meshproxy, start_nginx, start_templated

NAME = "http1"
DESCRIPTION = "HTTP/1.1 keep-alive, 64-byte responses: wrk -> [proxy] -> nginx"

# Exactly 64 bytes; no quotes or $ (it sits in nginx.conf).
BODY = "meshproxy benchmark: a fixed small response body, 64 bytes long."
assert len(BODY.encode()) == 64, len(BODY.encode())

VARIANTS = ("direct", "haproxy", "nginx", "meshproxy", "meshproxy-pure")
BASELINE = "meshproxy-baseline"  # only with --baseline DIR: meshproxy from that checkout
TAPPED = "meshproxy-tapped"      # only with --variants naming it: meshproxy with a match-all tap open
# The same tap read by nghttp (C, as Linkerd's Go tap client would be) instead of viz tap's Python client: on two
# CPUs the tap client shares the load generator's CPU, and its own cost there lowers the load, not the proxy.
TAPPED_C = "meshproxy-tapped-c"
TAPPED_VARIANTS = (TAPPED, TAPPED_C)
TAP_COST_BAR = 0.90              # the telemetry issue: a tap matching everything costs at most 10%
BASELINE_TOLERANCE = 0.05        # the issue: no more than 5% worse than the revision before
RSS_TARGET_MIB = 30.0
AFTER_LOAD_DELAY_S = 5.0
# The acceptance line for meshproxy / haproxy throughput.
RATIO_DONE, RATIO_NOT_DONE = 1.0, 0.7


@dataclass
class Round:
    index: int
    wrk: wrk.WrkResult
    proxy_cpu_percent: float | None = None
    load_cpu_percent: float | None = None
    proxy_process_cpu_percent: float | None = None
    rss_max_kib: int | None = None
    tap_reader_cpu_s: float | None = None  # tapped variants: CPU seconds the tap reader spent in the measured run

    @property
    def ok(self) -> bool:
        return self.wrk.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.index,
            "wrk": self.wrk.to_json(),
            "proxy_cpu_busy_percent": _round(self.proxy_cpu_percent),
            "load_cpu_busy_percent": _round(self.load_cpu_percent),
            "proxy_process_cpu_percent": _round(self.proxy_process_cpu_percent),
            "proxy_rss_max_kib": self.rss_max_kib,
            "proxy_us_per_request": _round(self.proxy_us_per_request()),
            "tap_reader_us_per_request": _round(self.tap_reader_us_per_request()),
        }

    def proxy_us_per_request(self) -> float | None:
        if self.proxy_process_cpu_percent is None or not self.wrk.rps:
            return None
        return self.proxy_process_cpu_percent * 1e4 / self.wrk.rps

    def tap_reader_us_per_request(self) -> float | None:
        """The tap reader's CPU per proxied request: it runs on the load CPU, so it lowers the load."""
        if self.tap_reader_cpu_s is None or not self.wrk.requests:
            return None
        return self.tap_reader_cpu_s * 1e6 / self.wrk.requests


@dataclass
class Variant:
    name: str
    server: Server | None = None      # the process under test; None for direct
    url: str = ""
    broken: str = ""                  # set once the variant cannot run any more
    rounds: list[Round] = field(default_factory=list)
    rss_idle_kib: int | None = None
    rss_after_kib: int | None = None
    hwm_kib: int | None = None
    fastpath: dict[str, Any] = field(default_factory=dict)
    tap_events: tuple[int, int] | None = None  # tapped variants: (events delivered, dropped) after the run
    tap_reader_pid: int | None = None          # tapped variants: the process reading the tap

    def failure(self) -> str:
        if self.broken:
            return self.broken
        bad = [r for r in self.rounds if not r.ok]
        if bad:
            return f"round {bad[0].index}: {bad[0].wrk.failure}"
        if not self.rounds:
            return "not run"
        return ""


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def probe(server_port: int, host_header: str) -> str:
    """One request as wrk will send it; '' when the answer is 200 with our body."""
    conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host_header})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as err:
        return f"probe request failed: {type(err).__name__}: {err}"
    finally:
        conn.close()
    if resp.status != 200:
        return f"probe got HTTP {resp.status} (l5d-proxy-error: {resp.getheader('l5d-proxy-error')})"
    if body != BODY.encode():
        return f"probe got a different body ({len(body)} bytes)"
    return ""


def _params(ctx: Context) -> tuple[wrk.WrkParams, int, float]:
    duration = ctx.run_seconds(2.0)
    rounds = ctx.round_count()
    warmup = 0.0 if ctx.quick else 2.0  # quick runs skip the warm-up
    return wrk.WrkParams(threads=1, connections=50, duration_s=duration), rounds, warmup


def run(ctx: Context) -> ScenarioResult:
    params, rounds, warmup = _params(ctx)
    baseline = getattr(ctx.options, "baseline", None)
    known = VARIANTS + ((BASELINE,) if baseline else ()) + TAPPED_VARIANTS
    default = [v for v in known if v not in TAPPED_VARIANTS]
    wanted = [v for v in (getattr(ctx.options, "variants", None) or default) if v in known]
    background = procs.background_busy(1.0)
    ctx.progress(f"[{NAME}] CPU busy before start (other load): {_fmt_busy(background)}")
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    nginx = start_nginx(ctx.group, ctx.placement, ctx.run_dir, BODY)
    host = nginx.address  # every variant sends this Host header: identical requests

    variants = [_start_variant(ctx, name, nginx) for name in wanted]
    timers: list[threading.Timer] = []
    try:
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[: r % len(variants)]
            for variant in order:
                _measure(ctx, variant, nginx, host, params, warmup, r + 1, timers)
    finally:
        for timer in timers:
            timer.join()
    for variant in variants:
        if variant.server is not None:
            variant.hwm_kib = procs.hwm_kib(variant.server.proc.pid)
            if variant.name in TAPPED_VARIANTS:
                variant.tap_events = _tap_counts(variant.server)
                ctx.progress(f"[{NAME}] {variant.name}: tap events delivered {variant.tap_events[0]},"
                             f" dropped {variant.tap_events[1]}")
    return _result(ctx, variants, params, rounds, warmup, nginx, background)


def _start_variant(ctx: Context, name: str, nginx: Server) -> Variant:
    variant = Variant(name)
    try:
        if name == "direct":
            variant.url = nginx.url
            return variant
        if name == "haproxy":
            variant.server = start_haproxy(ctx.group, ctx.placement, ctx.run_dir, nginx)
        elif name == "nginx":
            variant.server = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx",
                                             "nginx-proxy-http1.conf.tmpl", "http1-nginx", upstream_port=nginx.port)
        else:
            pure = name == "meshproxy-pure"
            repo = Path(ctx.options.baseline) if name == BASELINE else ctx.repo
            log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"
            variant.server = start_meshproxy(
                ctx.group, ctx.placement, repo, nginx, pure=pure, name=name, log_level=log_level
            )
            variant.fastpath = variant.server.info.get("fastpath", {})
            if name in TAPPED_VARIANTS:
                variant.tap_reader_pid = _open_tap(ctx, variant.server, c_client=name == TAPPED_C)
        variant.url = variant.server.url
        variant.rss_idle_kib = procs.rss_kib(variant.server.proc.pid)
    except (NotReady, OSError, KeyError, ValueError) as err:
        variant.broken = f"did not start: {err}"
        ctx.progress(f"[{NAME}] {name}: FAILED to start: {err}")
    return variant


def _open_tap(ctx: Context, server: Server, c_client: bool = False) -> int:
    """A match-everything tap on the proxy for the whole run, read on the load CPUs by benchmarks/lib/tapsink.py
    (viz tap's own client) or, with ``c_client``, by nghttp (the same Observe call; it reads and discards)."""
    tap_port = server.info["ports"].get("tap")
    if tap_port is None:
        raise NotReady("this revision has no tap server")
    if c_client:
        from benchmarks.lib.tapsink import nghttp_command

        command = nghttp_command(tap_port, ctx.run_dir)
    else:
        command = [sys.executable, "-m", "benchmarks.lib.tapsink", f"127.0.0.1:{tap_port}"]
    reader = ctx.group.start(f"tap-sink-{server.name}", ctx.placement.pin_load() + command, cwd=ctx.repo)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if b"\ntap_sessions_open 1" in _metrics(server):
            return reader.pid
        time.sleep(0.1)
    raise NotReady("the tap sink's tap did not open within 10 s")


def _metrics(server: Server) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", server.info["ports"]["admin"], timeout=2)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read()
    except OSError:
        return b""
    finally:
        conn.close()


def _tap_counts(server: Server) -> tuple[int, int]:
    """The proxy's own count of tap events sent and dropped (a sink that fell behind makes the proxy drop)."""
    text = _metrics(server).decode(errors="replace")
    return int(series_value(text, "tap_events_total")), int(series_value(text, "tap_events_dropped_total"))


def _died(server: Server) -> str:
    """'<name> exited ...' plus the last log lines when it crashed (not a clean stop)."""
    text = f"{server.name} {server.proc.exit_text()}"
    if server.proc.popen.returncode not in (0, None):
        tail = " | ".join(ln.strip() for ln in server.proc.log_tail(2).splitlines() if ln.strip())
        if tail:
            text += f" ({tail})"
    return text


def _measure(
    ctx: Context,
    variant: Variant,
    nginx: Server,
    host: str,
    params: wrk.WrkParams,
    warmup: float,
    index: int,
    timers: list[threading.Timer],
) -> None:
    if variant.broken:
        return
    for server in (nginx, variant.server):
        if server is not None and not server.proc.alive():
            variant.broken = f"{_died(server)} before round {index}"
            ctx.progress(f"[{NAME}] round {index} {variant.name}: FAILED: {variant.broken}")
            return
    port = variant.server.port if variant.server else nginx.port
    problem = probe(port, host)
    if problem:
        variant.broken = f"round {index}: {problem}"
        ctx.progress(f"[{NAME}] round {index} {variant.name}: FAILED: {problem}")
        return

    headers = {"Host": host}
    pin = ctx.placement.pin_load()
    if warmup:
        wrk.run(variant.url, wrk.WrkParams(params.threads, params.connections, warmup), headers=headers, pin=pin)

    pid = variant.server.proc.pid if variant.server else None
    reader = variant.tap_reader_pid
    reader_cpu = procs.cpu_seconds(reader) if reader else None
    with LoadWindow(pid, ctx.placement) as window:
        result = wrk.run(variant.url, params, headers=headers, pin=pin)
    reader_after = procs.cpu_seconds(reader) if reader else None
    record = Round(
        index,
        result,
        proxy_cpu_percent=window.proxy_cpu_busy,
        load_cpu_percent=window.load_cpu_busy,
        proxy_process_cpu_percent=window.process_cpu_percent,
        rss_max_kib=window.rss_max_kib,
        tap_reader_cpu_s=None if reader_cpu is None or reader_after is None else reader_after - reader_cpu,
    )
    for server in (variant.server, nginx):
        if server is not None and not server.proc.alive():
            record.wrk.ok = False
            record.wrk.failure = f"{_died(server)} during the load"
            variant.broken = record.wrk.failure
    variant.rounds.append(record)
    status = f"{result.rps:,.0f} rps" if record.ok else f"FAILED: {record.wrk.failure}"
    ctx.progress(f"[{NAME}] round {index} {variant.name}: {status}")

    if pid is not None and record.ok:
        def after_load(v: Variant = variant, p: int = pid) -> None:
            v.rss_after_kib = procs.rss_kib(p)

        timer = threading.Timer(AFTER_LOAD_DELAY_S, after_load)
        timer.daemon = True
        timer.start()
        timers.append(timer)


# ---- tables ---------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summary(variant: Variant) -> dict[str, Any]:
    ok = [r for r in variant.rounds if r.ok]
    failure = variant.failure()
    return {
        "ok": not failure,
        "failure": failure,
        "rps_median": _round(_median([r.wrk.rps for r in ok])),
        "tap_events_delivered_dropped": list(variant.tap_events) if variant.tap_events is not None else None,
        "rps_min": _round(min((r.wrk.rps for r in ok), default=None)),
        "rps_max": _round(max((r.wrk.rps for r in ok), default=None)),
        "p50_ms_median": _round(_median([r.wrk.latency_ms["p50"] for r in ok]), 3),
        "p99_ms_median": _round(_median([r.wrk.latency_ms["p99"] for r in ok]), 3),
        "proxy_process_cpu_percent_median": _round(
            _median([r.proxy_process_cpu_percent for r in ok if r.proxy_process_cpu_percent is not None])
        ),
        "proxy_cpu_busy_percent_median": _round(
            _median([r.proxy_cpu_percent for r in ok if r.proxy_cpu_percent is not None])
        ),
        "load_cpu_busy_percent_median": _round(
            _median([r.load_cpu_percent for r in ok if r.load_cpu_percent is not None])
        ),
        "proxy_cpu_other_work_percent_median": _round(_median([o for r in ok if (o := _other_work(r)) is not None])),
        "proxy_us_per_request_median": _round(_median([u for r in ok if (u := r.proxy_us_per_request()) is not None])),
        "tap_reader_us_per_request_median": _round(
            _median([u for r in ok if (u := r.tap_reader_us_per_request()) is not None])
        ),
    }


def _other_work(r: Round) -> float | None:
    """Busy share of the proxy CPU not spent by the proxy process: someone else's work."""
    if r.proxy_cpu_percent is None or r.proxy_process_cpu_percent is None:
        return None  # direct: no proxy, nothing to share
    return max(0.0, r.proxy_cpu_percent - r.proxy_process_cpu_percent)


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


CONTENDED_PERCENT = 20.0


def _ok_status(summary: dict[str, Any]) -> str:
    other = summary["proxy_cpu_other_work_percent_median"]
    if other is not None and other > CONTENDED_PERCENT:
        return f"ok, proxy CPU shared ({other:.0f}% other work)"
    return "ok"


def _throughput_table(variants: list[Variant], summaries: dict[str, dict], rounds: int) -> Table:
    rows, notes, notes_shared = [], [], []
    for v in variants:
        s = summaries[v.name]
        if s["ok"]:
            spread = f"{s['rps_min']:,.0f}-{s['rps_max']:,.0f}"
            if _ok_status(s) != "ok" and not notes_shared:
                notes_shared.append(
                    f"'proxy CPU shared': over {CONTENDED_PERCENT:.0f}% of the proxy's CPU went to other processes"
                    " (proxy CPU minus proxy): the proxy did not have its core to itself; its req/s is understated."
                )
            rows.append([
                v.name, f"{s['rps_median']:,.0f}", spread,
                _fmt(s["p50_ms_median"], ".3f"), _fmt(s["p99_ms_median"], ".3f"),
                _fmt(s["proxy_process_cpu_percent_median"], ".0f", "%"),
                _fmt(s["proxy_cpu_busy_percent_median"], ".0f", "%"),
                _fmt(s["load_cpu_busy_percent_median"], ".0f", "%"), _ok_status(s),
            ])
        else:
            short = s["failure"] if len(s["failure"]) <= 90 else s["failure"][:87] + "..."
            rows.append([v.name, "FAILED", "-", "-", "-", "-", "-", "-", short])
            if short != s["failure"]:
                notes.append(f"{v.name} FAILED: {s['failure']}")
    return Table(
        title=f"Throughput and latency (median of {rounds} round{'s' if rounds != 1 else ''})",
        headers=["variant", "req/s", "min-max req/s", "p50 ms", "p99 ms", "proxy", "proxy CPU", "load CPU", "status"],
        rows=rows,
        numeric={"req/s", "min-max req/s", "p50 ms", "p99 ms", "proxy", "proxy CPU", "load CPU"},
        notes=[
            "proxy: CPU time of the proxy process itself (100% = one core);"
            " proxy CPU / load CPU: how busy the CPU pinned to the proxy / to wrk + nginx was (anyone's work).",
            "FAILED: socket errors, status >= 400, a failed probe, or a process that died or never started.",
            *notes_shared,
            *notes,
        ],
    )


def _ratio(summaries: dict[str, dict], num: str, den: str) -> tuple[float | None, str]:
    a, b = summaries.get(num), summaries.get(den)
    if a is None or b is None:
        return None, "n/a (variant not selected)"
    for name, s in ((num, a), (den, b)):
        if not s["ok"]:
            return None, f"n/a ({name} FAILED)"
    return a["rps_median"] / b["rps_median"], ""


def _ratio_table(summaries: dict[str, dict]) -> tuple[Table, dict[str, Any]]:
    specs = [
        ("meshproxy / meshproxy-baseline", "meshproxy", BASELINE,
         f"against the --baseline checkout; the issue's bar: >= {1 - BASELINE_TOLERANCE:.2f} (no more than 5% slower)"),
        ("meshproxy / haproxy", "meshproxy", "haproxy", "the issue's bar: >= 1.0 done, < 0.7 not done"),
        ("meshproxy / direct", "meshproxy", "direct", "throughput kept with the proxy in the path"),
        ("meshproxy / nginx", "meshproxy", "nginx", "against nginx as a proxy (one worker)"),
        ("compiled / pure", "meshproxy", "meshproxy-pure", "what the Cython build buys"),
        ("meshproxy-tapped / meshproxy", TAPPED, "meshproxy",
         f"a tap matching every request open; the bar: >= {TAP_COST_BAR:.2f} (at most 10% lost)"),
        ("meshproxy-tapped-c / meshproxy", TAPPED_C, "meshproxy",
         f"the same tap read by nghttp (C); the bar: >= {TAP_COST_BAR:.2f}"),
        ("haproxy / direct", "haproxy", "direct", "reference: the same for HAProxy"),
        ("nginx / direct", "nginx", "direct", "reference: the same for nginx as a proxy"),
    ]
    rows, data, extra_rows = [], {}, []
    if BASELINE not in summaries:
        specs = specs[1:]
    for label, num, den, meaning in specs:
        value, why = _ratio(summaries, num, den)
        data[label] = None if value is None else round(value, 3)
        verdict = ""
        if den == BASELINE and value is not None:
            verdict = f"{'met' if value >= 1 - BASELINE_TOLERANCE else 'NOT met'}: no more than 5% slower"
        if num in TAPPED_VARIANTS and value is not None:
            verdict = f"{'met' if value >= TAP_COST_BAR else 'NOT met'}: at most 10% lost to a match-all tap"

        if den == BASELINE:
            for key, what in (("p50_ms_median", "p50"), ("p99_ms_median", "p99")):
                lat, lat_why = _latency_ratio(summaries, key)
                data[f"{what} latency: meshproxy / meshproxy-baseline"] = None if lat is None else round(lat, 3)
                extra_rows.append([f"{what} latency: meshproxy / meshproxy-baseline", lat_why or f"{lat:.2f}x",
                                   "" if lat is None else
                                   f"{'met' if lat <= 1 + BASELINE_TOLERANCE else 'NOT met'}: lower is better,"
                                   f" the bar <= {1 + BASELINE_TOLERANCE:.2f}"])
        if label == "meshproxy / haproxy" and value is not None:
            if value >= RATIO_DONE:
                verdict = "meets the bar (>= 1.0)"
            elif value < RATIO_NOT_DONE:
                verdict = "below 0.7: not done"
            else:
                verdict = "between 0.7 and 1.0"
        rows.append([label, why or f"{value:.2f}x", verdict or meaning])
        if num in TAPPED_VARIANTS and value is not None:
            rows.append(_tap_cpu_row(summaries, num))
    rows[1:1] = extra_rows
    table = Table("Throughput ratios (median req/s)", ["ratio", "value", "meaning"], rows, numeric={"value"})
    return table, data


def _tap_cpu_row(summaries: dict[str, dict], tapped: str) -> list[str]:
    """Proxy CPU per request with the tap against without, and the tap reader's own (on the load CPU)."""
    label = f"proxy CPU per request: {tapped} / meshproxy"
    a, b = summaries[tapped]["proxy_us_per_request_median"], summaries["meshproxy"]["proxy_us_per_request_median"]
    if not a or not b:
        return [label, "n/a", ""]
    reader = summaries[tapped]["tap_reader_us_per_request_median"]
    return [label, f"{a / b:.2f}x",
            f"{'met' if a / b <= 2 - TAP_COST_BAR else 'NOT met'}: {a:.1f} against {b:.1f} us (bar <= "
            f"{2 - TAP_COST_BAR:.2f}); the tap reader's own CPU, on the load CPU: {reader or 0:.1f} us per request"]


def _latency_ratio(summaries: dict[str, dict], key: str) -> tuple[float | None, str]:
    a, b = summaries.get("meshproxy"), summaries.get(BASELINE)
    if a is None or b is None:
        return None, "n/a (variant not selected)"
    if not a["ok"] or not b["ok"] or not a[key] or not b[key]:
        return None, "n/a (FAILED)"
    return a[key] / b[key], ""


def _memory_table(variants: list[Variant]) -> tuple[Table, dict[str, Any]]:
    rows, data = [], {}
    for v in variants:
        if v.server is None:
            continue
        load = max((r.rss_max_kib for r in v.rounds if r.rss_max_kib is not None), default=None)
        data[v.name] = {
            "idle_kib": v.rss_idle_kib, "under_load_max_kib": load,
            "after_load_kib": v.rss_after_kib, "peak_hwm_kib": v.hwm_kib,
        }
        target = ""
        if v.name == "meshproxy":
            if v.rss_idle_kib is None:
                target = f"<= {RSS_TARGET_MIB:.0f} MiB: n/a"
            else:
                met = v.rss_idle_kib / 1024 <= RSS_TARGET_MIB
                target = f"<= {RSS_TARGET_MIB:.0f} MiB: {'met' if met else 'NOT met'}"
        elif v.name in ("haproxy", "nginx"):
            target = "(reference)"
        rows.append([v.name, _mib(v.rss_idle_kib), _mib(load), _mib(v.rss_after_kib), _mib(v.hwm_kib), target])
    after = f"{AFTER_LOAD_DELAY_S:.0f} s after load"
    table = Table(
        "Memory: resident set size (VmRSS, MiB)",
        ["process", "idle", "under load (max)", after, "peak (VmHWM)", "idle target"],
        rows,
        numeric={"idle", "under load (max)", after, "peak (VmHWM)"},
        notes=[
            "idle: right after /ready (haproxy: after it listens), before any request.",
            "under load: max of 200 ms samples during the measured wrk runs;"
            f" after load: {AFTER_LOAD_DELAY_S:.0f} s after its last measured run ended.",
        ],
    )
    return table, data


def _fmt_busy(busy: dict[int, float]) -> str:
    return ", ".join(f"CPU {cpu} {value:.0f}%" for cpu, value in sorted(busy.items()))


def _result(
    ctx: Context,
    variants: list[Variant],
    params: wrk.WrkParams,
    rounds: int,
    warmup: float,
    nginx: Server,
    background: dict[int, float],
) -> ScenarioResult:
    summaries = {v.name: _summary(v) for v in variants}
    tables = [_throughput_table(variants, summaries, rounds)]
    ratio_table, ratios = _ratio_table(summaries)
    tables.append(ratio_table)
    memory_table, memory = _memory_table(variants)
    if memory_table.rows:
        tables.append(memory_table)
    notes = [f"CPU busy in the 1 s before the servers started (other load): {_fmt_busy(background)}"]
    if any(value > 10 for value in background.values()):
        notes.append("WARNING: the machine was not idle before the run; numbers are noisier than usual")
    for v in variants:
        status = v.fastpath
        if v.name == "meshproxy" and status.get("all") is False:
            notes.append(f"WARNING: meshproxy ran WITHOUT the full compiled fast path: {status.get('compiled')}")
        elif status.get("error"):
            notes.append(f"{v.name}: could not check the fast path build: {status['error']}")
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={
            **params.describe(),
            "warmup_s": warmup,
            "rounds": rounds,
            "order": "rotated each round: " + ", ".join(v.name for v in variants),
            "response_body_bytes": len(BODY),
            "cpu_placement": ctx.placement.describe(),
            "nginx": "1 worker, return 200, keepalive_requests 1e9, access_log off",
            "haproxy": "nbthread 1, mode http, http-reuse always, no logging",
            "nginx_proxy": "1 worker, upstream keepalive 1024, proxy_http_version 1.1, Connection \"\", no logs",
            "meshproxy": "outbound listener, routed by Host; MESHPROXY_LOG_LEVEL="
            + (getattr(ctx.options, "meshproxy_log_level", None) or "warning"),
        },
        tables=tables,
        data={
            "variants": {
                v.name: {
                    "summary": summaries[v.name],
                    "url": v.url,
                    "server_command": v.server.proc.argv if v.server else None,
                    "fastpath": v.fastpath or None,
                    "rounds": [r.to_json() for r in v.rounds],
                }
                for v in variants
            },
            "ratios": ratios,
            "cpu_busy_before_start_percent": {str(k): round(v, 1) for k, v in background.items()},
            "memory": memory,
            "nginx_command": nginx.proc.argv,
        },
        notes=notes,
    )
