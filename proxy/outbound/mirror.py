"""Request mirroring (Gateway API RequestMirror): copies of a route's requests sent fire-and-forget.

A copy is an exchange of its own, on a context of its own (``MirrorHub.ctx``)
that shares the outbound side's relays, balancers and meshed hop: it is
routed straight to the mirror's concrete service (no route policy, so no
retries, no retry budget, no route metrics), and its client end
(``MirrorDown``) takes and discards the whole answer.

A copy never runs ahead of the primary: the route only decides (and
reserves an in-flight slot) as the request arrives; the copies go when the
primary exchange ends, its response written (``MirrorTee.primary_done``, in
the same turn of the loop: no extra turn, no wakeup), so a copy's work is
never between a request and its own answer. A primary still running after
``COPY_HOLD`` (a long answer, a stream) does not hold its copies longer: the
hub's one timer sends them, a few per turn of the loop. Until its copies go,
the request's body is kept (``MirrorTee``, at most ``max_body`` bytes);
after, it is handed on as the primary reads it, with credit 0, so a slow
mirror never slows the client, and never waits for it.

Bounded twice: a request body over ``max_body`` bytes is not mirrored (a
declared length is judged before the copy starts, a chunked body when it
outgrows the limit: the copy is then abandoned), and at most
``max_in_flight`` copies are queued or in flight at once (which bounds the
queue too). Every copy not sent is counted with its reason; copies that
fail (an error or a 5xx) are counted too, on the mirror's own counters:
never on the primary request's. A copy gets one attempt (no repick, no
retry), and a mirror the proxy cannot reach is left alone for a backoff
(``mirror_unreachable``), so a dead mirror costs the primary neither
connects nor latency.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from proxy.errors import UpstreamError
from proxy.exchange.clock import now
from proxy.exchange.core import Exchange
from proxy.exchange.ends import DownEnd
from proxy.telemetry.labels import text
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.outbound.mirror")

SKIP_REASONS = ("body_too_large", "in_flight_limit", "upgrade", "request_incomplete", "mirror_unreachable")
FAILURE_LOG_INTERVAL = 10.0  # at most one failure line per mirror this often (a dead mirror fails every copy)
# A mirror the proxy cannot reach (connect errors, timeouts: not its 5xx answers) this many times in a row
# gets no copies for a backoff (doubling up to the maximum), then one copy probes it: copies to a dead
# mirror would otherwise cost the proxy's loop a failed connect each, and the primary requests their latency.
UNREACHABLE_AFTER = 5
UNREACHABLE_MIN_BACKOFF = 1.0
UNREACHABLE_MAX_BACKOFF = 30.0
# The longest a request's copies wait for its primary to end: most primaries end well within it, and their
# copies go right after their answer; a long one's (a stream, a slow backend) go from the hub's timer.
COPY_HOLD = 0.01
# Requests whose held copies the timer sends per turn of the loop: a burst of copies waits behind the primary
# requests' reads that are ready meanwhile instead of holding the loop for all of them.
DRAIN_BATCH = 4


class MirrorCounters:
    """One (service, mirror) pair's counters; kept across policy reloads."""

    def __init__(self, dst: str, mirror: str) -> None:
        self.labels = text((("dst", dst), ("mirror", mirror)))
        self.requests = 0
        self.failures = 0
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.last_logged = -FAILURE_LOG_INTERVAL
        self.errors_in_row = 0
        self.backoff = UNREACHABLE_MIN_BACKOFF
        self.closed_until = 0.0  # loop time before which the mirror gets no copies

    def outcome(self, unreachable: bool, now: float) -> None:
        if not unreachable:
            self.errors_in_row = 0
            self.backoff = UNREACHABLE_MIN_BACKOFF
            return
        self.errors_in_row += 1
        if self.errors_in_row >= UNREACHABLE_AFTER:
            self.errors_in_row = UNREACHABLE_AFTER - 1  # after the backoff one copy probes it
            self.closed_until = now + self.backoff
            self.backoff = min(self.backoff * 2, UNREACHABLE_MAX_BACKOFF)


