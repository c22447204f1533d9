"""Mesh TLS counters: connections by peer identity and failed handshakes, per direction.

Counted per connection, never per request. Identity labels are bounded: past
``limit`` distinct names (MESHPROXY_PEER_LABEL_LIMIT), new ones are counted
under ``other``.
"""

from __future__ import annotations

from proxy.telemetry.metrics import label_set

OTHER = "other"


class TlsStats:
    def __init__(self, direction: str, limit: int = 1000) -> None:
        self.direction = direction
        self.limit = limit
        # Inbound: the client's identity ("" when it sent no certificate);
        # outbound: the server identity discovery expected and TLS verified.
        self.peers: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.resumed = 0  # of those connections, how many resumed an earlier session (no certificates exchanged)

    def connected(self, peer: str | None, resumed: bool = False) -> None:
        if resumed:
            self.resumed += 1
        key = peer or ""
        if key not in self.peers and len(self.peers) >= self.limit:
            key = OTHER
        self.peers[key] = self.peers.get(key, 0) + 1

    def failed(self, reason: str) -> None:
        if reason not in self.failures and len(self.failures) >= self.limit:
            reason = OTHER
        self.failures[reason] = self.failures.get(reason, 0) + 1


def render(out: list[str], stats: list[TlsStats]) -> None:
    out.append("# HELP tls_connections_total Mesh TLS connections established, by peer identity.")
    out.append("# TYPE tls_connections_total counter")
    for s in stats:
        label = "client_id" if s.direction == "inbound" else "server_id"
        for peer, n in sorted(s.peers.items()):
            labels = label_set((("direction", s.direction), ("tls", "true"), (label, peer)))
            out.append(f"tls_connections_total{labels} {n}")
    out.append("# HELP tls_session_resumed_total Mesh TLS connections that resumed an earlier session.")
    out.append("# TYPE tls_session_resumed_total counter")
    for s in stats:
        out.append(f"tls_session_resumed_total{label_set((('direction', s.direction),))} {s.resumed}")
    out.append("# HELP tls_handshake_errors_total Mesh TLS handshakes that failed, by reason.")
    out.append("# TYPE tls_handshake_errors_total counter")
    for s in stats:
        for reason, n in sorted(s.failures.items()):
            out.append(f"tls_handshake_errors_total{label_set((('direction', s.direction), ('reason', reason)))} {n}")

