"""The retry budget: retries may add at most ``retry_ratio`` of recent requests plus a small floor.

Requests (``deposit``) and retries (``try_withdraw``) are counted in a ring of
``buckets`` time slices covering ``ttl`` seconds. A retry is allowed when

    retries_in_window + 1 <= retry_ratio * requests_in_window + min_per_second * ttl

where the window is the current slice and the ``buckets - 1`` before it, so it
always covers at least ``ttl - ttl/buckets`` seconds ending now. Hence for any
time t: retries in (t - ttl + ttl/buckets, t] <= retry_ratio * requests in
(t - ttl, t] + min_per_second * ttl. Each call is O(1) amortised (at most
``buckets`` slices are cleared per call, once each). Time is passed in
(monotonic seconds); time going backwards is treated as "now".
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A snapshot for metrics: counts in the current window and retries still allowed."""

    requests: int
    retries: int
    available: int


class RetryBudget:
    __slots__ = ("retry_ratio", "min_per_second", "ttl", "_width", "_n", "_deposits",
                 "_withdrawals", "_epoch", "_total_deposits", "_total_withdrawals", "_reserve")

    def __init__(self, retry_ratio: float = 0.2, min_per_second: float = 10, ttl: float = 10.0,
                 buckets: int | None = None) -> None:
        if not retry_ratio >= 0 or not min_per_second >= 0 or not ttl > 0:
            raise ValueError("retry_ratio and min_per_second must be >= 0 and ttl > 0")
        self.retry_ratio = float(retry_ratio)
        self.min_per_second = float(min_per_second)
        self.ttl = float(ttl)
        # One slice per second by default (at least 2, at most 100): fine enough
        # that the window is close to ttl, small enough to clear cheaply.
        self._n = buckets if buckets is not None else min(100, max(2, math.ceil(ttl)))
        if self._n < 1:
            raise ValueError("buckets must be >= 1")
        self._width = self.ttl / self._n
        self._deposits = [0] * self._n
        self._withdrawals = [0] * self._n
        self._epoch: int | None = None
        self._total_deposits = 0
        self._total_withdrawals = 0
        self._reserve = self.min_per_second * self.ttl

    def _advance(self, now: float) -> int:
        epoch = int(now // self._width)
        last = self._epoch
        if last is None:
            self._epoch = epoch
            return epoch % self._n
        if epoch > last:
            steps = epoch - last
            if steps >= self._n:
                self._deposits = [0] * self._n
                self._withdrawals = [0] * self._n
                self._total_deposits = self._total_withdrawals = 0
            else:
                for e in range(last + 1, epoch + 1):
                    i = e % self._n
                    self._total_deposits -= self._deposits[i]
                    self._total_withdrawals -= self._withdrawals[i]
                    self._deposits[i] = self._withdrawals[i] = 0
            self._epoch = last = epoch
        return last % self._n

    def deposit(self, now: float) -> None:
        """Count one original request (not a retry)."""
        i = self._advance(now)
        self._deposits[i] += 1
        self._total_deposits += 1

    def _limit(self) -> float:
        return self.retry_ratio * self._total_deposits + self._reserve

    def try_withdraw(self, now: float) -> bool:
        """Take budget for one retry; False means the retry must not be sent."""
        i = self._advance(now)
        # The epsilon keeps 0.2 * 5 == 1.0 exact-ish for float ratios.
        if self._total_withdrawals + 1 > self._limit() + 1e-9:
            return False
        self._withdrawals[i] += 1
        self._total_withdrawals += 1
        return True

    def state(self, now: float) -> BudgetState:
        self._advance(now)
        available = max(0, math.floor(self._limit() + 1e-9) - self._total_withdrawals)
        return BudgetState(self._total_deposits, self._total_withdrawals, available)
