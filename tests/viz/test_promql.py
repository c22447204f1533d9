"""proxy/viz/promql.py: increase/rate and histogram_quantile against values worked out by hand
(PromQL's extrapolation and counter-reset rules), including resets and empty windows."""

from __future__ import annotations

import math

import pytest

from proxy.viz.promql import histogram_quantile, increase, rate

INF = math.inf


def test_increase_needs_two_points():
    assert increase([], 0, 60) is None
    assert increase([(10.0, 5.0)], 0, 60) is None
    assert rate([(10.0, 5.0)], 0, 60) is None
    # Points outside the range do not count.
    assert increase([(-5.0, 1.0), (10.0, 5.0), (70.0, 9.0)], 0, 60) is None


def test_increase_over_points_at_the_edges_is_the_delta():
    assert increase([(0.0, 10.0), (30.0, 40.0), (60.0, 70.0)], 0, 60) == pytest.approx(60.0)
    assert rate([(0.0, 10.0), (60.0, 70.0)], 0, 60) == pytest.approx(1.0)


def test_a_counter_reset_adds_the_value_before_the_drop():
    # 10 -> 50, restart, 0 -> 20: 40 before the reset, 20 after.
    assert increase([(0.0, 10.0), (20.0, 50.0), (40.0, 5.0), (60.0, 20.0)], 0, 60) == pytest.approx(40 + 5 + 15)
    # (0 -> 5 after the restart counts: the counter starts again from zero.)
    assert increase([(0.0, 100.0), (10.0, 3.0)], 0, 10) == pytest.approx(3.0)


def test_extrapolation_to_the_edges():
    # Points at 15, 30, 45 over [0, 60]: interval 15, edges 15 away (< 1.1 * 15): extrapolate fully.
    # delta 30 over 30 s sampled -> 60 s: 60; but zero is reached 30 * (100/30) = 100 s before: no limit.
    assert increase([(15.0, 100.0), (30.0, 115.0), (45.0, 130.0)], 0, 60) == pytest.approx(60.0)
    # Edges 20 away (>= 16.5): half an interval each side: 30 * (30 + 7.5 + 7.5) / 30 = 45.
    assert increase([(20.0, 100.0), (30.0, 115.0), (40.0, 130.0)], 0, 60) == pytest.approx(45.0)


def test_extrapolation_stops_where_the_counter_was_zero():
    # 0 -> 10 over 10 s, range starts 5 s before: the counter was 0 at the first point already.
    assert increase([(5.0, 0.0), (10.0, 5.0), (15.0, 10.0)], 0, 15) == pytest.approx(10.0)
    # 2 -> 12 over 10 s (1/s): zero 2 s before the first point, so only 2 s of the 4 before it count.
    assert increase([(4.0, 2.0), (9.0, 7.0), (14.0, 12.0)], 0, 14) == pytest.approx(12.0)


def test_quantile_of_an_empty_histogram_is_none():
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.99, [(1.0, 0.0), (INF, 0.0)]) is None


def test_quantile_interpolates_linearly_inside_the_bucket():
    # 10 in (0,1], 30 in (1,2], 60 in (2,5]: rank 50 is 10/60 into (2,5] -> 2.5; rank 99 -> 2 + 3*59/60.
    buckets = [(1.0, 10.0), (2.0, 40.0), (5.0, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(2.5)
    assert histogram_quantile(0.95, buckets) == pytest.approx(2 + 3 * 55 / 60)
    assert histogram_quantile(0.99, buckets) == pytest.approx(2 + 3 * 59 / 60)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.5)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert histogram_quantile(0.99, [(1.0, 90.0), (2.0, 95.0), (INF, 100.0)]) == 2.0


def test_quantile_outside_0_1_is_refused():
    with pytest.raises(ValueError):
        histogram_quantile(1.5, [(1.0, 1.0), (INF, 1.0)])
