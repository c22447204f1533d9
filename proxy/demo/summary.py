"""The golden-metrics table the demo prints: one row per service, read from
the inbound side of that service's proxy (what its callers experienced); and
the edges: who called each service, with which identity, over mutual TLS or not."""

from __future__ import annotations

from proxy.demo.metrics import DirectionStats
from proxy.viz.edges import CHECK, inbound_edges

Snapshot = dict[str, dict[str, DirectionStats] | None]  # service -> direction -> stats; None: no metrics

COLUMNS = (f"{'SERVICE':<8} {'MESHED':<6} {'SUCCESS':>8} {'RPS':>7} {'P50':>8} {'P95':>8} {'P99':>8} {'TLS':>5}")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}ms" if value < 10 else f"{value:.0f}ms"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def format_table(snapshot: Snapshot, earlier: Snapshot | None, seconds: float) -> str:
    """One row per service over the window since ``earlier``, or the totals
    when ``earlier`` is None. MESHED: the service's proxy answered on its admin
    port. TLS: the share of inbound requests (or connections, when requests
    carry no tls label) that were mutual TLS; over the window when the window
    saw any, else since the start (connections are long-lived)."""
    rows = [COLUMNS]
    for service, directions in snapshot.items():
        if directions is None:
            rows.append(f"{service:<8} {'no':<6} (metrics unavailable)")
            continue
        total = directions.get("inbound", DirectionStats())
        before = ((earlier or {}).get(service) or {}).get("inbound")
        stats = total.minus(before)
        rate = stats.success_rate()
        tls = stats.tls_share() if stats.tls_of > 0 else total.tls_share()
        rows.append(
            f"{service:<8} {'yes':<6} {'-' if rate is None else f'{rate:.2%}':>8}"
            f" {stats.requests / seconds if seconds > 0 else 0.0:>7.1f} {_ms(stats.quantile(0.5)):>8}"
            f" {_ms(stats.quantile(0.95)):>8} {_ms(stats.quantile(0.99)):>8} {_share(tls):>5}"
        )
    return "\n".join(rows)


def format_edges(snapshot: Snapshot) -> str:
    """One row per (caller identity, service) pair seen by the service's inbound
    proxy, as ``linkerd viz edges`` shows them (the edges themselves are
    ``meshproxy viz``'s, from the same counters): SRC is the identity the
    caller's proxy proved (``-`` without one), SECURED is a check mark for
    mutual TLS, else the proxy's ``no_tls_reason``."""
    found = [edge for service, directions in snapshot.items() if directions
             for edge in inbound_edges(service, directions.get("inbound", DirectionStats()).callers.items())
             if edge.requests > 0]
    width = max([len("SRC")] + [len(edge.client_id) for edge in found])
    rows = [f"{'SRC':<{width}} {'DST':<8} {'REQUESTS':>8} SECURED"]
    for edge in sorted(found, key=lambda e: (e.dst, e.client_id, e.no_tls_reason)):
        secured = CHECK if edge.secured else f"no ({edge.no_tls_reason})"
        rows.append(f"{edge.client_id or '-':<{width}} {edge.dst:<8} {edge.requests:>8.0f} {secured}")
    return "\n".join(rows)
