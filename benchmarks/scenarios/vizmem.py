"""Scenario ``vizmem``: what the embedded viz mode costs in memory, against a bare Python process.

The viz issue's bar: the embedded mode (scraping proxies, keeping a window of
samples, computing rates and quantiles in the process itself) adds no more
than 20 MB of RSS to the process that runs it. One meshproxy carries a wrk
load to nginx (so there is something to scrape and tap); beside it run a bare
``python -c 'import asyncio'`` (the interpreter and the event loop every
command pays), ``meshproxy viz dashboard`` (embedded, its page's data asked
for while the samples accumulate) and ``meshproxy viz top``; each one's VmRSS
is read after the load, and the difference to the bare process is the figure.
"""

from __future__ import annotations

import http.client
import sys
import time

from benchmarks.lib import procs, wrk
from benchmarks.lib.compare import http1_proxies, start
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.servers import start_templated
from benchmarks.scenarios.http1 import BODY

NAME = "vizmem"
DESCRIPTION = "viz dashboard and viz top (embedded mode): RSS added over a bare Python process"
BAR_MIB = 20e6 / 2**20  # the 20 MB, in the MiB VmRSS is read in


def run(ctx: Context) -> ScenarioResult:
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-http1.conf.tmpl",
                              "vizmem-backend", under_test=False, body=BODY)
    proxy = start(ctx, NAME, "meshproxy", "outbound", http1_proxies(ctx, NAME, backend)["meshproxy"])
    if proxy.broken:
        raise procs.NotReady(proxy.broken)
    ports = proxy.servers[0].info["ports"]
    admin, tap = f"127.0.0.1:{ports['admin']}", f"127.0.0.1:{ports['tap']}"
    web = procs.free_port()
    python = [sys.executable]
    bare = ctx.group.start("vizmem-bare", python + ["-c", "import asyncio, time; time.sleep(600)"], cwd=ctx.run_dir)
    dashboard = ctx.group.start("vizmem-dashboard", python + [
        "-m", "proxy", "viz", "dashboard", "--proxy", admin, "--tap", tap, "--address", f"127.0.0.1:{web}"],
        cwd=ctx.repo)
    top = ctx.group.start("vizmem-top", python + ["-m", "proxy", "viz", "top", "--tap", tap, "--duration", "60"],
                          cwd=ctx.repo)
    procs.wait_http_ok(dashboard, f"http://127.0.0.1:{web}/api/overview")
    params = wrk.WrkParams(threads=1, connections=10, duration_s=ctx.run_seconds(4.0), timeout_s=5.0)
    ctx.progress(f"[{NAME}] load through the proxy while viz scrapes and taps it")
    res = wrk.run(f"http://{proxy.target}/", params, headers={"Host": backend.address}, pin=ctx.placement.pin_load())
    for _ in range(5):  # the page's data, asked for as a browser would while the window fills
        conn = http.client.HTTPConnection("127.0.0.1", web, timeout=5)
        conn.request("GET", "/api/overview")
        conn.getresponse().read()
        conn.close()
        time.sleep(1.0)
    rows, data = [], {"rps": res.rps}
    base = procs.rss_kib(bare.pid, tree=False) or 0
    data["bare_kib"] = base
    rows.append(["python -c 'import asyncio'", f"{base / 1024:.1f}", "-", "-"])
    for name, proc in (("viz dashboard (embedded)", dashboard), ("viz top", top)):
        kib = procs.rss_kib(proc.pid, tree=False) if proc.alive() else None
        if kib is None:
            rows.append([name, "-", "-", f"FAILED: {proc.exit_text()}"])
            continue
        added = (kib - base) / 1024
        data[name] = {"kib": kib, "added_mib": added}
        rows.append([name, f"{kib / 1024:.1f}", f"{added:+.1f}", "ok" if added <= BAR_MIB else "over 20 MB"])
    table = Table(
        "Resident memory of the viz commands (VmRSS, MiB)",
        ["process", "RSS", "added over bare Python", "bar"],
        rows,
        numeric={"RSS", "added over bare Python"},
        notes=[f"Read after {params.duration_s:g} s of wrk -c {params.connections} through the proxy"
               f" ({res.rps:,.0f} req/s) and 5 s of the dashboard's data being asked for;"
               f" the bar is 20 MB ({BAR_MIB:.2f} MiB) added. The dashboard's tap view, not opened here,"
               " loads the HTTP/2 client when first opened (about 0.8 MiB more)."],
    )
    return ScenarioResult(name=NAME, description=DESCRIPTION, params=params.describe(), tables=[table], data=data)
