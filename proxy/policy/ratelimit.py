"""Inbound HTTP rate limits, sans-IO: Linkerd's HTTPLocalRateLimitPolicy as GCRA buckets (time passed in).

Each limit is a GCRA (generic cell rate algorithm) with a burst equal to its
rate, as Linkerd's limiter (``governor``'s ``Quota::per_second``): a bucket
is one float, its theoretical arrival time ``tat``; a request at ``now`` is
admitted when ``max(tat, now) + 1/rate - now <= 1`` second's worth of cells.

``LocalRateLimit.check`` applies Linkerd's order: the ``total`` limit first,
then, for a client named by an override, that override's bucket only
(every identity of one override entry shares it), otherwise the client's
per-identity bucket; every client without a verified identity shares one.
Per-identity buckets are bounded in number (``max_keys``,
``MESHPROXY_INBOUND_RATELIMIT_IDENTITIES``): a bucket whose ``tat`` has
passed is indistinguishable from a new one and is dropped first; past the
bound the least recently used goes (that client starts with a full burst).
"""

import cython

# check() results: the scope that refused the request (0: admitted). Linkerd's
# ``ratelimit_scope`` label says ``total`` or ``identity`` (overrides are per identity).
ADMITTED = 0
TOTAL = 1
IDENTITY = 2
OVERRIDE = 3
SCOPES = ("", "total", "identity", "identity")
KINDS = ("", "total", "per-identity", "override")

# Stands for every client without a verified identity (they share one bucket).
_UNIDENTIFIED = ""


class Gcra:
    """One bucket: ``rate`` requests per second, a burst of ``rate``."""

    def __init__(self, rate):
        if not rate > 0:
            raise ValueError("a rate limit must be positive")
        self.rate = rate
        self.interval = 1.0 / rate
        self.window = 1.0  # burst (rate) * interval
        self.tat = 0.0

    def admit(self, now):
        return _admit(self, now)


def _admit(bucket: Gcra, now: cython.double) -> cython.bint:
    tat: cython.double = bucket.tat
    if tat < now:
        tat = now
    tat += bucket.interval
    if tat - now > bucket.window + 1e-9:  # float slack: exactly `rate` fit in a burst
        return False
    bucket.tat = tat
    return True


class KeyedGcra:
    """A bucket per key (client identity), the least recently used first in ``buckets``."""

    def __init__(self, rate, max_keys):
        if not rate > 0 or max_keys < 1:
            raise ValueError("a rate limit must be positive and keep at least one key")
        self.rate = rate
        self.interval = 1.0 / rate
        self.max_keys = max_keys
        self.buckets = {}
        self.evicted = 0

    def admit(self, key, now):
        buckets: dict = self.buckets
        tat: cython.double
        found = buckets.pop(key, None)
        if found is None:
            if len(buckets) >= self.max_keys:
                self._make_room(now)
            tat = now
        else:
            tat = found
            if tat < now:
                tat = now
        interval: cython.double = self.interval
        if tat + interval - now > 1.0 + 1e-9:
            buckets[key] = tat  # re-inserted last: recently used, even when refused
            return False
        buckets[key] = tat + interval
        return True

    def _make_room(self, now: cython.double):
        buckets: dict = self.buckets
        idle = [key for key, tat in buckets.items() if tat <= now]
        if idle:
            for key in idle:
                del buckets[key]
            return
        del buckets[next(iter(buckets))]
        self.evicted += 1


class LocalRateLimit:
    """The compiled limits of one Server (authz_model.RateLimit): ``check(identity, now)``."""

    def __init__(self, spec, max_keys):
        self.spec = spec
        self.total = Gcra(spec.total) if spec.total else None
        self.identity = KeyedGcra(spec.identity, max_keys) if spec.identity else None
        overrides = {}
        for rate, identities in spec.overrides:
            shared = Gcra(rate)
            for name in identities:
                overrides.setdefault(name, shared)
        self.overrides = overrides

    def check(self, identity, now):
        """``ADMITTED`` or the scope that refused (``TOTAL``, ``OVERRIDE``, ``IDENTITY``); ``identity``
        is the client's verified mesh identity or None."""
        t: cython.double = now
        if self.total is not None and not _admit(self.total, t):
            return TOTAL
        if identity is not None:
            override = self.overrides.get(identity)
            if override is not None:
                return ADMITTED if _admit(override, t) else OVERRIDE
        if self.identity is not None:
            keyed: KeyedGcra = self.identity
            if not keyed.admit(_UNIDENTIFIED if identity is None else identity, t):
                return IDENTITY
        return ADMITTED

    def rate_of(self, scope, identity):
        """The requests per second of the limit that refused (Linkerd names it in the error)."""
        if scope == TOTAL:
            return self.spec.total
        if scope == OVERRIDE:
            return self.overrides[identity].rate
        return self.spec.identity