class MirrorHub:
    """The outbound side's mirroring: the copies' context (set by outbound.build), limits, counters and the
    queue of copies waiting for the loop to be done with primary work."""

    def __init__(self, max_in_flight: int, max_body: int, label_limit: int = 500) -> None:
        self.max_in_flight = max_in_flight
        self.max_body = max_body
        self.label_limit = label_limit
        self.in_flight = 0  # copies queued or sent and not yet answered
        self.ctx: Any = None  # an ExchangeContext, set by outbound.build
        self.router: Any = None  # the outbound router: concrete endpoints of mirror services
        self.counters: dict[tuple[str, str], MirrorCounters] = {}
        # Requests whose copies wait for their primary to end, in arrival order; those sent (or given up)
        # meanwhile leave lazily. Each one waiting holds at least one of the ``max_in_flight`` slots, and the
        # queue is compacted when it grows past twice that, so MESHPROXY_MIRROR_MAX_IN_FLIGHT bounds it (and
        # max_body each one's body).
        self.queue: deque[MirrorTee] = deque()
        self.timer: Any = None  # the loop's handle for the next ``drain``, or None

    def counters_for(self, dst: str, mirror: str) -> MirrorCounters | None:
        key = (dst, mirror)
        found = self.counters.get(key)
        if found is None and len(self.counters) < self.label_limit:
            found = self.counters[key] = MirrorCounters(dst, mirror)
        return found

    # -- the copies' router (the context's ``router``) ----------------------------
    def route(self, head, meta, ex):
        return self.router.concrete_endpoint(ex.down.address, ex)

    def reroute(self, head, meta, failed, conn, resplit=False):
        # Never asked again: a copy gets one attempt (a dead mirror must not cost three connects per request).
        raise UpstreamError(f"mirror {failed} not reached (a copy is sent once)")

    def unqueue(self, conn) -> None:
        self.router.unqueue(conn)

    # -- the copies held for their primaries ------------------------------------------
    def hold(self, tee: MirrorTee) -> None:
        queue = self.queue
        while queue and queue[0].sent():
            queue.popleft()
        if len(queue) >= 2 * self.max_in_flight:  # a long primary first holds the spent ones behind it
            kept: deque[MirrorTee] = deque()
            for held in queue:
                if not held.sent():
                    kept.append(held)
            self.queue = queue = kept
        queue.append(tee)
        if self.timer is None:
            self.timer = self.ctx.loop.call_at(tee.due, self.drain)

    def drain(self) -> None:
        """Send the copies of the next few requests held past ``COPY_HOLD``; then wait for the next one due."""
        self.timer = None
        queue = self.queue
        loop = self.ctx.loop
        time_now = loop.time()
        sent = 0
        tee: MirrorTee
        try:
            while queue:
                tee = queue[0]
                if tee.sent():
                    queue.popleft()
                elif tee.due > time_now:
                    self.timer = loop.call_at(tee.due, self.drain)
                    return
                elif sent == DRAIN_BATCH:
                    self.timer = loop.call_soon(self.drain)
                    return
                else:
                    queue.popleft()
                    sent += 1
                    tee.launch()
        except BaseException:  # whatever a copy raised, the queue is not left stopped
            if self.timer is None and queue:
                self.timer = loop.call_soon(self.drain)
            raise

    def render(self, out: list[str]) -> None:
        families = (
            ("outbound_http_mirror_requests_total", "Request copies sent to a mirror backend."),
            ("outbound_http_mirror_failures_total", "Request copies a mirror answered with an error or a 5xx "
                                                    "(never counted on the primary request)."),
            ("outbound_http_mirror_skipped_total", "Requests a route would have mirrored but did not, by reason."),
        )
        for name, help_text in families:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} counter")
            for c in self.counters.values():
                if name.endswith("skipped_total"):
                    for reason, n in c.skipped.items():
                        out.append(f'{name}{{{c.labels},reason="{reason}"}} {n}')
                else:
                    out.append(f"{name}{{{c.labels}}} {c.requests if 'requests' in name else c.failures}")
        out.append("# HELP outbound_http_mirror_in_flight Request copies queued or in flight now.")
        out.append("# TYPE outbound_http_mirror_in_flight gauge")
        out.append(f"outbound_http_mirror_in_flight {self.in_flight}")


class MirrorRule:
    """A route's RequestMirror filters, as the exchange uses them: ``begin`` decides per request."""

    def __init__(self, hub: MirrorHub, targets: list[tuple[tuple[str, int], float, MirrorCounters]]) -> None:
        self.hub = hub
        self.targets = targets  # (concrete address, fraction, counters)
        self.random = random.random

    def begin(self, ex: Exchange) -> MirrorTee | None:
        """Decide which copies of ``ex`` this request gets and queue them (None: none)."""
        hub: MirrorHub = self.hub
        if hub.ctx is None:
            return None
        tee: MirrorTee | None = None
        counters: MirrorCounters
        for address, fraction, counters in self.targets:
            if fraction < 1.0 and self.random() >= fraction:
                continue
            # clock.now: the loop's clock's epoch, read without a Python call (checked per request while a mirror
            # is left alone; a tick's skew against the loop's clock is nothing beside a backoff of seconds)
            if counters.closed_until and now() < counters.closed_until:
                counters.skipped["mirror_unreachable"] += 1
            elif ex.upgrade:  # a tunnel cannot be copied
                counters.skipped["upgrade"] += 1
            elif ex.req_length > hub.max_body:
                counters.skipped["body_too_large"] += 1
            elif hub.in_flight >= hub.max_in_flight:
                counters.skipped["in_flight_limit"] += 1
            else:
                hub.in_flight += 1  # the slot is held from now: the queue is bounded with the copies in flight
                if tee is None:
                    tee = MirrorTee(hub, ex)
                    hub.hold(tee)
                tee.targets.append((address, counters))
        return tee


