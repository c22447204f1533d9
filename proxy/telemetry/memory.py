"""Giving memory back after bursts (glibc keeps freed heap pages unless asked to trim), and settling the
heap once a command has started.

After a burst of thousands of connections the freed buffers sit in malloc's
free lists and the process's RSS stays at its peak. When the number of open
connections has fallen well below the peak since the last trim, the sweeper
calls ``malloc_trim(0)``, which returns those pages to the kernel. It costs a
few milliseconds and runs at most once per ``MIN_INTERVAL``.
"""

from __future__ import annotations

import time

MIN_INTERVAL = 5.0


def _load_trim():
    """glibc's malloc_trim, loaded on first need: from the compiled helper, else through ctypes (which
    costs memory of its own)."""
    try:
        from proxy.telemetry.malloc import AVAILABLE, malloc_trim
    except ImportError:  # extensions not built
        pass
    else:
        return malloc_trim if AVAILABLE else None
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_cache: list = []


def _libc_trim():
    if not _cache:
        _cache.append(_load_trim())
    return _cache[0]


_frozen = 0


def frozen_objects() -> int:
    """How many objects the start froze: counted once then, since counting walks them all (2 ms for 22,000,
    too long for every scrape)."""
    return _frozen


def settle_after_start() -> None:
    """Once a command has imported and built what it runs with: collect the import's garbage, freeze what
    is left and give the freed heap back.

    The freeze moves every object alive now (modules, functions, classes, the configuration: tens of
    thousands) into the collector's permanent generation. Without it each full collection walks them all,
    which takes milliseconds of loop time that every request due meanwhile waits for: the tail of the
    latency, not its median. What the start built and later drops by reference count is still freed; only
    a cycle among frozen objects would stay, a bounded one-off. Trimming after the collection returns about
    2 MiB of import garbage a long-running command otherwise keeps resident."""
    import gc

    global _frozen
    gc.collect()
    gc.freeze()
    _frozen = gc.get_freeze_count()
    trim = _libc_trim()
    if trim is not None:
        trim(0)


class Trimmer:
    def __init__(self) -> None:
        self.peak = 0
        self.last = 0.0
        self.trims = 0

    def observe(self, open_connections: int, now: float | None = None) -> bool:
        """Note the current connection count; trim when it fell far below the peak. True if trimmed."""
        now = time.monotonic() if now is None else now
        self.peak = max(self.peak, open_connections)
        if now - self.last < MIN_INTERVAL:
            return False
        if self.peak < 64 or open_connections * 2 > self.peak:
            return False
        trim = _libc_trim()
        if trim is None:
            return False
        trim(0)
        self.trims += 1
        self.last = now
        self.peak = open_connections
        return True
