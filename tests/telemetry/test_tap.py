"""Tap events as bytes: the addresses, labels, durations and ids of each event, decoded with the classes
grpcio-tools generates from Linkerd's tap.proto; the session's buffer and limit; the hub that the
contexts ask only while a tap is open."""

from __future__ import annotations

import ipaddress

from helpers import tapclient
from proxy.exchange import clock
from proxy.telemetry import tap


def test_tcp_address_ipv4_ipv6_and_names():
    net_pb2 = tapclient.modules()[2]
    four = net_pb2.TcpAddress.FromString(tap.tcp_address("10.0.0.7", 80))
    assert four.ip.ipv4 == int(ipaddress.IPv4Address("10.0.0.7")) and four.port == 80
    six = net_pb2.TcpAddress.FromString(tap.tcp_address("fd00::1:2", 443))
    assert ipaddress.IPv6Address((six.ip.ipv6.first << 64) | six.ip.ipv6.last) == ipaddress.IPv6Address("fd00::1:2")
    named = net_pb2.TcpAddress.FromString(tap.tcp_address("web.ns.svc", 8080))
    assert not named.HasField("ip") and named.port == 8080


class Ctx:
    def __init__(self):
        self.tap = "untouched"


def test_hub_publishes_itself_only_while_a_tap_is_open():
    hub = tap.TapHub()
    a, b = Ctx(), Ctx()
    hub.attach(a)
    hub.attach(b)
    assert a.tap is None and b.tap is None
    session = hub.open(tap.MatchAll([]), 3, False, 1024)
    assert a.tap is hub and b.tap is hub and hub.live == 1
    session.close()
    assert a.tap is None and hub.live == 0
    session.close()  # twice: nothing more
    assert hub.live == 0


def _emit(session, frame):
    """What a record does: reserve room for an event, write it there."""
    start = session.reserve(len(frame))
    if start >= 0:
        session.buf[start:start + len(frame)] = frame


def test_session_buffer_is_bounded_and_take_empties_it():
    hub = tap.TapHub()
    session = hub.open(tap.MatchAll([]), 10, False, 10)
    _emit(session, b"12345")
    _emit(session, b"12345")
    _emit(session, b"x")  # over 10 bytes: dropped
    assert (session.events, session.dropped, hub.dropped) == (2, 1, 1)
    assert session.take() == b"1234512345" and session.used == 0
    _emit(session, b"y")
    assert session.take() == b"y"  # written from the start again
    session.close()
    _emit(session, b"z")  # closed: ignored, not counted
    assert session.take() == b"" and session.events == 3


def test_session_buffer_grows_to_its_bound_and_is_reused():
    hub = tap.TapHub()
    session = hub.open(tap.MatchAll([]), 10, False, 10_000)
    frames = [bytes([i]) * 999 for i in range(10)]
    for frame in frames:
        _emit(session, frame)  # the tenth (10 x 999 > 10,000 - 999) fits, an eleventh would not
    _emit(session, b"x" * 11)
    assert session.dropped == 1 and len(session.buf) == 10_000  # grown by doubling, capped at the bound
    assert session.take() == b"".join(frames)
    _emit(session, b"abc")
    assert session.take() == b"abc" and len(session.buf) == 10_000  # kept: a steady tap reallocates nothing


def test_take_chunks_cuts_the_block_into_frame_sized_pieces():
    hub = tap.TapHub()
    session = hub.open(tap.MatchAll([]), 10, False, 10_000)
    frames = [bytes([i]) * 999 for i in range(5)]
    for frame in frames:
        _emit(session, frame)
    chunks = session.take_chunks(2048)
    assert [len(c) for c in chunks] == [2048, 2048, 899] and b"".join(chunks) == b"".join(frames)
    assert session.used == 0 and session.take_chunks(2048) == []
    _emit(session, b"abc")
    assert session.take_chunks(2048) == [b"abc"]  # written from the start again


def test_durations_and_ids():
    tap_pb2 = tapclient.modules()[0]
    hub = tap.TapHub()
    session = hub.open(tap.MatchAll([]), 10, False, 1 << 16)
    record = tap.new_record(session, 5, b"", 10.0)
    times = iter([12.5, 13.75])
    clock.set_source(lambda: next(times))
    try:
        record.response_init(204, None, None)
        record.add_bytes(7)
        record.end(None)
    finally:
        clock.set_source(None)
    data = session.take()
    events = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        events.append(tap_pb2.TapEvent.FromString(data[5:5 + size]))
        data = data[5 + size:]
    rsp, end = events[0].http.response_init, events[1].http.response_end
    assert (rsp.id.base, rsp.id.stream) == (session.base_id, 5)
    assert rsp.since_request_init.ToMilliseconds() == 2500 and rsp.http_status == 204
    assert end.since_request_init.ToMilliseconds() == 3750 and end.since_response_init.ToMilliseconds() == 1250
    assert end.response_bytes == 7
    ended = session.open
    record.end(None)  # a second end is ignored: no event, not counted again
    record.reset(8)
    assert session.take() == b"" and session.open == ended


def test_labels_are_a_sorted_map():
    tap_pb2 = tapclient.modules()[0]
    meta = tap_pb2.TapEvent.EndpointMeta.FromString(tap._labels({"tls": "true", "pod": "a", "namespace": "n"}))
    assert dict(meta.labels) == {"tls": "true", "pod": "a", "namespace": "n"}
