"""Scenario ``soak``: ten minutes of mixed traffic through a meshed pair, then: is anything wedged, is memory back?

Not a timed test. Proxy A (outbound) -> mutual TLS -> proxy B (inbound) ->
nginx, with two services behind B: ``h1.soak:80`` (nginx's HTTP/1.1
listener) and ``h2.soak:80`` (its h2c listener). ``lib/soakload.py`` runs
keep-alive HTTP/1.1 and h2c requests, slow readers (HTTP/1 pausing, HTTP/2
with a zero window opened 1 MiB at a time), clients that vanish mid-response
(RST, stream reset, dropped connection) and 16 MiB uploads, all at once, for
10 minutes (``--quick``: 30 s; ``--duration`` overrides). Then, after a few
seconds' rest, fresh clients must be served within a deadline (small requests
on both protocols and a whole /large download each), and each proxy's RSS is
compared with its idle figure: idle (after a warm-up, before the soak), peak
(1 s samples and VmHWM) and at the end.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.lib import meshpair, meshtls, procs
from benchmarks.lib.context import Context
from benchmarks.lib.h2peer import MIB, H1Peer, H2Peer, PeerError
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.servers import start_templated
from benchmarks.lib.soakload import MARKER
from benchmarks.scenarios.http1 import BODY

NAME = "soak"
DESCRIPTION = ("10 minutes of mixed traffic (keep-alive, h2c, slow readers, vanishing clients, uploads) "
               "through a meshed pair")
H1_SERVICE, H2_SERVICE = "h1.soak:80", "h2.soak:80"
LARGE_MIB = 32
RSS_BACK_MIB = 16.0        # "back near idle": within the 16 MiB of the idle figure
SMALL_DEADLINE_S = 1.0     # a fresh small request after the soak answers within this
LARGE_DEADLINE_S = 20.0    # ... and a whole /large download within this


def _rss_and_hwm(pid: int) -> tuple[int | None, int | None]:
    return procs.rss_kib(pid, tree=False), procs.hwm_kib(pid)


def _reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Sampler:
    """VmRSS of the proxies every second: peak, and a point every 10 s for the JSON."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, int] = {}
        self.timeline: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            tick += 1
            point: dict[str, Any] = {"t": round(time.monotonic() - self._t0)}
            for name, pid in self.pids.items():
                value = procs.rss_kib(pid, tree=False)
                if value is not None:
                    self.peak[name] = max(self.peak.get(name, 0), value)
                    point[name] = value
            if tick % 10 == 0:
                self.timeline.append(point)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def fresh_checks(outbound: tuple[str, int], large: int) -> list[tuple[str, bool, str]]:
    """After the soak: (check, passed, detail). Any failure means something stayed wedged."""
    out: list[tuple[str, bool, str]] = []

    def check(name: str, body: Any) -> None:
        t0 = time.monotonic()
        try:
            detail = body()
            out.append((name, True, f"{detail} in {time.monotonic() - t0:.2f} s"))
        except (PeerError, OSError) as err:
            out.append((name, False, f"{type(err).__name__}: {err} after {time.monotonic() - t0:.2f} s"))

    def h1_small() -> str:
        worst = 0.0
        for _ in range(4):
            peer = H1Peer(outbound, H1_SERVICE, timeout=SMALL_DEADLINE_S)
            try:
                for _ in range(5):
                    t0 = time.monotonic()
                    peer.send("GET", "/")
                    status, _ = peer.response(t0 + SMALL_DEADLINE_S)
                    if status != 200:
                        raise PeerError(f"status {status}")
                    worst = max(worst, time.monotonic() - t0)
            finally:
                peer.close()
        return f"20 of 20, slowest {worst * 1000:.0f} ms"

    def h2_small() -> str:
        worst = 0.0
        peer = H2Peer(outbound, H2_SERVICE, timeout=SMALL_DEADLINE_S)
        try:
            for _ in range(20):
                t0 = time.monotonic()
                peer.exchange("/", SMALL_DEADLINE_S)
                worst = max(worst, time.monotonic() - t0)
        finally:
            peer.close()
        return f"20 of 20, slowest {worst * 1000:.0f} ms"

    def h1_large() -> str:
        peer = H1Peer(outbound, H1_SERVICE, timeout=LARGE_DEADLINE_S)
        try:
            peer.send("GET", "/large")
            status, got = peer.response(time.monotonic() + LARGE_DEADLINE_S)
        finally:
            peer.close()
        if status != 200 or got != large:
            raise PeerError(f"status {status}, {got} of {large} bytes")
        return f"{got >> 20} MiB"

    def h2_large() -> str:
        peer = H2Peer(outbound, H2_SERVICE, timeout=LARGE_DEADLINE_S)
        try:
            stream = peer.exchange("/large", LARGE_DEADLINE_S)
        finally:
            peer.close()
        if stream.received != large:
            raise PeerError(f"{stream.received} of {large} bytes")
        return f"{stream.received >> 20} MiB"

    check(f"HTTP/1 GET / x20 on 4 fresh connections, each < {SMALL_DEADLINE_S:g} s", h1_small)
    check(f"h2c GET / x20 on a fresh connection, each < {SMALL_DEADLINE_S:g} s", h2_small)
    check(f"HTTP/1 GET /large whole, < {LARGE_DEADLINE_S:g} s", h1_large)
    check(f"h2c GET /large whole, < {LARGE_DEADLINE_S:g} s", h2_large)
    return out


