"""A route's time limits for one exchange: the whole-request timeout and the idle timeout.

``timeout`` bounds the whole exchange, ``idle`` the time without I/O
(``touch``); 0 disables either. ``expired(err)`` is called once when one is
hit; ``stop`` disarms both. The idle timer is not moved on every byte: it
fires when the limit would be due and re-arms itself if I/O came since, so
a busy stream costs one float store per read.
"""

from time import perf_counter

import cython

from proxy import errors

if cython.compiled:
    from cython.cimports.posix.time import CLOCK_MONOTONIC, clock_gettime, timespec


_source = None  # a callable standing in for the clock (test rigs drive time by hand)


def set_source(source):
    """Make ``now`` read ``source()`` (None: the real clock again); for test rigs with a fake loop."""
    global _source
    _source = source


def now():
    """Seconds on the monotonic clock ``time.perf_counter`` reads, without a Python call when compiled.

    Four stamps a request (start, sent, head, settle) made through
    ``perf_counter`` cost more than the rest of the exchange's bookkeeping.
    On Linux it shares its epoch with ``loop.time()`` (asyncio's and uvloop's
    read CLOCK_MONOTONIC too), so idle stamps taken here compare with the
    sweep's loop time.
    """
    if _source is not None:
        return _source()
    if not cython.compiled:
        return perf_counter()
    ts = cython.declare(timespec)
    clock_gettime(CLOCK_MONOTONIC, cython.address(ts))
    return ts.tv_sec + ts.tv_nsec * 1e-9


class RouteClock:
    def __init__(self, loop, timeout, idle, expired):
        self.loop = loop
        self.expired = expired
        self.timeout = timeout
        self.idle = idle
        self.last_io = loop.time()
        self.timer = loop.call_later(timeout, self._timed_out) if timeout > 0 else None
        self.idle_timer = loop.call_at(self.last_io + idle, self._idle_check) if idle > 0 else None

    def touch(self):
        if self.idle > 0.0:
            self.last_io = self.loop.time()

    def stop(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.idle = 0.0

    def _timed_out(self):
        self.timer = None
        self.expired(errors.RouteTimeout(f"request timed out (route timeout {self.timeout:g}s)"))

    def _idle_check(self):
        self.idle_timer = None
        if self.idle <= 0.0:
            return
        due = self.last_io + self.idle
        if self.loop.time() < due:
            self.idle_timer = self.loop.call_at(due, self._idle_check)
            return
        self.expired(errors.RouteIdleTimeout(f"request timed out (stream idle for {self.idle:g}s)"))
