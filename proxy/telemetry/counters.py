"""Request and connection counters updated per request on the fast path.

prometheus_client's labelled counters cost a lock and a label lookup per
increment; these are plain C integers (compiled) bumped inline by the relay and
rendered to Prometheus text only when /metrics is scraped
(``proxy.telemetry.metrics``). ``benchmarks/`` measures the difference.
"""

import array

import cython

# Linkerd's latency buckets, in milliseconds.
LATENCY_BUCKETS_MS = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)
_NBUCKETS: cython.int = len(LATENCY_BUCKETS_MS)


def _zeros(n):
    return memoryview(array.array("q", bytes(8 * n))).cast("B").cast("q")


class HttpStats:
    """HTTP request/response counts and latency for one direction."""

    def __init__(self, direction):
        self.direction = direction
        self.requests = 0
        self.status_counts = _zeros(1000)
        self.failure_counts = _zeros(1000)
        self.latency_buckets = _zeros(_NBUCKETS + 1)
        self.bounds = memoryview(array.array("d", LATENCY_BUCKETS_MS))
        self.latency_sum_ms = 0.0
        self.latency_count = 0

    def record_response(self, status, latency_ms, failure):
        i: cython.int
        if status < 0 or status > 999:
            status = 0
        if failure:
            self.failure_counts[status] += 1
        else:
            self.status_counts[status] += 1
        # Linear scan: the common latencies hit the first few buckets.
        i = 0
        while i < _NBUCKETS and latency_ms > self.bounds[i]:
            i += 1
        self.latency_buckets[i] += 1
        self.latency_sum_ms += latency_ms
        self.latency_count += 1


class TcpStats:
    """Connection counts and bytes for one direction and peer (src or dst)."""

    def __init__(self, direction, peer):
        self.direction = direction
        self.peer = peer
        self.opened = 0
        self.closed = 0
        self.read_bytes = 0
        self.write_bytes = 0


class RouteStats:
    """Counts and latency of one (service, route) label pair, bumped by the relays per request.

    ``requests`` counts requests as the client sent them (a retried request is
    one request); ``retries`` counts the extra attempts. Responses are counted
    once per request, with the route's classification.
    """

    def __init__(self, dst, route):
        self.dst = dst
        self.route = route
        self.requests = 0
        self.retries = 0
        self.successes = 0
        self.failures = 0
        self.latency_buckets = _zeros(_NBUCKETS + 1)
        self.bounds = memoryview(array.array("d", LATENCY_BUCKETS_MS))
        self.latency_sum_ms = 0.0
        self.latency_count = 0

    def record(self, latency_ms, failure):
        i: cython.int
        if failure:
            self.failures += 1
        else:
            self.successes += 1
        i = 0
        while i < _NBUCKETS and latency_ms > self.bounds[i]:
            i += 1
        self.latency_buckets[i] += 1
        self.latency_sum_ms += latency_ms
        self.latency_count += 1
