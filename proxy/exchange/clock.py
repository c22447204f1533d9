"""A route's time limits for one exchange: the whole-request timeout and the idle timeout.

``timeout`` bounds the whole exchange, ``idle`` the time without I/O
(``touch``); 0 disables either. ``expired(err)`` is called once when one is
hit; ``stop`` disarms both. The idle timer is not moved on every byte: it
fires when the limit would be due and re-arms itself if I/O came since, so
a busy stream costs one float store per read.
"""

from proxy import errors


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
        self.expired(errors.RouteTimeout(f"request timed out (stream idle for {self.idle:g}s)"))
