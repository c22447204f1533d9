"""Scenario ``vizmem``: what each embedded viz command costs in memory, against a bare Python process.

The viz issue's bar: the embedded mode (scraping proxies, keeping a window of
samples, computing rates and quantiles in the process itself) adds no more
than 20 MB of RSS to the process that runs it. One meshproxy carries a wrk
load to nginx (so there is something to scrape and tap); beside it run a bare
``python -c 'import asyncio'`` (the interpreter and the event loop every
command pays), ``meshproxy viz dashboard`` (embedded), ``viz top`` and
``viz tap``. The dashboard is used as its page uses it: both event streams
open (the snapshots and the live tap view, read as they come), and the
overview, the charts and a workload's page asked for every second. The load
lasts long enough for the dashboard's windows to fill (16 scrapes 2 s apart,
and the chart history of the 1-minute window), so the figure is the steady
state, not the start. Each long-running command's VmRSS is read at the end
(its peak, VmHWM, beside it); ``viz stat`` runs once during the load and its
peak (the kernel's ru_maxrss) is compared with the bare process's.

With ``--baseline DIR``, that checkout's dashboard runs beside this one's,
under the same load and the same page: the before and after of one run.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from pathlib import Path

from benchmarks.lib import procs, wrk
from benchmarks.lib.compare import baseline_dir, http1_proxies, start
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.servers import start_templated
from benchmarks.scenarios.http1 import BODY

NAME = "vizmem"
DESCRIPTION = "viz dashboard, top, tap and stat (embedded mode): RSS added over a bare Python process"
BAR_MIB = 20e6 / 2**20  # the 20 MB, in the MiB VmRSS is read in
STREAMS = ("/api/stream", "/api/tap")  # what the page keeps open


class Page:
    """A browser's dashboard page, as threads: both event streams read as they come, and the page's
    JSON asked for every second. Bounded: it stops when ``stop`` is set (each read times out in 5 s)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.events = dict.fromkeys(STREAMS, 0)
        self.requests = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._stream, args=(path,), daemon=True) for path in STREAMS]
        self.threads.append(threading.Thread(target=self._poll, daemon=True))

    def __enter__(self) -> Page:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _stream(self, path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path, headers={"Accept": "text/event-stream"})
            resp = conn.getresponse()
            while not self.stop.is_set():
                try:
                    line = resp.fp.readline()
                except TimeoutError:
                    if not self.stop.is_set():  # no event for 5 s while the load ran
                        raise
                    return
                if not line:
                    self.errors.append(f"{path}: the server ended the stream")
                    return
                if line.startswith(b"data:"):
                    self.events[path] += 1
        except OSError as err:
            self.errors.append(f"{path}: {err}")
        finally:
            conn.close()

    def _get(self, path: str) -> object:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise OSError(f"{path}: HTTP {resp.status}")
            self.requests += 1
            return json.loads(body)
        finally:
            conn.close()

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            try:
                overview = self._get("/api/overview")
                self._get("/api/charts")
                rows = overview.get("workloads") or [] if isinstance(overview, dict) else []
                if rows:
                    self._get(f"/api/workloads/{rows[0]['namespace']}/{rows[0]['name']}")
            except (OSError, ValueError, KeyError) as err:
                self.errors.append(str(err))


