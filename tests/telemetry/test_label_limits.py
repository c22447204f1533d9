"""MESHPROXY_PEER_LABEL_LIMIT bounds the label sets of the TLS-peer and inbound authorization counters."""

from __future__ import annotations

from proxy import config
from proxy.core.addr import ConnMeta
from proxy.inbound.authz import InboundAuthorizer
from proxy.policy.parse import parse
from proxy.telemetry import tls


def test_tls_peers_past_the_limit_count_as_other():
    stats = tls.TlsStats("inbound", limit=2)
    for peer in ("a", "b", "c", "d", "a"):
        stats.connected(peer)
    for reason in ("expired", "mismatch", "unknown ca"):
        stats.failed(reason)
    assert stats.peers == {"a": 2, "b": 1, "other": 2}
    assert stats.failures == {"expired": 1, "mismatch": 1, "other": 1}


class _Transport:
    def is_closing(self) -> bool:
        return False


def _servers(ports) -> str:
    """One opaque Server per port and no authorization: each refuses with its own label set."""
    return "---\n".join(f"""apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: srv-{port}, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  port: {port}
  proxyProtocol: opaque
""" for port in ports)


def test_authorization_label_sets_past_the_limit_count_as_other():
    settings = config.load({config.PEER_LABEL_LIMIT: "2"}).policy
    assert settings.peer_label_limit == 2
    authorizer = InboundAuthorizer(settings)
    ports = (8080, 8081, 8082, 8083)
    authorizer.update(parse(_servers(ports)).authz)
    meta = ConnMeta("inbound", ("10.0.0.9", 40000), ("10.0.0.1", 4143), None)
    for port in (*ports, 8080):
        assert not authorizer.tcp(meta, port, _Transport())
    out: list[str] = []
    authorizer.render(out)
    denied = [line for line in out if line.startswith("inbound_tcp_authz_deny_total")]
    assert len(denied) == 3, denied  # two servers, then "other"
    assert sum(int(line.rsplit(" ", 1)[1]) for line in denied) == 5
    assert any('overflow="other"' in line and line.endswith(" 2") for line in denied), denied
