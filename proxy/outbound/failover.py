"""Failover between a service's backends: the primary while it can serve, else its secondaries in order.

linkerd-failover is an operator that rewrites a TrafficSplit's weights when
the primary's Endpoints lose their ready addresses. meshproxy reads the same
documents (its label and ``failover.linkerd.io/primary-service`` annotation)
and decides per request instead, so the switch follows discovery and the
balancer at once, without a control-plane round trip:

* the primary serves while it has a ready endpoint (discovery lists one that
  failure accrual has not ejected, or an ejected one is due for its probe)
  and, when ``minSuccessRate`` is set, while its success rate over the window
  (at least ``minRequests`` responses) stays at or above it; once under it,
  the primary gets its traffic back when the window has forgotten the
  failures (fewer than ``minRequests`` responses left in it), and is judged
  afresh from there;
* otherwise the first secondary, in the order listed, that has a ready endpoint;
* when none can serve, the primary (the request fails there, as with the operator).

A backend discovery does not know is taken as ready (nothing says it is not).
Every change of the serving backend is logged and counted
(``outbound_failover_switches_total``). The state lives in the policy's
registry, so a reload with the same failover spec keeps it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.policy.model import Failover
from proxy.telemetry.labels import text
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.outbound.failover")

BUCKETS = 10  # the success-rate window is kept in this many slices

Address = tuple[str, int]


class SuccessWindow:
    """Responses over the last ``window`` seconds, in BUCKETS slices (old slices are dropped as time passes)."""

    __slots__ = ("span", "ok", "failed", "stamps")

    def __init__(self, window: float) -> None:
        self.span = window / BUCKETS
        self.ok = [0] * BUCKETS
        self.failed = [0] * BUCKETS
        self.stamps = [-1] * BUCKETS

    def add(self, ok: bool, now: float) -> None:
        tick = int(now / self.span)
        i = tick % BUCKETS
        if self.stamps[i] != tick:
            self.stamps[i], self.ok[i], self.failed[i] = tick, 0, 0
        if ok:
            self.ok[i] += 1
        else:
            self.failed[i] += 1

    def clear(self) -> None:
        self.stamps = [-1] * BUCKETS

    def counts(self, now: float) -> tuple[int, int]:
        """(successes, failures) within the window."""
        tick = int(now / self.span)
        ok = failed = 0
        for i in range(BUCKETS):
            if tick - BUCKETS < self.stamps[i] <= tick:
                ok += self.ok[i]
                failed += self.failed[i]
        return ok, failed


class FailoverState:
    """One failover group (a service's split, or one route's backends): who serves, and the switch counts."""

    def __init__(self, dst: str, spec: Failover, addresses: list[Address]) -> None:
        self.dst = dst
        self.spec = spec
        self.order = addresses  # primary first, then the secondaries in order
        self.names = (spec.primary, *spec.secondaries)
        self.active = 0
        self.switches: dict[tuple[str, str, str], int] = {}
        self.window = SuccessWindow(spec.window) if spec.min_success_rate is not None else None
        self.tripped = False  # the primary lost its traffic for its success rate

    def observe(self, ok: bool) -> None:
        """One of the primary's responses (the balancer's settle): feeds the success-rate window."""
        if self.window is not None:
            self.window.add(ok, time.monotonic())

    def _primary_healthy(self) -> bool:
        window, spec = self.window, self.spec
        if window is None or spec.min_success_rate is None:
            return True
        ok, failed = window.counts(time.monotonic())
        total = ok + failed
        if total < spec.min_requests:  # too little to judge, or the window has forgotten: the primary serves
            if self.tripped:
                # Back on probation: judged on its new answers only (the few failures the window still
                # holds would otherwise send the traffic away again with its first answer).
                self.tripped = False
                window.clear()
            return True
        if self.tripped:
            # Left for its success rate: back only once the window has forgotten the failures. The answers
            # of requests sent before the switch still land in the window, and one late success can lift
            # the rate over the threshold again: traffic would flap back to a primary that is still failing.
            return False
        self.tripped = ok / total < spec.min_success_rate
        return not self.tripped

    def pick(self, ready: Callable[[Address, FailoverState], bool]) -> Address:
        """The backend for one request (``ready(address, self)``: it has an endpoint that can take it)."""
        order = self.order
        reason = "not_ready"
        chosen = 0
        if not ready(order[0], self):
            chosen = -1
        elif not self._primary_healthy():
            chosen, reason = -1, "success_rate"
        if chosen < 0:
            chosen = 0  # nobody can serve: the primary fails the request, as with the operator
            for i in range(1, len(order)):
                if ready(order[i], self):
                    chosen = i
                    break
        if chosen != self.active:
            self._switch(chosen, reason if chosen else "recovered")
        return order[chosen]

    def _switch(self, chosen: int, reason: str) -> None:
        old, new = self.names[self.active], self.names[chosen]
        self.active = chosen
        key = (old, new, reason)
        self.switches[key] = self.switches.get(key, 0) + 1
        log.warning("failover: traffic moved", service=self.dst, **{"from": old, "to": new}, reason=reason)

    def render(self, switches: list[str], active: list[str]) -> None:
        for (old, new, reason), n in self.switches.items():
            labels = text((("dst", self.dst), ("from", old), ("to", new), ("reason", reason)))
            switches.append(f"outbound_failover_switches_total{{{labels}}} {n}")
        for i, name in enumerate(self.names):
            labels = text((("dst", self.dst), ("backend", name)))
            active.append(f"outbound_failover_active{{{labels}}} {1 if i == self.active else 0}")


def render(out: list[str], states) -> None:
    switches: list[str] = []
    active: list[str] = []
    for state in states:
        state.render(switches, active)
    out.append("# HELP outbound_failover_switches_total Times a failover group moved its traffic to another backend.")
    out.append("# TYPE outbound_failover_switches_total counter")
    out.extend(switches)
    out.append("# HELP outbound_failover_active Which backend of a failover group takes its traffic (1).")
    out.append("# TYPE outbound_failover_active gauge")
    out.extend(active)