def run(ctx: Context) -> ScenarioResult:
    duration = ctx.run_seconds(30.0, 600.0)
    settle = 3.0 if ctx.quick else 10.0
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    large = ctx.run_dir / "soak-large.bin"
    with open(large, "wb") as f:
        f.truncate(LARGE_MIB * MIB)
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-bulk-backend.conf.tmpl",
                              "soak-backend", under_test=False, extra_ports=1, body=BODY, large_file=large,
                              large_mib=LARGE_MIB)
    certs = meshtls.make(ctx.run_dir / "soak-certs")
    services = [meshpair.Service(H1_SERVICE, backend.info["ports"]["port2"], "http1"),
                meshpair.Service(H2_SERVICE, backend.port, "h2")]
    pair = meshpair.start(ctx, "soak-meshproxy", services, backend, certs=certs)
    pids = {"proxy A": pair.a.proc.pid, "proxy B": pair.b.proc.pid}

    # Warm up both protocols (discovery may land just after /ready), then take the idle figures.
    warm = []
    for _ in range(50):
        warm = fresh_checks(pair.outbound, LARGE_MIB * MIB)[:2]
        if all(ok for _, ok, _ in warm):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    idle = {name: procs.rss_kib(pid, tree=False) for name, pid in pids.items()}
    hwm_reset = {name: _reset_hwm(pid) for name, pid in pids.items()}
    ctx.progress(f"[{NAME}] idle RSS: " + ", ".join(f"{n} {v / 1024:.1f} MiB" for n, v in idle.items() if v)
                 + f"; mixed traffic for {duration:g} s")

    argv = ctx.placement.pin_load() + [
        sys.executable, "-m", "benchmarks.lib.soakload", pair.a.address, f"--h1={H1_SERVICE}", f"--h2={H2_SERVICE}",
        f"--large={LARGE_MIB * MIB}", f"--duration={duration:g}"]
    cpu0 = {name: procs.cpu_seconds(pid, tree=False) for name, pid in pids.items()}
    t0 = time.monotonic()
    with Sampler(pids) as sampler:
        try:
            done = procs.run_bounded(argv, timeout=duration + 180, cwd=ctx.repo)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
            load = json.loads(line[len(MARKER):]) if line else {
                "ok": False, "failure": f"status {done.returncode}: "
                                        + ((done.stderr or done.stdout).strip().splitlines()[-1:] or ['?'])[0]}
        except TimeoutError as err:
            load = {"ok": False, "failure": str(err)}
    elapsed = time.monotonic() - t0
    cpu = {name: (procs.cpu_seconds(pid, tree=False) or 0.0) - (cpu0[name] or 0.0) for name, pid in pids.items()}
    alive = {name: server.proc.alive() for name, server in (("proxy A", pair.a), ("proxy B", pair.b))}
    ctx.progress(f"[{NAME}] traffic done ({'ok' if load.get('ok') else load.get('failure')}); resting {settle:g} s")
    time.sleep(settle)
    checks = fresh_checks(pair.outbound, LARGE_MIB * MIB) if all(alive.values()) else [
        ("proxies alive", False, ", ".join(f"{n} {'alive' if a else 'DIED'}" for n, a in alive.items()))]
    time.sleep(2.0)
    end: dict[str, int | None] = {}
    peak: dict[str, int | None] = {}
    for name, pid in pids.items():
        rss, hwm = _rss_and_hwm(pid)
        end[name] = rss
        peak[name] = max(v for v in (sampler.peak.get(name), hwm if hwm_reset[name] else None, rss) if v) \
            if rss else sampler.peak.get(name)
    for name, ok, detail in checks:
        ctx.progress(f"[{NAME}] {'ok' if ok else 'FAILED'}: {name}: {detail}")
    return _result(ctx, duration, elapsed, load, checks, idle, peak, end, cpu, sampler.timeline, warm)


