"""A failover group's success-rate decisions (proxy/outbound/failover.py), on a clock the test moves."""

from __future__ import annotations

import pytest

from proxy.outbound import failover
from proxy.outbound.failover import FailoverState
from proxy.policy.model import Failover

PRIMARY, SECONDARY = ("east", 80), ("west", 80)


@pytest.fixture
def group(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(failover.time, "monotonic", lambda: clock[0])
    state = FailoverState("web:80", Failover("east:80", ("west:80",), 0.8, 3.0, 10), [PRIMARY, SECONDARY])
    state.clock = clock  # type: ignore[attr-defined]
    return state


def _pick(group) -> tuple[str, int]:
    return group.pick(lambda address, _group: True)


def test_a_late_success_does_not_send_the_traffic_back_to_a_failing_primary(group):
    for _ in range(15):
        group.observe(True)
    for _ in range(4):
        group.observe(False)
    assert _pick(group) == SECONDARY  # 15 of 19: under 80 %
    group.observe(True)  # the answer of a request sent before the switch: 16 of 20 is 80 % again
    assert _pick(group) == SECONDARY
    assert group.switches == {("east:80", "west:80", "success_rate"): 1}


def test_back_once_the_window_forgot_and_judged_afresh(group):
    for _ in range(10):
        group.observe(False)
    assert _pick(group) == SECONDARY
    group.clock[0] += 2.0
    for _ in range(5):  # late failures, later in the window than the first ones
        group.observe(False)
    group.clock[0] += 1.5  # the first ten are forgotten; five remain, under minRequests
    assert _pick(group) == PRIMARY
    group.observe(True)  # the five old failures no longer count against it
    for _ in range(8):
        group.observe(True)
    group.observe(False)
    assert _pick(group) == PRIMARY  # 9 of 10 since it came back
    assert group.switches[("west:80", "east:80", "recovered")] == 1
    assert ("east:80", "west:80", "success_rate") in group.switches and len(group.switches) == 2
