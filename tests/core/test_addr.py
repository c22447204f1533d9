"""Tests of proxy/core/addr.py: authorities parsed into targets."""

import dataclasses

import pytest

from proxy.core.addr import ConnMeta, Target, accepted_meta, authorized_meta, parse_authority, redirected_meta, tls_meta


@pytest.mark.parametrize(
    "value,default,expected",
    [
        (b"web:8080", 80, Target("web", 8080)),
        (b"Web.Default.svc", 80, Target("web.default.svc", 80)),
        (b"[::1]:4143", 80, Target("::1", 4143)),
        (b"[::1]", 443, Target("::1", 443)),
        (b" 10.0.0.1:1 ", 80, Target("10.0.0.1", 1)),
        (b"web:", 80, Target("web", 80)),  # RFC 3986: an empty port means the default
    ],
)
def test_authorities(value, default, expected):
    assert parse_authority(value, default) == expected


@pytest.mark.parametrize(
    "value", [b"", b":80", b"web:0", b"web:70000", b"web:x", b"a b", b"u@host", b"h/p", b"[::1", b"::1:80",
              b"\xff\xfe"]
)
def test_bad_authorities(value):
    assert parse_authority(value, 80) is None


def test_targets_key_pools_and_print_like_addresses():
    assert {Target("a", 1): 1}[Target("a", 1)] == 1
    assert str(Target("::1", 80)) == "[::1]:80" and str(Target("web", 80)) == "web:80"
    assert Target("a", 1) != Target("a", 1, via_connect=True)


def test_accepted_meta_is_the_dataclass_made_without_its_init():
    args = ("inbound", ("10.0.0.7", 40000), ("10.0.0.9", 4143), ("10.0.0.9", 8080))
    fast, slow = accepted_meta(*args), ConnMeta(*args)
    for f in dataclasses.fields(ConnMeta):  # every field set, to the same value (compare=False ones too)
        assert getattr(fast, f.name) == getattr(slow, f.name), f.name
    assert fast == slow and hash(fast) == hash(slow)
    assert fast.stats_cache is not accepted_meta(*args).stats_cache  # a dict of its own per connection
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.tls = True  # type: ignore[misc]
    assert dataclasses.replace(fast, tls=True).tls and not fast.tls


def test_authorized_meta_is_replace_of_authz():
    meta = dataclasses.replace(accepted_meta("inbound", ("10.0.0.7", 40000), ("10.0.0.9", 4143), None),
                               tls=True, client_id="web.default.serviceaccount.identity.linkerd.cluster.local",
                               sni="x")
    meta.stats_cache["k"] = 1
    authz = object()
    fast, slow = authorized_meta(meta, authz), dataclasses.replace(meta, authz=authz)
    for f in dataclasses.fields(ConnMeta):
        assert getattr(fast, f.name) == getattr(slow, f.name), f.name
    assert fast.authz is authz and meta.authz is None
    assert fast.stats_cache == {} and fast.stats_cache is not meta.stats_cache  # other labels: not carried over


@pytest.mark.parametrize("client_id", ["web.default.serviceaccount.identity.linkerd.cluster.local", None])
def test_tls_and_redirected_meta_are_replace(client_id):
    meta = dataclasses.replace(accepted_meta("inbound", ("10.0.0.7", 40000), ("10.0.0.9", 4143), None),
                               sni="x", authz="granted")
    meta.stats_cache["k"] = 1
    app = ("10.0.0.9", 8080)
    for fast, slow in ((tls_meta(meta, client_id), dataclasses.replace(meta, tls=True, client_id=client_id)),
                       (redirected_meta(meta, app), dataclasses.replace(meta, orig_dst=app))):
        for f in dataclasses.fields(ConnMeta):  # authz carried over, as replace does
            assert getattr(fast, f.name) == getattr(slow, f.name), f.name
        assert fast == slow and hash(fast) == hash(slow) and fast.authz == "granted"
        assert fast.stats_cache == {} and fast.stats_cache is not meta.stats_cache  # other labels: not carried over
    assert not meta.tls and meta.client_id is None and meta.orig_dst is None  # the original is untouched
