"""Tests of proxy/core/addr.py: authorities parsed into targets."""

import pytest

from proxy.core.addr import Target, parse_authority


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
