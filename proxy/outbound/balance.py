"""The endpoint stage of outbound: one balancer per discovered service, fed by discovery updates.

A ``BalancedService`` turns endpoint-set updates into balancer membership,
answers each request with the endpoint picked by PeakEWMA + P2C (or queues
it until an endpoint is ready, up to the queue timeout, then 503), and takes
back every pick through ``settle`` so latency and failure accrual stay
accurate. Meshed endpoints are reached through their proxy's address.
Compiled (balance.pxd): ``route`` and ``settle`` run for every balanced request.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

import cython

from proxy.config import BalancerSettings
from proxy.core.target import Target
from proxy.errors import NoEndpoints
from proxy.exchange.clock import now
from proxy.exchange.core import QUEUED, SETTLE_CANCELLED, SETTLE_OK, Exchange
from proxy.exchange.ends import Picker
from proxy.outbound.balancer import Balancer
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.outbound.balance")

if cython.compiled:
    from cython.cimports.posix.time import CLOCK_MONOTONIC, clock_gettime, timespec

NS = 1_000_000_000
_OK = SETTLE_OK
_CANCELLED = SETTLE_CANCELLED


def _monotonic_ns():
    """``time.monotonic_ns()`` (CLOCK_MONOTONIC), without a Python call when compiled."""
    if not cython.compiled:
        return time.monotonic_ns()
    ts = cython.declare(timespec)
    clock_gettime(CLOCK_MONOTONIC, cython.address(ts))
    return ts.tv_sec * NS + ts.tv_nsec


def _ns(seconds: float) -> int:
    return int(seconds * NS)


AVOID_TRIES = 4  # extra picks that look for another endpoint than the one that just failed


class BalancedService(Picker):
    """Endpoints of one logical service, their balancer, and requests waiting for one.

    Each member's Target rides on it (``Endpoint.handle``): a pick is answered without a lookup.
    """

    def __init__(self, loop, name: str, watch, settings: BalancerSettings) -> None:
        self.loop = loop
        self.name = name
        self.settings = settings
        self.queue_timeout = settings.queue_timeout
        self.balancer = Balancer(
            default_rtt_ns=_ns(settings.ewma_default_rtt),
            decay_ns=_ns(settings.ewma_decay),
            seed=random.getrandbits(63),
        )
        self.policy_accrual = None  # the policy file's failureAccrual for this service, if any
        # A failover group's success-rate window: told each outcome (ok: bool).
        self.observer: Callable[[bool], None] | None = None
        self._set_accrual(watch.snapshot.accrual)
        self.waiters: deque[tuple[float, Exchange]] = deque()
        self.timer = None
        self.last_used = loop.time()
        self.watch = watch
        self.targets: dict[object, Target] = {}
        self.labels: dict[object, tuple[tuple[str, str], ...]] = {}  # endpoint address -> discovery's labels
        self.unsubscribe = watch.subscribe(self._on_update)
        self._apply(watch.snapshot.endpoints)

    # -- failure accrual -------------------------------------------------------
    def set_policy_accrual(self, accrual) -> None:
        """The policy file's failureAccrual (None: none); it wins field by field over discovery's."""
        if accrual != self.policy_accrual:
            self.policy_accrual = accrual
            self._set_accrual(self.watch.snapshot.accrual)

    def _set_accrual(self, discovered) -> None:
        settings = self.settings

        def pick(field: str, default):
            for source in (self.policy_accrual, discovered):
                value = getattr(source, field, None) if source is not None else None
                if value is not None:
                    return value
            return default

        min_ns = _ns(pick("min_backoff", settings.failure_accrual_min_backoff))
        # Fields from different sources may disagree (a policy's minimum over the default maximum).
        max_ns = max(min_ns, _ns(pick("max_backoff", settings.failure_accrual_max_backoff)))
        self.balancer.set_accrual(pick("consecutive_failures", settings.failure_accrual_consecutive), min_ns, max_ns)

    # -- membership ---------------------------------------------------------
    def _on_update(self, update) -> None:
        self._set_accrual(update.snapshot.accrual)  # discovery's annotations may have changed too
        self._apply(update.snapshot.endpoints)
        self._wake()

    def _apply(self, endpoints) -> None:
        wanted = {ep.address: ep for ep in endpoints}
        # The balancer compares (weight, connect address) to spot changes;
        # the exchange's Target for each member is kept here, built once.
        added, removed, changed = self.balancer.update(
            [(ep.address, float(ep.weight), ep.proxy if ep.proxy is not None else ep.address)
             for ep in endpoints])
        for key in removed:
            gone = self.targets.pop(key, None)
            if gone is not None:
                gone.endpoint.handle = None  # the member and its Target no longer hold each other
            self.labels.pop(key, None)
        renewed = set(added) | set(changed)
        for key in renewed:
            self._target(key, wanted[key])
        # The balancer does not see what else discovery may change at the same address: the identity the
        # peer must prove (a pod's address given to another workload), the protocol, the labels. A member
        # whose Target no longer says what discovery says gets a new one (and new connections: the pools
        # are keyed by Target).
        relabeled = 0
        for key, ep in wanted.items():
            old = self.targets.get(key)
            if key in renewed or old is None:
                continue
            mesh_port, identity = _peer(ep)
            if (old.identity != identity or old.mesh_port != mesh_port or old.protocol != ep.protocol
                    or self.labels.get(key) != ep.labels):
                self._target(key, ep)
                relabeled += 1
        if added or removed or changed or relabeled:
            log.info("endpoints updated", service=self.name, ready=self.balancer.ready_count,
                     endpoints=len(wanted), added=len(added), removed=len(removed),
                     changed=len(changed) + relabeled)

    def _target(self, key, ep) -> None:
        member = self.balancer.get(key)
        assert member is not None  # a member of the balancer's current set
        host, port = member.target
        mesh_port, identity = _peer(ep)
        self.labels[key] = ep.labels
        target = Target(host, port, mesh_port=mesh_port, identity=identity, protocol=ep.protocol,
                        service=self, endpoint=member)
        self.targets[key] = target
        member.handle = target

    def endpoint_labels(self, target: Target) -> tuple[tuple[str, str], ...]:
        """Discovery's labels of the endpoint ``target`` reaches (for the metrics' ``dst_*`` labels)."""
        member = target.endpoint
        return self.labels.get(member.key, ()) if member is not None else ()

    # -- picking --------------------------------------------------------------
    def route(self, conn, avoid=None) -> object:
        """The target for one request, or QUEUED (``conn.routed``/``conn.fail`` come later).

        ``avoid``: the endpoint a connect just failed on. It is not ejected
        until failures accrue, so P2C could pick it again for the same request;
        a few more picks (undone with ``cancel``) look for another one first.
        """
        self.last_used = now()  # the loop's clock (clock.now shares its epoch), without a Python call
        t = _monotonic_ns()
        member = self.balancer.pick(t)
        tries = 0
        while member is not None and member is avoid and tries < AVOID_TRIES:
            tries += 1
            again = self.balancer.pick(t)
            self.balancer.cancel(member)
            member = again
        if member is not None:
            return member.handle
        self.waiters.append((self.loop.time() + self.queue_timeout, conn))
        self._arm()
        return QUEUED

    def pick_connection(self) -> Target | None:
        """For opaque TCP: an endpoint now, or None (connections are not queued)."""
        self.last_used = self.loop.time()
        member = self.balancer.pick(time.monotonic_ns())
        return member.handle if member is not None else None

    def settle(self, target, rtt, outcome):
        member = target.endpoint
        if outcome == _CANCELLED:
            self.balancer.cancel(member)
        else:
            self.balancer.complete(member, _monotonic_ns(), int(rtt * NS), outcome == _OK)
            if self.observer is not None:
                self.observer(outcome == _OK)
        if self.waiters:
            self._wake()

    # -- the queue --------------------------------------------------------------
    def forget_waiter(self, conn) -> None:
        """``conn`` no longer waits (it timed out or went away): it must not be routed later."""
        if any(waiter is conn for _, waiter in self.waiters):
            self.waiters = deque((d, w) for d, w in self.waiters if w is not conn)

    def _arm(self) -> None:
        if self.timer is not None or not self.waiters:
            return
        t = self.loop.time()
        delay = self.waiters[0][0] - t
        next_ready = self.balancer.next_ready_ns(time.monotonic_ns())
        if next_ready >= 0:
            delay = min(delay, max(0.0, (next_ready - time.monotonic_ns()) / NS))
        self.timer = self.loop.call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        self.timer = None
        self._wake()

    def _wake(self) -> None:
        t = self.loop.time()
        while self.waiters:
            deadline, conn = self.waiters[0]
            if deadline <= t:
                self.waiters.popleft()
                conn.fail(NoEndpoints(f"no ready endpoints for {self.name} within "
                                      f"{self.queue_timeout:g}s"))
                continue
            member = self.balancer.pick(time.monotonic_ns())
            if member is None:
                break
            self.waiters.popleft()
            conn.routed(member.handle)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._arm()

    def close(self) -> None:
        self.closed = True  # connections that remembered this service route through the router again
        self.unsubscribe()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiters:
            _, conn = self.waiters.popleft()
            conn.fail(NoEndpoints(f"service {self.name} is no longer known"))

    def idle(self, at: float, limit: float) -> bool:
        return not self.waiters and at - self.last_used > limit and all(
            m.pending == 0 for m in self.balancer.endpoints())


def _peer(ep) -> tuple[int, str | None]:
    """How an endpoint is reached: a meshed one through its proxy, told the app port, with mutual TLS
    when discovery names the peer's identity."""
    if ep.proxy is None:
        return 0, None
    return ep.address[1], ep.identity
