"""Tests of proxy/core/transport_header.py: round trips, every prefix, and hostile input."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocol import transport_header as th


def test_round_trip_whole_every_prefix_and_trailing_bytes():
    wire = th.encode(8080, th.PROTO_HTTP, "web.default.svc.cluster.local:80")
    got = th.decode(wire + b"PRI * HTTP/2.0")
    assert got == th.TransportHeader(8080, th.PROTO_HTTP, "web.default.svc.cluster.local:80", len(wire))
    for i in range(len(wire)):
        assert th.decode(wire[:i]) is th.NEED_MORE


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n", b"\x16\x03\x01\x02\x00",
                                   b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"\x00MPY"])
def test_other_protocols_are_not_headers(first):
    assert th.decode(first) is th.NOT_HEADER


@pytest.mark.parametrize("bad", [b"\x00MPX\x02\x1f\x90\x01\x00", b"\x00MPX\x01\x00\x00\x01\x00",
                                 b"\x00MPX\x01\x1f\x90\x09\x00"])
def test_malformed_headers_raise(bad):
    with pytest.raises(th.HeaderError):
        th.decode(bad)


def test_encode_checks_its_arguments():
    with pytest.raises(ValueError):
        th.encode(0, th.PROTO_HTTP)
    with pytest.raises(ValueError):
        th.encode(80, 7)
    assert len(th.encode(80, th.PROTO_OPAQUE, "x" * 400)) == th.FIXED + 255


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_header_error(data):
    try:
        th.decode(data)
    except th.HeaderError:
        pass
