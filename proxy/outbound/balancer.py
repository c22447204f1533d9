"""Outbound endpoint balancing: PeakEWMA load, power-of-two-choices picks, failure accrual.

Sans-IO: nothing here reads a clock or touches a loop. Every method that needs
time takes ``now_ns`` (monotonic nanoseconds) from the caller, and randomness
comes from a seeded splitmix64 generator held by the balancer, so a balancer
given the same seed and the same calls makes the same picks, compiled or not.
Types live in balancer.pxd.

Load (PeakEWMA). An endpoint's latency estimate ``rtt_ns`` is peak-sensitive:
an observation above the estimate replaces it at once; one below it is blended
in with the weight of history ``w = exp(-elapsed / decay)``, ``elapsed`` being
the time since the previous observation. Between observations the estimate
offered to the balancer decays toward zero by the same ``w`` (as if a
zero-latency answer had arrived), so an endpoint that stopped getting traffic
because it was slow is tried again; this read never stores anything. A new
endpoint starts at ``default_rtt_ns`` when nothing has been measured yet; when
its peers have answered, it starts at the mean of their current estimates
(never above the default) instead, and an endpoint still unmeasured when a
peer's first answer arrives is brought down to that mean too. So a pod added
to a fast service, or one of several started together, gets its share at once
rather than after the default decays (tower's PeakEWMA keeps an unmeasured
endpoint at 30 ms, which starves it for about half a minute next to 1 ms
peers). The starting value decays like any estimate from the first pick()
after its arrival (update() and add() take no clock); being a guess, not a
measurement, it is replaced outright by the first observation.

Weighted P2C. An endpoint of weight ``w`` counts as ``w / u`` replicas of the
lightest pickable one (``u`` = smallest pickable weight), sharing its latency.
Two distinct replicas are drawn, the first with probability proportional to
weight, the second likewise with the first endpoint's weight less one replica.
Two replicas of one endpoint pick it; otherwise the lower ``load`` wins, a tie
going to the first drawn. ``load = estimate * (pending / weight + 1)``, the cost
of one more request on one replica. Equal weights make this classic P2C
(uniform, two distinct endpoints, ``estimate * (pending + 1)``). Unequal
weights with equal latency give picks proportional to weight: exactly when
loads tie (the draw alone yields ``w_i / W``), and once requests overlap
because P2C evens out ``pending / weight``. With one request at a time the
estimate of the more-sampled endpoint sits nearer its peak, which pulls 2:1
toward about 58:42. Uniform candidates compared by ``load / weight`` instead
send nearly every lone request to the heavier endpoint (about 98:2 for 2:1).

Failure accrual. ``failure_threshold`` consecutive failures on a READY
endpoint, or a failed probe, eject it for a backoff that starts at
``min_backoff_ns`` and doubles per ejection (capped at ``max_backoff_ns``)
until a probe succeeds; the ejection lasts a time drawn uniformly from
``(backoff * (1 - jitter), backoff]``, so it never exceeds the cap. Once it has
passed, ``pick`` moves the endpoint to PROBING and lets one request through;
the next answer (the caller cannot say which request it belongs to, and any
answer after the ejection is fresh evidence) restores it or ejects it again.
Answers that arrive while an endpoint is EJECTED, or PROBING with no probe
out, were sent before the ejection and teach nothing. A request that ends
with no answer at all (the client went away) goes to cancel(), not complete().
"""

import array

import cython
from cython.cimports.libc.math import exp

# Endpoint states (public) and their C twins (compared in the loops).
READY = 0
EJECTED = 1
PROBING = 2
REMOVED = 3
STATE_NAMES = ("READY", "EJECTED", "PROBING", "REMOVED")

_READY = 0
_EJECTED = 1
_PROBING = 2
_REMOVED = 3

