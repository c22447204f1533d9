"""Jittered exponential backoff for reconnecting to a discovery source."""

from __future__ import annotations

import random


class Backoff:
    """``next()`` gives the delay before the next attempt; ``reset()`` after a success.

    Delays double from ``base`` up to ``cap``; full jitter in the upper half
    (delay * [0.5, 1.0)) keeps sidecars restarted together from retrying in step.
    """

    __slots__ = ("base", "cap", "_attempt", "_random")

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = max(base, 0.001)
        self.cap = max(cap, self.base)
        self._attempt = 0
        self._random = rng or random.Random()

    @property
    def attempts(self) -> int:
        return self._attempt

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return delay * (0.5 + self._random.random() / 2)

    def reset(self) -> None:
        self._attempt = 0
