"""RetryBudget with a fake clock: deposits, withdrawals, ttl expiry, the floor, and the inequality."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy.budget import RetryBudget


def drain(budget: RetryBudget, now: float) -> int:
    n = 0
    while budget.try_withdraw(now):
        n += 1
        assert n < 10_000
    return n


def test_floor_only_min_per_second_times_ttl():
    b = RetryBudget(retry_ratio=0.2, min_per_second=10, ttl=10)
    assert drain(b, 0.0) == 100
    assert b.state(0.0).available == 0


def test_deposits_add_ratio():
    b = RetryBudget(retry_ratio=0.2, min_per_second=0, ttl=10)
    for _ in range(50):
        b.deposit(1.0)
    assert drain(b, 1.5) == 10
    b.deposit(1.6)
    assert not b.try_withdraw(1.6)  # 0.2 * 51 = 10.2 -> still 10
    for _ in range(4):
        b.deposit(1.7)
    assert b.try_withdraw(1.7)  # 0.2 * 55 = 11


def test_ttl_expiry_forgets_requests_and_retries():
    b = RetryBudget(retry_ratio=0.5, min_per_second=0, ttl=10)
    for _ in range(20):
        b.deposit(0.0)
    assert drain(b, 0.0) == 10
    assert b.state(9.5).retries == 10  # still inside the window
    s = b.state(10.0)  # the slice of t=0 has left the window
    assert (s.requests, s.retries, s.available) == (0, 0, 0)
    assert not b.try_withdraw(10.0)


def test_partial_expiry_slice_by_slice():
    b = RetryBudget(retry_ratio=1.0, min_per_second=0, ttl=4)  # 4 slices of 1 s
    for t in range(4):
        b.deposit(float(t))
    assert b.state(3.0).requests == 4
    assert b.state(4.0).requests == 3
    assert b.state(5.5).requests == 2
    assert b.state(100.0).requests == 0


def test_long_gap_and_backwards_time():
    b = RetryBudget(0.2, 1, 2)
    b.deposit(5.0)
    assert b.try_withdraw(4.0)  # earlier time is treated as now
    assert b.state(1_000_000.0).requests == 0


def test_state_counts():
    b = RetryBudget(0.2, 1, 10)
    for _ in range(10):
        b.deposit(0.0)
    b.try_withdraw(0.1)
    s = b.state(0.2)
    assert (s.requests, s.retries, s.available) == (10, 1, 11)


@pytest.mark.parametrize("bad", [dict(retry_ratio=-1), dict(ttl=0), dict(min_per_second=-1)])
def test_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        RetryBudget(**bad)


events = st.lists(
    st.tuples(st.floats(min_value=0, max_value=3.0), st.booleans()), min_size=1, max_size=400
)


@settings(max_examples=150, deadline=None)
@given(events=events, ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
       floor=st.integers(0, 3), ttl=st.sampled_from([1.0, 2.5, 10.0]))
def test_inequality_holds_for_random_sequences(events, ratio, floor, ttl):
    """For every accepted retry at t: retries in (t - ttl + w, t] <= ratio * requests in (t - ttl, t] + floor * ttl."""
    b = RetryBudget(ratio, floor, ttl)
    width = ttl / b._n
    now = 0.0
    deposits: list[float] = []
    retries: list[float] = []
    for step, is_retry in events:
        now += step
        if not is_retry:
            b.deposit(now)
            deposits.append(now)
        elif b.try_withdraw(now):
            retries.append(now)
            recent_retries = sum(1 for r in retries if r > now - ttl + width + 1e-9)
            recent_requests = sum(1 for d in deposits if d > now - ttl - 1e-9)
            assert recent_retries <= ratio * recent_requests + floor * ttl + 1e-6


@settings(max_examples=60, deadline=None)
@given(order=st.lists(st.sampled_from(["a-req", "a-retry", "b-req", "b-retry", "tick"]), max_size=300))
def test_interleaved_callers_share_one_budget(order):
    """Two callers interleaving on one budget never get more in total than the budget allows."""
    b = RetryBudget(0.25, 0, 60)
    now, requests, granted = 0.0, 0, 0
    for op in order:
        if op == "tick":
            now += 0.5
        elif op.endswith("req"):
            b.deposit(now)
            requests += 1
        elif b.try_withdraw(now):
            granted += 1
        assert granted <= 0.25 * requests + 1e-9  # nothing expires within 60 s here
    # Whatever the interleaving, once budget exists it is granted to whoever asks.
    assert b.state(now).available == int(0.25 * requests + 1e-9) - granted
