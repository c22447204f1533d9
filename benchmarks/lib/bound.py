"""Which side limited a run: the proxy CPU or the load CPU.

On a small machine the load tool and the backend share the load CPU. When
that CPU is saturated while the proxy CPU still idles, the figure is the
load's limit, not the proxy's, and a ratio between two proxies limited that
way says little. On a shared machine the opposite happens too: other
processes take part of the proxy CPU. The TLS scenarios record both CPUs'
busy share and the proxies' own CPU time over the measured run only (not the
warm-up) and flag such rows in the table.
"""

from __future__ import annotations

import time

from benchmarks.lib import procs
from benchmarks.lib.compare import Contender
from benchmarks.lib.report import Table
from benchmarks.lib.sampling import LoadWindow
from benchmarks.lib.servers import Placement

LOAD_SATURATED, PROXY_IDLE = 95.0, 90.0
SHARED = 20.0   # points of the proxy CPU's busy share that were other processes' work
PROXY_COLUMN, LOAD_COLUMN = ("proxy CPU %", "proxy_cpu_busy", ".0f"), ("load CPU %", "load_cpu_busy", ".0f")
NOTE = (f"proxy CPU % / load CPU %: how busy the CPU of the proxies / of the load tool + nginx was during the"
        f" measured run (anyone's work). 'ok, load-bound': the load CPU was >= {LOAD_SATURATED:.0f}% busy while"
        f" the proxy CPU was < {PROXY_IDLE:.0f}%: that figure is the load's limit, the proxy could do more, and"
        f" its ratios are understated. 'ok, proxy CPU shared': over {SHARED:.0f}% of the proxy CPU went to"
        f" other processes during the run (busy share minus the proxies' own CPU time, in the JSON as"
        f" proxy_own_cpu): the proxies did not have their core to themselves and their figure is understated.")


class Window:
    """Around one measured run: both CPUs' busy shares and the proxies' own CPU time (``pids``)."""

    def __init__(self, pids: list[int], placement: Placement) -> None:
        self.pids = pids
        self._window = LoadWindow(None, placement)
        self.metrics: dict[str, float] = {}

    def _own(self) -> float:
        return sum(procs.cpu_seconds(p) or 0.0 for p in self.pids)

    def __enter__(self) -> Window:
        self._cpu0, self._t0 = self._own(), time.monotonic()
        self._window.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._window.__exit__(*exc)
        elapsed = time.monotonic() - self._t0
        self.metrics = window_metrics(self._window)
        if self.pids and elapsed > 0:
            self.metrics["proxy_own_cpu"] = 100.0 * (self._own() - self._cpu0) / elapsed


def window_metrics(window: LoadWindow) -> dict[str, float]:
    out = {}
    if window.proxy_cpu_busy is not None:
        out["proxy_cpu_busy"] = window.proxy_cpu_busy
    if window.load_cpu_busy is not None:
        out["load_cpu_busy"] = window.load_cpu_busy
    return out


def load_bound(contender: Contender) -> bool:
    load, proxy = contender.median("load_cpu_busy"), contender.median("proxy_cpu_busy")
    return load is not None and proxy is not None and load >= LOAD_SATURATED and proxy < PROXY_IDLE


def other_work(contender: Contender) -> float | None:
    """Median over rounds of the proxy CPU's busy share not spent by the proxies themselves."""
    busy, own = contender.median("proxy_cpu_busy"), contender.median("proxy_own_cpu")
    return None if busy is None or own is None else max(0.0, busy - own)


def mark(table: Table, contenders: list[Contender], data: dict) -> None:
    """Set the status cell (``compare.table``'s last column) of load-bound and shared-CPU rows; say so in ``data``."""
    by_name = {c.name: c for c in contenders}
    for row in table.rows:
        c = by_name.get(row[0])
        if c is None or not c.servers or row[-1] != "ok":
            continue
        other = other_work(c)
        if load_bound(c):
            row[-1] = "ok, load-bound"
            data.setdefault(c.name, {})["load_bound"] = True
        elif other is not None and other > SHARED:
            row[-1] = f"ok, proxy CPU shared ({other:.0f}% other work)"
            data.setdefault(c.name, {})["proxy_cpu_other_work"] = round(other, 1)
    table.notes.append(NOTE)


# ---- CPU cost per operation ------------------------------------------------------------
# A proxy's own CPU time per request (or handshake) does not depend on who else
# used its CPU or on whether the load could go faster, so it still compares two
# proxies when the rates above cannot: per core, the cheaper proxy does more.

COST_KEY = "cpu_us_per_op"


def cost(metrics: dict[str, float], rate: float) -> dict[str, float]:
    """``{COST_KEY: the proxies' CPU microseconds per operation}`` at ``rate`` per second, or {}."""
    own = metrics.get("proxy_own_cpu")
    if own is None or rate <= 0:
        return {}
    return {COST_KEY: own / 100.0 * 1e6 / rate}


def cost_ratio(num: Contender | None, den: Contender | None) -> float | None:
    """``den``'s CPU per operation / ``num``'s: ``num``'s throughput per core relative to ``den``'s."""
    if num is None or den is None or num.failure() or den.failure():
        return None
    a, b = num.median(COST_KEY), den.median(COST_KEY)
    return None if not a or b is None else b / a