def _result(ctx: Context, duration: float, elapsed: float, load: dict[str, Any], checks: list[tuple[str, bool, str]],
            idle: dict[str, int | None], peak: dict[str, int | None], end: dict[str, int | None],
            cpu: dict[str, float], timeline: list[dict[str, Any]], warm: list) -> ScenarioResult:
    kinds = load.get("kinds", {})
    traffic_rows = []
    for kind, t in kinds.items():
        lat = t.get("latency_ms", {})
        reasons = "; ".join(f"{n}x {r}" for r, n in sorted(t["error_reasons"].items(), key=lambda kv: -kv[1])[:3])
        traffic_rows.append([kind, f"{t['ok']:,}", f"{t['errors']:,}", f"{t['mib_moved']:,.0f}",
                             f"{lat['p50']:.1f}" if "p50" in lat else "-", f"{lat['p99']:.1f}" if "p99" in lat else "-",
                             f"{lat['max']:.0f}" if "max" in lat else "-", reasons or "-"])
    traffic = Table(
        f"Mixed traffic for {elapsed:.0f} s: successes and errors per kind of client",
        ["client", "ok", "errors", "MiB moved", "p50 ms", "p99 ms", "max ms", "top error reasons"],
        traffic_rows, numeric={"ok", "errors", "MiB moved", "p50 ms", "p99 ms", "max ms"},
        notes=["ok: requests completed as the kind intends (a vanishing client counts once it read its 256 KiB"
               " and went away; an h2 stream reset must leave its connection serving).",
               "latencies only for the small requests (GET /, 64 bytes).",
               *([f"the load generator FAILED: {load.get('failure')}"] if not load.get("ok") else [])],
    )
    after = Table(
        "After the soak: fresh clients (no wedged connection)",
        ["check", "result", "detail"],
        [[name, "ok" if ok else "FAILED", detail] for name, ok, detail in checks],
        notes=["run after the traffic ended and a rest; a FAILED line means a connection (client side,"
               " proxy-to-proxy or upstream) stayed wedged or a proxy died."],
    )
    mem_rows, mem = [], {}
    for name in idle:
        i, p, e = idle[name], peak.get(name), end.get(name)
        back = None if i is None or e is None else (e - i) / 1024 <= RSS_BACK_MIB
        mem[name] = {"idle_kib": i, "peak_kib": p, "end_kib": e, "back_near_idle": back,
                     "cpu_seconds": round(cpu.get(name, 0.0), 1)}
        mem_rows.append([name, _mib(i), _mib(p), _mib(e), "-" if i is None or e is None else f"{(e - i) / 1024:+.1f}",
                         "-" if back is None else ("yes" if back else "NO"), f"{cpu.get(name, 0.0):.0f} s"])
    memory = Table(
        "Memory: VmRSS (MiB) of each proxy",
        ["proxy", "idle", "peak", "end", "end - idle", f"back within {RSS_BACK_MIB:g} MiB", "CPU time"],
        mem_rows, numeric={"idle", "peak", "end", "end - idle", "CPU time"},
        notes=["idle: after a warm-up of both protocols, before the soak; peak: the larger of 1 s samples and"
               " VmHWM (reset at the start of the soak); end: after the fresh-client checks."],
    )
    wedged = not all(ok for _, ok, _ in checks)
    errors = sum(t.get("errors", 0) for t in kinds.values())
    notes = [
        f"verdict: {'WEDGED: a fresh client was not served' if wedged else 'no wedged connection'};"
        f" memory {'back near idle' if all(m['back_near_idle'] for m in mem.values()) else 'NOT back near idle'};"
        f" {sum(t.get('ok', 0) for t in kinds.values()):,} successes, {errors:,} errors in the traffic.",
    ]
    if not all(ok for _, ok, _ in warm):
        notes.append(f"WARNING: the warm-up did not pass: {warm}")
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={
            "duration_s": duration, "pair": "A outbound -> mutual TLS (file identities, lib/meshtls) -> B inbound",
            "services": f"{H1_SERVICE} -> nginx HTTP/1.1, {H2_SERVICE} -> nginx h2c (protocol h2), both via B",
            "large_mib": LARGE_MIB, "upload_mib": 16,
            "clients": "h1-keepalive x4 (GET / every 20 ms), h2-small (every 10 ms), h1/h2 slow readers,"
                       " h1/h2 vanishing clients, h1/h2 16 MiB uploads, h1/h2 4 MiB uploads answered early"
                       " (lib/soakload.py)",
            "cpu_placement": ctx.placement.describe() + " (the load and nginx on the load CPUs)",
        },
        tables=[traffic, after, memory],
        data={"load": load, "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks], "memory": mem,
              "rss_timeline_kib": timeline, "elapsed_s": round(elapsed, 1)},
        notes=notes,
    )


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"
