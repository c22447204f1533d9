"""HTTPLocalRateLimitPolicy: parsing (every invalid field named) and the GCRA limits of ratelimit.py."""

from __future__ import annotations

import pytest

from proxy import compiled
from proxy.policy import ratelimit
from proxy.policy.authz_model import RateLimit
from proxy.policy.parse import ParseError, parse

SERVER = """
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http, namespace: shop}
spec: {podSelector: {}, port: 8080, accessPolicy: all-unauthenticated}
"""

POLICY = """
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: web-rl, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  total: {requestsPerSecond: 100}
  identity: {requestsPerSecond: 20}
  overrides:
    - requestsPerSecond: 50
      clientRefs:
        - {kind: ServiceAccount, name: batch}
        - {kind: ServiceAccount, name: cron, namespace: ops}
"""


def test_the_policy_is_read_unchanged_and_attached_to_its_server():
    server = parse(SERVER + "---" + POLICY, trust_domain="example.org").authz.servers[0]
    assert server.rate_limit == RateLimit(
        "web-rl", "shop", 100, 20,
        ((50, ("batch.shop.serviceaccount.identity.example.org", "cron.ops.serviceaccount.identity.example.org")),))


def test_a_server_without_a_policy_has_no_limit():
    assert parse(SERVER).authz.servers[0].rate_limit is None


@pytest.mark.parametrize(("old", "new", "field", "why"), [
    ("kind: Server, name", "kind: Service, name", "spec.targetRef.kind", "expected Server"),
    ("group: policy.linkerd.io, kind: Server", "group: core, kind: Server", "spec.targetRef.group",
     "policy.linkerd.io"),
    ("name: web-http}", "name: nope}", "spec.targetRef.name", "no Server shop/nope"),
    ("total: {requestsPerSecond: 100}", "total: {requestsPerSecond: 0}", "spec.total.requestsPerSecond", ">= 1"),
    ("total: {requestsPerSecond: 100}", "total: {requestsPerSecond: '5'}", "spec.total.requestsPerSecond", "integer"),
    ("total: {requestsPerSecond: 100}", "total: {rps: 5}", "spec.total.rps", "unknown field"),
    ("total: {requestsPerSecond: 100}", "total: {}", "spec.total.requestsPerSecond", "required"),
    ("identity: {requestsPerSecond: 20}", "identity: {requestsPerSecond: 200}", "spec.identity.requestsPerSecond",
     "greater than total"),
    ("- requestsPerSecond: 50", "- requestsPerSecond: 500", "spec.overrides[0].requestsPerSecond",
     "greater than total"),
    ("{kind: ServiceAccount, name: batch}", "{kind: Namespace, name: batch}", "spec.overrides[0].clientRefs[0].kind",
     "ServiceAccount"),
    ("{kind: ServiceAccount, name: batch}", "{kind: ServiceAccount}", "spec.overrides[0].clientRefs[0]",
     "clientRefs[0].name: expected a non-empty string"),
    ("name: cron, namespace: ops}", "name: batch}", "spec.overrides[0].clientRefs[1].name", "already has an override"),
    ("targetRef:", "targetRefs:", "spec.targetRefs", "unknown field"),
])
def test_invalid_fields_are_named(old, new, field, why):
    assert old in POLICY
    with pytest.raises(ParseError) as info:
        parse(SERVER + "---" + POLICY.replace(old, new))
    err = info.value
    assert (err.index, err.kind, err.name, err.field) == (1, "HTTPLocalRateLimitPolicy", "web-rl", field)
    assert why in err.why


def test_clientrefs_are_required_and_some_limit_must_be_given():
    bare = POLICY.split("  total:")[0]
    with pytest.raises(ParseError, match="spec: give total, identity or overrides"):
        parse(SERVER + "---" + bare)
    with pytest.raises(ParseError, match=r"spec.overrides\[0\].clientRefs: required"):
        parse(SERVER + "---" + bare + "  overrides: [{requestsPerSecond: 5, clientRefs: []}]\n")


def test_one_policy_per_server_and_a_supported_version():
    second = POLICY.replace("name: web-rl", "name: web-rl-2")
    with pytest.raises(ParseError, match="already has an HTTPLocalRateLimitPolicy") as info:
        parse(SERVER + "---" + POLICY + "---" + second)
    assert info.value.name == "web-rl-2"
    with pytest.raises(ParseError, match="apiVersion"):
        parse(SERVER + "---" + POLICY.replace("v1alpha1", "v1beta1"))


def test_the_limits_are_compiled():
    assert compiled.module_is_compiled("proxy.policy.ratelimit")


def _limits(total=None, identity=None, overrides=(), keys=100):
    return ratelimit.LocalRateLimit(RateLimit("rl", "ns", total, identity, overrides), keys)


def test_a_burst_equals_the_rate_then_the_rate_refills():
    lim = _limits(total=4)
    assert [lim.check(None, 10.0) for _ in range(5)] == [0, 0, 0, 0, ratelimit.TOTAL]
    assert lim.check(None, 10.24) == ratelimit.TOTAL  # a token every 0.25 s
    assert lim.check(None, 10.25) == 0
    assert lim.check(None, 10.26) == ratelimit.TOTAL
    assert [lim.check(None, 20.0) for _ in range(5)] == [0, 0, 0, 0, ratelimit.TOTAL]  # idle: a full burst


def test_each_identity_has_its_bucket_and_unmeshed_clients_share_one():
    lim = _limits(identity=2)
    assert [lim.check("a", 0.0) for _ in range(3)] == [0, 0, ratelimit.IDENTITY]
    assert [lim.check("b", 0.0) for _ in range(2)] == [0, 0]
    assert [lim.check(None, 0.0) for _ in range(3)] == [0, 0, ratelimit.IDENTITY]
    assert lim.check(None, 0.0) == ratelimit.IDENTITY


def test_linkerds_order_total_first_then_the_override_only():
    lim = _limits(total=5, identity=1, overrides=((3, ("vip", "vip2")),))
    # The override replaces the per-identity limit, and its identities share its bucket.
    assert [lim.check("vip", 0.0), lim.check("vip2", 0.0), lim.check("vip", 0.0)] == [0, 0, 0]
    assert lim.check("vip2", 0.0) == ratelimit.OVERRIDE
    assert lim.rate_of(ratelimit.OVERRIDE, "vip2") == 3
    # Everyone else: the per-identity limit, while the total has tokens (4 of 5 taken so far).
    assert [lim.check("other", 0.0), lim.check("other", 0.0)] == [0, ratelimit.TOTAL]
    assert lim.rate_of(ratelimit.TOTAL, None) == 5


def test_per_identity_buckets_are_bounded_idle_ones_first():
    lim = _limits(identity=1, keys=3)
    keyed = lim.identity
    for name in ("a", "b", "c"):
        assert lim.check(name, 0.0) == 0
    # At 0.5 s nobody's bucket is idle: the least recently used (a) goes, and a new one is made.
    assert lim.check("d", 0.5) == 0
    assert list(keyed.buckets) == ["b", "c", "d"] and keyed.evicted == 1
    assert lim.check("b", 0.5) == ratelimit.IDENTITY  # b kept its state
    # Later every bucket has refilled: all idle ones are dropped at once, none counted as evicted.
    assert lim.check("e", 5.0) == 0
    assert list(keyed.buckets) == ["e"] and keyed.evicted == 1
