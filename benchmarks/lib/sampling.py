"""Watching a process while a load runs: peak RSS, its CPU time, and per-CPU busy shares.

``LoadWindow`` wraps one measured load (``with LoadWindow(pid, placement) as w:``)
so every scenario measures the proxy the same way.
"""

from __future__ import annotations

import threading
import time

from benchmarks.lib import procs
from benchmarks.lib.servers import Placement

SAMPLE_INTERVAL_S = 0.2


class LoadWindow:
    """Readings over one ``with`` block; ``pid`` may be None (nothing under test)."""

    def __init__(self, pid: int | None, placement: Placement) -> None:
        self.pid = pid
        self.proxy_cpus = procs.parse_cpu_list(placement.proxy_cpus)
        self.load_cpus = procs.parse_cpu_list(placement.load_cpus)
        self.rss_max_kib: int | None = None
        self.process_cpu_percent: float | None = None  # the process's own CPU time / wall time
        self.proxy_cpu_busy: float | None = None      # the proxy CPU's busy share, anyone's work
        self.load_cpu_busy: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            value = procs.rss_kib(self.pid)
            if value is not None and (self.rss_max_kib is None or value > self.rss_max_kib):
                self.rss_max_kib = value

    def __enter__(self) -> LoadWindow:
        self._jiffies = procs.cpu_jiffies()
        self._cpu = procs.cpu_seconds(self.pid) if self.pid else None
        self._t0 = time.monotonic()
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid is not None:
            self._stop.set()
            self._thread.join()
        elapsed = time.monotonic() - self._t0
        jiffies = procs.cpu_jiffies()
        if self.proxy_cpus:
            self.proxy_cpu_busy = procs.cpu_busy_percent(self._jiffies, jiffies, self.proxy_cpus)
        if self.load_cpus:
            self.load_cpu_busy = procs.cpu_busy_percent(self._jiffies, jiffies, self.load_cpus)
        cpu = procs.cpu_seconds(self.pid) if self.pid else None
        if cpu is not None and self._cpu is not None and elapsed > 0:
            self.process_cpu_percent = 100.0 * (cpu - self._cpu) / elapsed
