"""PromQL's arithmetic over raw samples: ``increase``/``rate`` (counter resets, extrapolation to the
range's edges) and ``histogram_quantile`` (linear interpolation inside a bucket). Pure functions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

Point = tuple[float, float]  # (unix seconds, value)


def increase(points: Sequence[Point], start: float, end: float) -> float | None:
    """PromQL's ``increase`` of a counter over the range [start, end] from the points inside it.

    As Prometheus's extrapolatedRate: the raw delta, plus every value seen
    just before a drop (a counter reset: the process restarted), then
    extrapolated towards the range's edges: all the way when the first or
    last point is within 1.1 average intervals of its edge, else by half an
    interval; never below the point where the counter would have been zero.
    None with fewer than two points (PromQL returns no sample then).
    """
    inside = [p for p in points if start <= p[0] <= end]
    if len(inside) < 2:
        return None
    delta = inside[-1][1] - inside[0][1]
    for (_, before), (_, after) in zip(inside, inside[1:], strict=False):
        if after < before:
            delta += before
    sampled = inside[-1][0] - inside[0][0]
    if sampled <= 0:
        return None
    to_start = inside[0][0] - start
    to_end = end - inside[-1][0]
    average = sampled / (len(inside) - 1)
    threshold = average * 1.1
    if delta > 0 and inside[0][1] >= 0:
        # A counter does not go below zero: do not extrapolate past the point it was zero.
        to_start = min(to_start, sampled * (inside[0][1] / delta))
    extended = sampled
    extended += to_start if to_start < threshold else average / 2
    extended += to_end if to_end < threshold else average / 2
    return delta * extended / sampled


def rate(points: Sequence[Point], start: float, end: float) -> float | None:
    """PromQL's ``rate``: ``increase`` per second of the range."""
    grown = increase(points, start, end)
    return None if grown is None or end <= start else grown / (end - start)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Estimate the ``q``-quantile (0..1) from cumulative histogram buckets
    given as (upper bound, count), the way PromQL's histogram_quantile does:
    find the bucket holding rank q*total and interpolate linearly inside it
    (the first bucket starts at 0). A rank in the +Inf bucket gives the highest
    finite bound. None when the histogram is empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    points = sorted(buckets)
    bounds, counts, running = [], [], 0.0
    for bound, count in points:
        running = max(running, count)  # counts scraped mid-update may dip; never go back
        bounds.append(bound)
        counts.append(running)
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    i = next(i for i, count in enumerate(counts) if count >= rank and count > 0)
    if math.isinf(bounds[i]):
        return bounds[i - 1] if i > 0 else None
    lower = bounds[i - 1] if i > 0 else min(0.0, bounds[i])
    below = counts[i - 1] if i > 0 else 0.0
    return lower + (bounds[i] - lower) * (rank - below) / (counts[i] - below)
