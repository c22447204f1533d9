"""Tests of proxy/core/addr.py: authorities parsed into targets; a connection's meta and its copies."""

import pytest

from proxy.core.addr import (
    ConnMeta,
    Target,
    accepted_meta,
    authorized_meta,
    parse_authority,
    redirected_meta,
    sni_meta,
    tls_meta,
)


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


def test_accepted_meta_is_the_class_made_without_its_init():
    args = ("inbound", ("10.0.0.7", 40000), ("10.0.0.9", 4143), ("10.0.0.9", 8080))
    fast, slow = accepted_meta(*args), ConnMeta(*args)
    for name in ConnMeta.__slots__:  # every field set, to the same value (uncompared ones too)
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast == slow and hash(fast) == hash(slow)
    assert fast.stats_cache is not accepted_meta(*args).stats_cache  # a dict of its own per connection


def test_conn_meta_is_frozen_and_compares_shows_and_hashes_its_first_seven_fields():
    meta = ConnMeta("outbound", ("10.0.0.7", 40000), ("10.0.0.9", 4140), None, sni="web", authz="granted")
    with pytest.raises(AttributeError):
        meta.tls = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del meta.sni
    with pytest.raises(AttributeError):  # slots: no field of another name
        object.__setattr__(meta, "other", 1)
    assert repr(meta) == ("ConnMeta(direction='outbound', client=('10.0.0.7', 40000), local=('10.0.0.9', 4140), "
                          "orig_dst=None, tls=False, client_id=None, sni='web')")
    same = ConnMeta("outbound", ("10.0.0.7", 40000), ("10.0.0.9", 4140), None, False, None, "web")
    same.stats_cache["k"] = 1
    assert meta == same and hash(meta) == hash(same) and len({meta, same}) == 1  # authz, stats_cache: not compared
    assert meta != sni_meta(meta, "api") and meta != tls_meta(meta, None) and meta != ("outbound",)
    with pytest.raises(TypeError):
        ConnMeta("outbound", ("10.0.0.7", 40000), ("10.0.0.9", 4140))  # type: ignore[call-arg]


def _every_field(meta):
    return {name: getattr(meta, name) for name in ConnMeta.__slots__}


def test_authorized_meta_changes_authz():
    meta = ConnMeta("inbound", ("10.0.0.7", 40000), ("10.0.0.9", 4143), None, tls=True,
                    client_id="web.default.serviceaccount.identity.linkerd.cluster.local", sni="x")
    meta.stats_cache["k"] = 1
    authz = object()
    fast = authorized_meta(meta, authz)
    assert _every_field(fast) == {**_every_field(meta), "authz": authz, "stats_cache": {}}
    assert fast.authz is authz and meta.authz is None
    assert fast.stats_cache is not meta.stats_cache  # other labels: not carried over
    shared: dict = {}
    assert authorized_meta(meta, authz, shared).stats_cache is shared  # ConnGrants: one per label set


@pytest.mark.parametrize("client_id", ["web.default.serviceaccount.identity.linkerd.cluster.local", None])
def test_tls_redirected_and_sni_meta_change_their_fields_only(client_id):
    meta = ConnMeta("inbound", ("10.0.0.7", 40000), ("10.0.0.9", 4143), None, sni="x", authz="granted")
    meta.stats_cache["k"] = 1
    app = ("10.0.0.9", 8080)
    for fast, changed in ((tls_meta(meta, client_id), {"tls": True, "client_id": client_id}),
                          (redirected_meta(meta, app), {"orig_dst": app}),
                          (sni_meta(meta, "web"), {"sni": "web"})):
        assert _every_field(fast) == {**_every_field(meta), **changed, "stats_cache": {}}  # authz carried over
        assert fast.stats_cache is not meta.stats_cache  # other labels: not carried over
        slow = ConnMeta(**{name: getattr(fast, name) for name in ConnMeta.__slots__[:8]})
        assert fast == slow and hash(fast) == hash(slow) and fast.authz == "granted"
    assert not meta.tls and meta.client_id is None and meta.orig_dst is None and meta.sni == "x"  # untouched