# Runs a module as ``python -m`` would, then writes its own peak (VmHWM) to the file named first. The
# kernel's ru_maxrss would not do: it counts the runner's pages the child held between fork and exec.
PEAK_WRAPPER = """import atexit, runpy, sys
path, sys.argv = sys.argv[1], sys.argv[2:]
def peak():
    with open('/proc/self/status') as f, open(path, 'w') as out:
        out.write(next(line for line in f if line.startswith('VmHWM:')).split()[1])
atexit.register(peak)
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def _peak_of_run(python: list[str], argv: list[str], cwd: Path, out: Path, timeout: float) -> tuple[int | None, str]:
    """Run ``python -m argv`` to its end; its peak RSS in KiB and how it ended."""
    try:
        done = procs.run_bounded(python + ["-c", PEAK_WRAPPER, str(out)] + argv, timeout, cwd=cwd)
    except TimeoutError as err:
        return None, str(err)
    if done.returncode != 0:
        return None, f"exited with status {done.returncode}: {done.stderr.strip()[-200:]}"
    return int(out.read_text()), "ok"


def run(ctx: Context) -> ScenarioResult:
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-http1.conf.tmpl",
                              "vizmem-backend", under_test=False, body=BODY)
    proxy = start(ctx, NAME, "meshproxy", "outbound", http1_proxies(ctx, NAME, backend)["meshproxy"])
    if proxy.broken:
        raise procs.NotReady(proxy.broken)
    ports = proxy.servers[0].info["ports"]
    admin, tap = f"127.0.0.1:{ports['admin']}", f"127.0.0.1:{ports['tap']}"
    python = [sys.executable]
    bare = ctx.group.start("vizmem-bare", python + ["-c", "import asyncio, time; time.sleep(600)"], cwd=ctx.run_dir)
    checkouts = [("", ctx.repo)]
    if (before := baseline_dir(ctx)) is not None:
        checkouts.append((" (baseline)", before))
    dashboards = []
    for suffix, repo in checkouts:
        web = procs.free_port()
        proc = ctx.group.start(f"vizmem-dashboard{suffix.replace(' ', '-')}", python + [
            "-m", "proxy", "viz", "dashboard", "--proxy", admin, "--tap", tap, "--address", f"127.0.0.1:{web}"],
            cwd=repo)
        dashboards.append((f"viz dashboard{suffix}", proc, web))
    duration = ctx.run_seconds(20.0, 70.0)
    longer = [
        ("viz top", ctx.group.start("vizmem-top", python + [
            "-m", "proxy", "viz", "top", "--tap", tap, "--duration", f"{duration + 60:g}"], cwd=ctx.repo)),
        ("viz tap", ctx.group.start("vizmem-tap", python + [
            "-m", "proxy", "viz", "tap", "--tap", tap, "-o", "json"], cwd=ctx.repo)),
    ]
    for _, proc, web in dashboards:
        procs.wait_http_ok(proc, f"http://127.0.0.1:{web}/api/overview")
    params = wrk.WrkParams(threads=1, connections=10, duration_s=duration, timeout_s=5.0)
    ctx.progress(f"[{NAME}] {duration:g} s of load through the proxy while viz scrapes and taps it")
    pages = [Page(web) for _, _, web in dashboards]
    stat_peak: list[tuple[int | None, str]] = []

    def stat_once() -> None:  # a one-shot command, run once the load is on
        time.sleep(2.0)
        stat_peak.append(_peak_of_run(python, ["proxy", "viz", "stat", "--proxy", admin, "-o", "wide"], ctx.repo,
                                      ctx.run_dir / "vizmem-stat.peak", 30.0))

    stat_thread = threading.Thread(target=stat_once, daemon=True)
    for page in pages:
        page.__enter__()
    stat_thread.start()
    try:
        res = wrk.run(f"http://{proxy.target}/", params, headers={"Host": backend.address},
                      pin=ctx.placement.pin_load())
    finally:
        for page in pages:
            page.__exit__(None, None, None)
        stat_thread.join(35)
    rows, data = [], {"rps": res.rps, "seconds": duration}
    base = procs.rss_kib(bare.pid, tree=False) or 0
    base_peak = procs.hwm_kib(bare.pid) or base
    data["bare_kib"] = base
    rows.append(["python -c 'import asyncio'", f"{base / 1024:.1f}", "-", f"{base_peak / 1024:.1f}", "-", "-"])

    def row(name: str, kib: int | None, peak: int | None, why: str, compare_to: int) -> None:
        if kib is None:
            rows.append([name, "-", "-", "-", "-", f"FAILED: {why}"])
            return
        added = (kib - compare_to) / 1024
        data[name] = {"kib": kib, "peak_kib": peak, "added_mib": added}
        rows.append([name, f"{kib / 1024:.1f}", f"{added:+.1f}", f"{(peak or kib) / 1024:.1f}",
                     "-" if peak is None else f"{(peak - base_peak) / 1024:+.1f}",
                     "ok" if added <= BAR_MIB else "over 20 MB"])

    for (name, proc, _), page in zip(dashboards, pages, strict=True):
        alive = proc.alive()
        row(name, procs.rss_kib(proc.pid, tree=False) if alive else None,
            procs.hwm_kib(proc.pid) if alive else None, proc.exit_text(), base)
        data[name + " page"] = {"events": page.events, "requests": page.requests, "errors": page.errors[:5]}
    for name, proc in longer:
        alive = proc.alive()
        row(name, procs.rss_kib(proc.pid, tree=False) if alive else None,
            procs.hwm_kib(proc.pid) if alive else None, proc.exit_text(), base)
    peak, why = stat_peak[0] if stat_peak else (None, "did not run")
    row("viz stat (one-shot, its peak)", peak, None, why, base_peak)
    page = pages[0]
    table = Table(
        "Resident memory of the viz commands (VmRSS, MiB)",
        ["process", "RSS", "added over bare Python", "peak (VmHWM)", "peak added", "bar"],
        rows,
        numeric={"RSS", "added over bare Python", "peak (VmHWM)", "peak added"},
        notes=[f"Read after {duration:g} s of wrk -c {params.connections} through the proxy ({res.rps:,.0f} req/s);"
               f" each dashboard's page meanwhile read {page.events['/api/stream']} snapshot and"
               f" {page.events['/api/tap']} tap events from its two streams and made {page.requests} JSON requests"
               f"{' (errors: ' + '; '.join(page.errors[:3]) + ')' if page.errors else ''}."
               f" The bar is 20 MB ({BAR_MIB:.2f} MiB) added; viz stat's peak is compared with the bare"
               " process's peak."],
    )
    return ScenarioResult(name=NAME, description=DESCRIPTION, params=params.describe(), tables=[table], data=data)
