"""The protobuf wire format the proxy writes and reads, checked against the official runtime: encoders
whose bytes the generated classes parse, a decoder that reads what they serialize, and that never
raises anything but DecodeError on hostile bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import tapclient
from proxy.telemetry import pbwire


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32 - 1, 2**63, 2**64 - 1])
def test_varint_round_trip(n):
    encoded = pbwire.uint_field(2, n)
    assert pbwire.fields(encoded) == [(2, pbwire.VARINT, n)]


def test_fields_read_what_the_official_runtime_writes():
    tap_pb2, _, net_pb2, _ = tapclient.modules()
    addr = net_pb2.TcpAddress(ip=net_pb2.IPAddress(ipv6=net_pb2.IPv6(first=2**64 - 1, last=5)), port=8080)
    (ip, port) = pbwire.fields(addr.SerializeToString())
    assert port == (2, pbwire.VARINT, 8080)
    assert ip[:2] == (1, pbwire.LEN)
    (six,) = pbwire.fields(ip[2])
    assert pbwire.fields(six[2]) == [(1, pbwire.FIXED64, 2**64 - 1), (2, pbwire.FIXED64, 5)]
    v4 = net_pb2.IPAddress(ipv4=0x0A000001).SerializeToString()
    assert pbwire.fields(v4) == [(1, pbwire.FIXED32, 0x0A000001)]


def test_encoders_make_what_the_official_runtime_reads():
    _, _, net_pb2, http_types = tapclient.modules()
    six = net_pb2.IPv6.FromString(pbwire.fixed64_field(1, 7) + pbwire.fixed64_field(2, 2**64 - 2))
    assert (six.first, six.last) == (7, 2**64 - 2)
    v4 = net_pb2.IPAddress.FromString(pbwire.fixed32_field(1, 0x7F000001))
    assert v4.WhichOneof("ip") == "ipv4" and v4.ipv4 == 0x7F000001
    # A oneof member equal to its default is still present when written (GET is 0).
    method = http_types.HttpMethod.FromString(pbwire.uint_field(1, 0))
    assert method.WhichOneof("type") == "registered"
    header = http_types.Headers.Header.FromString(pbwire.str_field(1, "é") + pbwire.len_field(2, b"\xff"))
    assert (header.name, header.value) == ("é", b"\xff")


@pytest.mark.parametrize("data,why", [
    (b"\x08", "truncated varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "varint"),
    (b"\x12\x05abc", "runs past"),
    (b"\x0b", "wire type"),  # a group
    (b"\x00\x01", "field number"),
    (b"\x09\x00\x00", "fixed64"),
    (b"\x0d\x00", "fixed32"),
])
def test_malformed_messages_are_decode_errors(data, why):
    with pytest.raises(pbwire.DecodeError, match=why):
        pbwire.fields(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_decode_error(data):
    try:
        out = pbwire.fields(data)
    except pbwire.DecodeError:
        return
    for number, wire, value in out:
        assert number > 0 and wire in (0, 1, 2, 5)
        assert isinstance(value, bytes if wire == 2 else int)


def test_grpc_frame_and_status():
    framed = pbwire.grpc_frame(b"abc")
    assert framed[0] == 0 and struct.unpack(">I", framed[1:5])[0] == 3 and framed[5:] == b"abc"
    assert pbwire.grpc_status([(b"grpc-status", b"0")]) == (0, "")
    assert pbwire.grpc_status([(b"grpc-status", b"14"), (b"grpc-message", b"unavailable")]) == (14, "unavailable")
    assert pbwire.grpc_status([(b":status", b"200")]) == (-1, "")
    assert pbwire.grpc_status([(b"grpc-status", b"x")]) == (-1, "")