class MirrorTee:
    """One request's copies: its head and body kept until they are sent, then its body handed on to them
    (with no credit: never waited for)."""

    def __init__(self, hub: MirrorHub, ex: Exchange) -> None:
        self.hub = hub
        # The primary's own objects: never edited after the request arrived (edits make new ones).
        self.head = ex.head
        self.headers = ex.headers
        self.length = ex.req_length
        self.meta = ex.meta
        self.ended = ex.req_ended
        self.targets: list[tuple[tuple[str, int], MirrorCounters]] = []  # copies still to send
        self.body: list[bytes] = []  # what the primary read before the copies went
        self.req_trailers = None
        self.copies: list[Exchange] = []  # copies sent that still wait for request bytes
        self.size = 0
        self.launched = False
        # The latest the copies wait for the primary to end, on the loop's own (coarse) clock: the hub's timer and
        # drain compare it with loop.time(); clock.now() runs ahead of it by up to a tick, and drain would re-arm
        # a timer of zero until the loop's clock caught up.
        self.due = hub.ctx.loop.time() + COPY_HOLD

    def sent(self) -> bool:
        """Nothing left to send: the copies went, or were given up."""
        return self.launched or not self.targets

    def launch(self) -> None:
        """Send this request's copies with what the primary has read so far."""
        self.launched = True
        targets, self.targets = self.targets, []
        if not targets:
            return  # abandoned while queued
        hub: MirrorHub = self.hub
        body, trailers = self.body, self.req_trailers
        self.body = []
        whole = self.ended and not body and trailers is None
        counters: MirrorCounters
        for address, counters in targets:
            counters.requests += 1
            copy = Exchange(hub.ctx, MirrorDown(hub, counters, address), self.meta)
            copy.start(self.head, self.headers, self.length, whole)
            for chunk in body:
                if not copy.done:
                    copy.request_data(chunk, 0, False)
            if not copy.done and not whole:
                if trailers is not None:
                    copy.request_trailers(trailers)
                elif self.ended:
                    copy.request_data(b"", 0, True)
            if not copy.done and not copy.req_ended:
                self.copies.append(copy)

    def data(self, data: bytes, end: bool) -> None:
        self.size += len(data)
        if self.size > self.hub.max_body:
            self._abandon("body_too_large")
            return
        if end:
            self.ended = True
        if not self.launched:
            if data:
                self.body.append(data)
            return
        for copy in self.copies:
            copy.request_data(data, 0, end)
        if end:
            self.copies = [c for c in self.copies if not c.done]

    def trailers(self, fields) -> None:
        self.ended = True
        if not self.launched:
            self.req_trailers = fields
            return
        for copy in self.copies:
            copy.request_trailers(fields)

    def primary_done(self) -> None:
        """The primary exchange ended, its response written: copies still held go now, in the same turn of the
        loop (a whole request); copies still missing request bytes will never get them."""
        if not self.ended:
            self._abandon("request_incomplete")
        elif not self.launched:
            try:
                self.launch()
            except Exception:  # noqa: BLE001 - the primary's exchange must end whatever its copy did
                log.exception("mirrored request not sent")

    def _abandon(self, reason: str) -> None:
        targets, self.targets = self.targets, []
        self.body = []
        counters: MirrorCounters
        for _address, counters in targets:  # never sent: give back their slots
            self.hub.in_flight -= 1
            counters.skipped[reason] += 1
        copies, self.copies = self.copies, []
        for copy in copies:
            if not copy.done and not copy.req_ended:
                down = copy.down
                down.skipped = reason
                copy.client_gone()


class MirrorDown(DownEnd):
    """A copy's client end: takes the whole answer and forgets it, then counts the outcome."""

    def __init__(self, hub: MirrorHub, counters: MirrorCounters, address: tuple[str, int]) -> None:
        self.hub = hub
        self.counters = counters
        self.address = address
        self.status = 0
        self.error = None
        self.skipped = None

    def send_informational(self, ex, status, h1head, fields):
        pass

    def send_head(self, ex, status, h1head, fields, length, end):
        self.status = status

    def send(self, ex, data):
        return len(data)

    def end_response(self, ex, trailers):
        pass

    def flush_response(self, ex):
        pass

    def send_error(self, ex, err):
        self.error = err

    def cut(self, ex, err):
        self.error = err

    def tunnel(self, ex, status, h1head, transport, rest):
        transport.abort()  # never asked for: upgrades are not mirrored
        return None

    def release(self, ex, credit):
        pass

    def exchange_done(self, ex):
        hub: MirrorHub = self.hub
        counters: MirrorCounters = self.counters
        hub.in_flight -= 1
        if self.skipped is not None:
            counters.requests -= 1  # abandoned before its request was whole: not sent after all
            counters.skipped[self.skipped] += 1
        elif self.error is not None or self.status >= 500:
            counters.failures += 1
            time_now = hub.ctx.loop.time()
            counters.outcome(isinstance(self.error, UpstreamError) and self.status == 0, time_now)
            if time_now - counters.last_logged >= FAILURE_LOG_INTERVAL:
                counters.last_logged = time_now
                log.warning("mirrored request failed", mirror=f"{self.address[0]}:{self.address[1]}",
                            status=self.status or (self.error.status if self.error is not None else 0),
                            error=str(self.error) if self.error is not None else None,
                            failures=counters.failures)
        elif counters.errors_in_row:
            counters.outcome(False, 0.0)
