"""Tests of proxy/telemetry/labels.py: which labels a target or connection gets, and the bound."""

from proxy.core.addr import ConnMeta, Target
from proxy.inbound.authz import client_of
from proxy.policy.authz import Decision, InboundPolicy
from proxy.telemetry.labels import LabelSets, dst_labels


class _Member:
    def __init__(self, key):
        self.key = key


class _Service:
    name = "web.shop.svc.cluster.local:80"

    def endpoint_labels(self, target):
        return (("pod", "web-1"), ("pod-template-hash", "abc"))


def _labels(stats) -> dict[str, str]:
    out = {}
    for pair in stats.labels.split('",'):
        k, _, v = pair.partition('="')
        out[k] = v.rstrip('"')
    return out


def test_outbound_meshed_endpoint_labels_are_found_once_and_kept_on_the_target():
    sets = LabelSets("outbound", 10, True)
    target = Target("127.0.0.1", 24143, mesh_port=8080, identity="web.shop.serviceaccount.identity.cluster.local",
                    service=_Service(), endpoint=_Member(("10.0.0.7", 8080)))
    stats = sets.outbound_http(target)
    assert target.stats is stats and sets.outbound_http(target) is stats
    assert _labels(stats) == {
        "direction": "outbound", "authority": "web.shop.svc.cluster.local:80", "target_addr": "10.0.0.7:8080",
        "target_ip": "10.0.0.7", "target_port": "8080", "tls": "true",
        "server_id": "web.shop.serviceaccount.identity.cluster.local", "dst_namespace": "shop",
        "dst_pod": "web-1", "dst_pod_template_hash": "abc", "dst_service": "web"}


def test_outbound_without_identities_says_why():
    assert _labels(LabelSets("outbound", 10, True).outbound_http(Target("10.1.1.1", 80)))["no_tls_reason"] == \
        "not_provided_by_service_discovery"
    assert _labels(LabelSets("outbound", 10, False).outbound_http(Target("10.1.1.1", 80)))["no_tls_reason"] == \
        "disabled"


def test_inbound_labels_by_connection_and_host():
    sets = LabelSets("inbound", 10, True, lambda meta: Target("127.0.0.1", 8080))
    meta = ConnMeta("inbound", ("10.0.0.9", 5000), ("10.0.0.7", 4143), None, tls=True, client_id="a.b")
    stats = sets.inbound_http(meta, b"web:80")
    assert _labels(stats) == {"direction": "inbound", "authority": "web:80", "target_addr": "127.0.0.1:8080",
                              "target_ip": "127.0.0.1", "target_port": "8080", "tls": "true", "client_id": "a.b"}
    assert sets.inbound_http(meta, b"web:80") is stats
    plain = ConnMeta("inbound", ("10.0.0.9", 5000), ("10.0.0.7", 4143), ("10.0.0.7", 8080))
    assert _labels(sets.inbound_http(plain, None))["no_tls_reason"] == "no_tls_from_remote"
    assert _labels(sets.tcp_src(plain))["target_addr"] == "10.0.0.7:8080"


def test_inbound_labels_carry_the_authorization_decision():
    """Linkerd's inbound request labels: srv_* with srv_port, route_* and authz_* of the decision."""
    policy = InboundPolicy.build(None, "all-unauthenticated", ("10.0.0.0/8",), ())
    sets = LabelSets("inbound", 10, True)
    meta = ConnMeta("inbound", ("10.0.0.9", 5000), ("10.0.0.7", 4143), ("10.0.0.7", 8080), tls=True, client_id="a.b",
                    authz=_Authz(8080))
    decision = policy.port(8080).check_http(client_of(meta))
    stats = sets.inbound_http(meta, b"web:80", decision)
    assert _labels(stats) == {
        "direction": "inbound", "authority": "web:80", "target_addr": "10.0.0.7:8080", "target_ip": "10.0.0.7",
        "target_port": "8080", "tls": "true", "client_id": "a.b",
        "srv_group": "", "srv_kind": "default", "srv_name": "all-unauthenticated", "srv_port": "8080",
        "authz_group": "", "authz_kind": "default", "authz_name": "all-unauthenticated",
        "route_group": "", "route_kind": "default", "route_name": "default"}
    assert sets.inbound_http(meta, b"web:80", decision) is stats
    denied = Decision(False, decision.labels[:3] + decision.labels[-3:], "unauthorized: test")
    other = sets.inbound_http(meta, b"web:80", denied)
    assert other is not stats and "authz_name" not in _labels(other)


class _Authz:
    def __init__(self, port):
        self.port = port
        self.port_policy = None


def test_label_sets_past_the_limit_share_the_catch_all():
    sets = LabelSets("outbound", 2, False)
    got = [sets.outbound_http(Target("10.0.0.1", port)) for port in (1, 2, 3, 4)]
    assert got[2] is got[3] and got[2] not in got[:2]
    assert 'authority="other"' in got[3].labels
    got[3].requests += 1
    assert got[3] in sets.http_sets()
    tcp = [sets.tcp_dst(Target("10.0.0.1", port)) for port in (1, 2, 3)]
    assert 'peer="other"' in tcp[2].labels


def test_dst_labels_are_prefixed_and_sanitized():
    assert dst_labels((("app.kubernetes.io/name", "x"),), "a.b.svc.cluster.local:80") == (
        ("dst_app_kubernetes_io_name", "x"), ("dst_namespace", "b"), ("dst_service", "a"))
    assert dst_labels((), "plain.mesh:80") == ()
