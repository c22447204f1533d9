"""The inbound listener's remembered HTTP connection authorizations (``ConnGrants``, proxy/inbound/authz.py):
one lookup per client, never shared between clients judged apart, bounded, and emptied by a policy change."""

from __future__ import annotations

from proxy import config
from proxy.core.addr import ConnMeta
from proxy.inbound.authz import ConnGrants, InboundAuthorizer
from proxy.policy.parse import parse
from proxy.protocol.http1 import parse_request_head
from proxy.telemetry.labels import LabelSets

PORT = 8080
SHOP = "web.shop.serviceaccount.identity.cluster.local"
HEAD = parse_request_head(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n", 65536)


def _server(cidr: str) -> str:
    """A Server on PORT and an authorization admitting plaintext clients of ``cidr`` and meshed ones."""
    return f"""apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {{name: app, namespace: shop}}
spec:
  podSelector: {{}}
  port: {PORT}
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {{name: callers, namespace: shop}}
spec:
  server: {{name: app}}
  client:
    unauthenticated: true
    networks: [{{cidr: {cidr}}}]
"""


def _grants(limit: int = 1024, policy: str | None = _server("10.0.0.1/32")) -> tuple[ConnGrants, InboundAuthorizer]:
    settings = config.load({config.INBOUND_AUTHZ_CACHE: str(limit), config.DEFAULT_POLICY: "deny"}).policy
    assert settings.authz_cache == limit
    authorizer = InboundAuthorizer(settings, has_identity=True)
    if policy is not None:
        authorizer.update(parse(policy).authz)
    labels = LabelSets("inbound", 1000, True)
    return ConnGrants(authorizer, labels.tcp_src, settings.authz_cache), authorizer


def _meta(ip: str, client_port: int = 40000, tls: bool = False, client_id: str | None = None) -> ConnMeta:
    return ConnMeta("inbound", (ip, client_port), ("10.0.0.9", 4143), ("10.0.0.9", PORT), tls=tls,
                    client_id=client_id)


def _allowed(meta: ConnMeta) -> bool:
    return meta.authz.check_h1(HEAD) is None  # type: ignore[attr-defined]


def test_a_clients_next_connection_finds_its_authorization_and_label_set():
    grants, authorizer = _grants()
    first, tcp = grants.http(_meta("10.0.0.1", 40000), PORT)
    again, tcp_again = grants.http(_meta("10.0.0.1", 40001), PORT)
    assert again.authz is first.authz and tcp_again is tcp
    assert again.stats_cache is first.stats_cache  # the requests' label sets by Host, found once too
    assert again is not first and again.client == ("10.0.0.1", 40001)  # the connection's own metadata
    assert tcp.labels == LabelSets("inbound", 1000, True).tcp_src(first).labels
    # Every request is counted, as with an authorization per connection.
    for meta in (first, again, first):
        assert _allowed(meta)
    allow = [cell[0] for labels, cell in authorizer.http_allow.items() if ("authz_name", "callers") in labels]
    assert allow == [3]


def test_clients_judged_apart_never_share_a_decision():
    grants, authorizer = _grants()
    plain_in, _ = grants.http(_meta("10.0.0.1"), PORT)
    plain_out, _ = grants.http(_meta("10.0.0.2"), PORT)
    meshed, _ = grants.http(_meta("10.0.0.2", tls=True, client_id=SHOP), PORT)
    tls_no_id, _ = grants.http(_meta("10.0.0.2", tls=True), PORT)
    other_port, _ = grants.http(_meta("10.0.0.1"), PORT + 1)  # no Server there: the default policy (deny)
    found = [m.authz for m in (plain_in, plain_out, meshed, tls_no_id, other_port)]
    assert len({id(a) for a in found}) == 5
    assert len({id(m.stats_cache) for m in (plain_in, plain_out, meshed, tls_no_id, other_port)}) == 5
    assert [_allowed(m) for m in (plain_in, plain_out, meshed, tls_no_id, other_port)] == \
        [True, False, False, False, False]
    # The same answers again, from the cache, in another order.
    again = [grants.http(m, p)[0] for m, p in ((_meta("10.0.0.2", tls=True, client_id=SHOP), PORT),
                                                (_meta("10.0.0.2"), PORT), (_meta("10.0.0.1"), PORT))]
    assert [_allowed(m) for m in again] == [False, False, True]


def test_a_policy_change_applies_to_remembered_and_new_connections():
    grants, authorizer = _grants()
    before, _ = grants.http(_meta("10.0.0.1"), PORT)
    assert _allowed(before)
    authorizer.update(parse(_server("10.0.0.2/32")).authz)
    assert not grants.found or grants.generation != authorizer.generation
    after, _ = grants.http(_meta("10.0.0.1"), PORT)
    assert after.authz is not before.authz
    assert not _allowed(after)
    assert not _allowed(before)  # an open connection's next request is judged by the new policy too
    assert _allowed(grants.http(_meta("10.0.0.2"), PORT)[0])
    assert len(grants.found) == 2


def test_the_cache_is_bounded():
    grants, _ = _grants(limit=3)
    for i in range(20):
        meta, _ = grants.http(_meta(f"10.0.1.{i}"), PORT)
        assert not _allowed(meta)
        assert 1 <= len(grants.found) <= 3
    meta, _ = grants.http(_meta("10.0.0.1"), PORT)
    assert _allowed(meta)