# Every allowed state change; anything else is a bug in this module.
# REMOVED is final: a key that comes back gets a new Endpoint.
TRANSITIONS = (
    (READY, EJECTED, "consecutive failures reached failure_threshold"),
    (READY, REMOVED, "dropped by update() or remove()"),
    (EJECTED, PROBING, "backoff elapsed; seen by pick()"),
    (EJECTED, REMOVED, "dropped by update() or remove()"),
    (PROBING, READY, "the probe succeeded"),
    (PROBING, EJECTED, "the probe failed"),
    (PROBING, REMOVED, "dropped by update() or remove()"),
)


def _transition_mask(table):
    mask = 0
    for old, new, _why in table:
        mask |= 1 << (old * 4 + new)
    return mask


_ALLOWED = _transition_mask(TRANSITIONS)

# Linkerd's defaults (see proxy.config): 30 ms first guess, 10 s decay,
# 7 failures, ejections from 1 s to 60 s.
DEFAULT_RTT_NS = 30_000_000
DEFAULT_DECAY_NS = 10_000_000_000

_NEVER = 0x7FFFFFFFFFFFFFFF
# splitmix64 constants; pure Python masks to 64 bits, C wraps by itself.
_MASK64 = 0xFFFFFFFFFFFFFFFF
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_UNIT = 1.0 / 9007199254740992.0  # 2**-53: 53 random bits -> [0, 1)


def _check_weight(weight):
    w = float(weight)
    # Written so NaN fails too.
    if not (0.0 < w < float("inf")):
        raise ValueError(f"endpoint weight must be finite and > 0, got {weight!r}")
    return w


class Endpoint:
    """One address the balancer may send a request to, with its load and health."""

    def __init__(self, key, weight=1.0, target=None):
        self.key = key
        self.weight = _check_weight(weight)
        self.target = target
        self.handle = None  # the caller's own object for this member (balance.py: its Target), kept here
        self.pending = 0
        self.rtt_ns = float(DEFAULT_RTT_NS)
        self.last_ns = -1  # time of the last observation; until the first, when the default was set
        self.state = _READY
        self.consecutive_failures = 0
        self.backoff_ns = 0  # backoff of the latest ejection; 0 = none since the last good probe
        self.eject_until_ns = 0
        self.removed = False
        self.probe_inflight = False
        self._decay_ns = float(DEFAULT_DECAY_NS)
        self._observed = False
        self._slot = -1  # index in the balancer's pickable list, -1 when not pickable

    def load(self, now_ns):
        """Decayed estimate * (pending / weight + 1): what P2C compares."""
        return self._estimate(now_ns) * (self.pending / self.weight + 1.0)

    def _estimate(self, now_ns):
        if self.last_ns < 0:
            return self.rtt_ns
        elapsed = now_ns - self.last_ns
        if elapsed <= 0:
            return self.rtt_ns
        return self.rtt_ns * exp(-elapsed / self._decay_ns)

    def _observe(self, now_ns, rtt_ns):
        if not self._observed:
            self._observed = True
            self.rtt_ns = rtt_ns
        elif rtt_ns > self.rtt_ns:
            self.rtt_ns = rtt_ns
        else:
            elapsed = now_ns - self.last_ns
            if elapsed < 0:
                elapsed = 0
            w = exp(-elapsed / self._decay_ns)
            self.rtt_ns = self.rtt_ns * w + rtt_ns * (1.0 - w)
        if now_ns > self.last_ns:
            self.last_ns = now_ns

    def __repr__(self):
        return (
            f"Endpoint({self.key!r}, weight={self.weight}, state={STATE_NAMES[self.state]}, "
            f"pending={self.pending}, rtt_ms={self.rtt_ns / 1e6:.3f})"
        )


