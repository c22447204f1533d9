"""The proxies' /metrics read back: Prometheus text to samples, samples to
per-direction counters, and histogram percentiles. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.telemetry.scrape import Sample, parse_prometheus
from proxy.viz.promql import histogram_quantile  # one implementation, shared with meshproxy viz

__all__ = ["DirectionStats", "Sample", "histogram_quantile", "parse_prometheus", "summarize"]


@dataclass(slots=True)
class DirectionStats:
    """One proxy direction's counters: requests, answers, latency histogram,
    and how much of it was mutual TLS (``tls`` of ``tls_of``)."""

    requests: float = 0.0
    success: float = 0.0
    failure: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    tls: float = 0.0  # requests (or connections, below) that were mTLS
    tls_of: float = 0.0  # ... out of this many
    tls_unit: str = "connections"  # "requests" when request_total carries a tls label
    # Inbound requests per caller: (client identity, or "" without one; no_tls_reason, or "") -> count.
    callers: dict[tuple[str, str], float] = field(default_factory=dict)

    def minus(self, earlier: DirectionStats | None) -> DirectionStats:
        """The counts since ``earlier`` (a window between two scrapes)."""
        if earlier is None:
            return self
        return DirectionStats(
            self.requests - earlier.requests, self.success - earlier.success, self.failure - earlier.failure,
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.tls - earlier.tls, self.tls_of - earlier.tls_of, self.tls_unit,
            {key: n - earlier.callers.get(key, 0.0) for key, n in self.callers.items()},
        )

    def success_rate(self) -> float | None:
        answered = self.success + self.failure
        return self.success / answered if answered > 0 else None

    def tls_share(self) -> float | None:
        return self.tls / self.tls_of if self.tls_of > 0 else None

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets.items())


def summarize(samples: Iterable[Sample]) -> dict[str, DirectionStats]:
    """Per direction, summed over every other label (and, inbound, per caller identity).

    The TLS share counts requests when ``request_total`` has a ``tls`` label,
    else accepted connections (``tcp_open_total``, ``peer="src"`` when the
    proxy labels peers); a series is mTLS when its ``tls`` label is "true".
    A proxy that counts mTLS connections in a series of their own
    (``tls_connections_total{tls="true"}``) has its share taken against all
    accepted connections.
    """
    out: dict[str, DirectionStats] = {}
    by_request: dict[str, list[float]] = {}
    by_connection: dict[str, list[float]] = {}
    tls_connections: dict[str, float] = {}
    for name, labels, value in samples:
        direction = labels.get("direction")
        if direction is None:
            continue
        stats = out.setdefault(direction, DirectionStats())
        if name == "request_total":
            stats.requests += value
            if direction == "inbound":
                caller = (labels.get("client_id", ""), labels.get("no_tls_reason", ""))
                stats.callers[caller] = stats.callers.get(caller, 0.0) + value
            if "tls" in labels:
                counts = by_request.setdefault(direction, [0.0, 0.0])
                counts[0] += value if labels["tls"] == "true" else 0.0
                counts[1] += value
        elif name == "response_total":
            klass = labels.get("classification")
            ok = klass == "success" if klass else not labels.get("status_code", "").startswith("5")
            if ok:
                stats.success += value
            else:
                stats.failure += value
        elif name == "response_latency_ms_bucket" and "le" in labels:
            le = float(labels["le"])  # float() reads "+Inf"
            stats.buckets[le] = stats.buckets.get(le, 0.0) + value
        elif name == "tcp_open_total" and labels.get("peer", "src") == "src":
            counts = by_connection.setdefault(direction, [0.0, 0.0])
            counts[0] += value if labels.get("tls") == "true" else 0.0
            counts[1] += value
        elif name == "tls_connections_total" and labels.get("tls", "true") == "true":
            tls_connections[direction] = tls_connections.get(direction, 0.0) + value
    for direction, stats in out.items():
        if direction in by_request:
            stats.tls, stats.tls_of = by_request[direction]
            stats.tls_unit = "requests"
        elif direction in by_connection:
            stats.tls, stats.tls_of = by_connection[direction]
            if direction in tls_connections:
                stats.tls = min(tls_connections[direction], stats.tls_of)
    return out