class Balancer:
    """A set of endpoints, picked by weighted P2C over PeakEWMA load, with failure accrual."""

    def __init__(
        self,
        default_rtt_ns=DEFAULT_RTT_NS,
        decay_ns=DEFAULT_DECAY_NS,
        failure_threshold=7,
        min_backoff_ns=1_000_000_000,
        max_backoff_ns=60_000_000_000,
        jitter=0.5,
        seed=0,
    ):
        if not default_rtt_ns >= 0:
            raise ValueError(f"default_rtt_ns must be >= 0, got {default_rtt_ns!r}")
        if not decay_ns > 0:
            raise ValueError(f"decay_ns must be > 0, got {decay_ns!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {jitter!r}")
        self.default_rtt_ns = float(default_rtt_ns)
        self.decay_ns = float(decay_ns)
        self.set_accrual(failure_threshold, min_backoff_ns, max_backoff_ns)
        self.jitter = float(jitter)
        self.seed = seed
        self.ready_count = 0
        self.size = 0
        self._by_key = {}
        self._endpoints = []  # not removed, in order of arrival
        self._pickable = []  # READY, or PROBING with no probe out; order is swap-remove order
        self._cum = memoryview(array.array("d"))
        self._total = 0.0
        self._unit = 0.0
        self._uniform = True
        self._dirty = True
        self._next_due_ns = _NEVER
        self._unstamped = False
        self._rng = seed & _MASK64

    # ------------------------------------------------------------ membership

    def set_accrual(self, failure_threshold, min_backoff_ns, max_backoff_ns):
        """Failure-accrual parameters; a change applies from the next failure or ejection on."""
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if not 0 < min_backoff_ns <= max_backoff_ns:
            raise ValueError(
                f"need 0 < min_backoff_ns <= max_backoff_ns, got {min_backoff_ns!r}, {max_backoff_ns!r}"
            )
        self.failure_threshold = failure_threshold
        self.min_backoff_ns = min_backoff_ns
        self.max_backoff_ns = max_backoff_ns

    def update(self, endpoints):
        """Replace the set with (key, weight, target) triples: (added, removed, changed) keys.

        Validates everything before changing anything; a repeated key takes its
        last triple. Kept endpoints keep their estimate, pending count and health.
        """
        wanted = {}
        for key, weight, target in endpoints:
            wanted[key] = (_check_weight(weight), target)
        added = []
        removed = []
        changed = []
        for ep in self._endpoints:
            if ep.key not in wanted:
                removed.append(ep.key)
                self._drop(ep)
        if removed:
            self._endpoints = [ep for ep in self._endpoints if not ep.removed]
        for key, (weight, target) in wanted.items():
            ep = self._by_key.get(key)
            if ep is None:
                self._add(key, weight, target)
                added.append(key)
            elif self._change(ep, weight, target):
                changed.append(key)
        return added, removed, changed

    def add(self, key, weight=1.0, target=None):
        """Add an endpoint, or update the weight and target of the one with this key."""
        w = _check_weight(weight)
        ep = self._by_key.get(key)
        if ep is None:
            return self._add(key, w, target)
        self._change(ep, w, target)
        return ep

    def remove(self, key):
        """Remove an endpoint: never picked again; its requests in flight may still complete."""
        ep = self._by_key.get(key)
        if ep is None:
            return None
        self._drop(ep)
        self._endpoints.remove(ep)
        return ep

    def endpoints(self):
        """The endpoints not removed, in order of arrival."""
        return list(self._endpoints)

    def get(self, key):
        return self._by_key.get(key)

    def _add(self, key, weight, target):
        ep = Endpoint(key, weight, target)
        ep.rtt_ns = self.default_rtt_ns
        ep._decay_ns = self.decay_ns
        self._by_key[key] = ep
        self._endpoints.append(ep)
        self.size += 1
        self.ready_count += 1
        self._unstamped = True
        self._sync(ep)
        return ep

    def _change(self, ep, weight, target):
        changed = False
        if weight != ep.weight:
            ep.weight = weight
            if ep._slot >= 0:
                self._dirty = True
            changed = True
        if target != ep.target:
            ep.target = target
            changed = True
        return changed

    def _drop(self, ep):
        # The caller takes ep out of self._endpoints (one pass for a whole update).
        del self._by_key[ep.key]
        self._set_state(ep, _REMOVED)
        ep.removed = True
        ep.probe_inflight = False
        self.size -= 1
        self._sync(ep)
        return 0

    # ------------------------------------------------------------ states

    def _set_state(self, ep, new):
        old = ep.state
        if not (_ALLOWED >> (old * 4 + new)) & 1:
            raise RuntimeError(f"balancer bug: {STATE_NAMES[old]} -> {STATE_NAMES[new]} for {ep.key!r}")
        if old == _READY:
            self.ready_count -= 1
        if new == _READY:
            self.ready_count += 1
        ep.state = new
        return 0

    def _sync(self, ep):
        # Keep ep in self._pickable exactly when pick() may return it.
        want = ep.state == _READY or (ep.state == _PROBING and not ep.probe_inflight)
        if want and ep._slot < 0:
            ep._slot = len(self._pickable)
            self._pickable.append(ep)
            self._dirty = True
        elif not want and ep._slot >= 0:
            last = self._pickable[len(self._pickable) - 1]
            self._pickable[ep._slot] = last
            last._slot = ep._slot
            self._pickable.pop()
            ep._slot = -1
            self._dirty = True
        return 0

    def _eject(self, ep, now_ns):
        if ep.backoff_ns == 0:
            backoff = self.min_backoff_ns
        else:
            backoff = ep.backoff_ns * 2
            if backoff > self.max_backoff_ns:
                backoff = self.max_backoff_ns
        ep.backoff_ns = backoff
        ep.eject_until_ns = now_ns + cython.cast(
            cython.longlong, backoff * (1.0 - self.jitter * self._uniform01())
        )
        ep.probe_inflight = False
        self._set_state(ep, _EJECTED)
        self._sync(ep)
        if ep.eject_until_ns < self._next_due_ns:
            self._next_due_ns = ep.eject_until_ns
        return 0

    def _promote_due(self, now_ns):
        # Rare: runs only once the earliest ejection may have passed.
        due = _NEVER
        for ep in self._endpoints:
            if ep.state == _EJECTED:
                if ep.eject_until_ns <= now_ns:
                    self._set_state(ep, _PROBING)
                    self._sync(ep)
                elif ep.eject_until_ns < due:
                    due = ep.eject_until_ns
        self._next_due_ns = due
        return 0

    def next_ready_ns(self, now_ns):
        """When the first ejected endpoint may be probed (never before now_ns), or -1 if none is ejected.

        After pick() returned None with -1 here, only a completion or a new
        endpoint can make one pickable.
        """
        due = _NEVER
        for ep in self._endpoints:
            if ep.state == _EJECTED and ep.eject_until_ns < due:
                due = ep.eject_until_ns
        if due == _NEVER:
            return -1
        return due if due > now_ns else now_ns

    # ------------------------------------------------------------ randomness

    def _next(self):
        # splitmix64 (Steele, Lea, Flood 2014).
        self._rng = (self._rng + _GOLDEN) & _MASK64
        z = self._rng
        z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
        z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
        return z ^ (z >> 31)

    def _below(self, n):
        # Multiply-shift onto [0, n); bias below n / 2**32, nothing for our sizes.
        return ((self._next() >> 32) * n) >> 32

    def _uniform01(self):
        return (self._next() >> 11) * _UNIT

    # ------------------------------------------------------------ picking

    def _refresh(self):
        # Cumulative weights of the pickable endpoints, their sum, the lightest.
        n = len(self._pickable)
        if self._cum.shape[0] < n:
            self._cum = memoryview(array.array("d", bytes(8 * (2 * n))))
        total = 0.0
        unit = 0.0
        uniform = True
        for k in range(n):
            ep = self._pickable[k]
            w = ep.weight
            if k == 0:
                unit = w
            elif w != unit:
                uniform = False
                if w < unit:
                    unit = w
            total += w
            self._cum[k] = total
        self._total = total
        self._unit = unit
        self._uniform = uniform
        self._dirty = False
        return 0

    def _search(self, r, n):
        # First k with cum[k] > r; n - 1 if rounding put r past the end.
        lo = 0
        hi = n - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._cum[mid] > r:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _peer_start(self, now_ns):
        """What an unmeasured endpoint should be estimated at: its measured peers' mean, capped by the default."""
        total = 0.0
        observed = 0
        for ep in self._endpoints:
            if ep._observed and ep.state == _READY:
                total += ep._estimate(now_ns)
                observed += 1
        if observed > 0 and total / observed < self.default_rtt_ns:
            return total / observed
        return self.default_rtt_ns

    def _stamp(self, now_ns):
        # New endpoints start from what their measured peers show now, and
        # their estimates start decaying now.
        start = self._peer_start(now_ns)
        for ep in self._endpoints:
            if ep.last_ns < 0:
                ep.last_ns = now_ns
                if not ep._observed:
                    ep.rtt_ns = start
        self._unstamped = False
        return 0

    def _reseed(self, now_ns):
        # A first measurement arrived: unmeasured peers should not keep
        # competing with a guess far above what the service really shows.
        start = self._peer_start(now_ns)
        for ep in self._endpoints:
            if not ep._observed and ep.last_ns >= 0 and ep._estimate(now_ns) > start:
                ep.rtt_ns = start
                ep.last_ns = now_ns
        return 0

    def pick(self, now_ns):
        """Weighted P2C over pickable endpoints; pending += 1 on the result. None if none is pickable."""
        if self._unstamped:
            self._stamp(now_ns)
        if now_ns >= self._next_due_ns:
            self._promote_due(now_ns)
        n = len(self._pickable)
        if n == 0:
            return None
        if n == 1:
            a = self._pickable[0]
        else:
            if self._dirty:
                self._refresh()
            if self._uniform:
                i = self._below(n)
                j = self._below(n - 1)
                if j >= i:
                    j += 1
            else:
                i = self._search(self._uniform01() * self._total, n)
                # Second replica: the first endpoint counts one replica less.
                start = self._cum[i - 1] if i > 0 else 0.0
                own = self._pickable[i]
                r = self._uniform01() * (self._total - self._unit)
                if r < start:
                    j = self._search(r, n)
                elif r < start + (own.weight - self._unit):
                    j = i
                else:
                    j = self._search(r + self._unit, n)
            a = self._pickable[i]
            if j != i:
                b = self._pickable[j]
                if b.load(now_ns) < a.load(now_ns):
                    a = b
        a.pending += 1
        if a.state == _PROBING:
            a.probe_inflight = True
            self._sync(a)
        return a

    def complete(self, ep, now_ns, rtt_ns, success):
        """Account one finished request on ep (from pick()): pending, PeakEWMA, failure accrual."""
        if ep is None:
            raise TypeError("complete() needs the Endpoint returned by pick()")
        if ep.pending <= 0:
            raise ValueError(f"complete() without a pick() in flight on {ep.key!r}")
        rtt = float(rtt_ns)
        if not rtt >= 0.0:
            raise ValueError(f"rtt_ns must be >= 0, got {rtt_ns!r}")
        ep.pending -= 1
        first = not ep._observed
        ep._observe(now_ns, rtt)
        if first:
            self._reseed(now_ns)
        if ep.state == _READY:
            if success:
                ep.consecutive_failures = 0
            else:
                ep.consecutive_failures += 1
                if ep.consecutive_failures >= self.failure_threshold:
                    self._eject(ep, now_ns)
        elif ep.state == _PROBING and ep.probe_inflight:
            ep.probe_inflight = False
            if success:
                ep.consecutive_failures = 0
                ep.backoff_ns = 0
                self._set_state(ep, _READY)
                self._sync(ep)
            else:
                ep.consecutive_failures += 1
                self._eject(ep, now_ns)

    def cancel(self, ep):
        """Account a request on ep that ended without an answer (the client went away): pending only.

        Nothing is learned for the estimate or for accrual. A probe is known to
        be gone only when nothing is left in flight; then another may be sent.
        """
        if ep is None:
            raise TypeError("cancel() needs the Endpoint returned by pick()")
        if ep.pending <= 0:
            raise ValueError(f"cancel() without a pick() in flight on {ep.key!r}")
        ep.pending -= 1
        if ep.pending == 0 and ep.probe_inflight:
            ep.probe_inflight = False
            self._sync(ep)
