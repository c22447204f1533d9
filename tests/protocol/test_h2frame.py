"""Tests for proxy.protocol.h2frame: every frame type written then read back, every RFC 9113 rule the reader enforces.

Frames are fed whole, one byte at a time and followed by the start of the
next frame; the fuzz invariant is "parse cleanly or raise H2Error". The
compiled module is the one under test; the table-driven cases also run
against the same source loaded uncompiled.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proxy.protocol.h2frame as h2frame

assert h2frame.__file__.endswith(".so"), f"compiled h2frame not in use: {h2frame.__file__}"


def _load_pure():
    source = Path(h2frame.__file__).with_name("h2frame.py")
    spec = importlib.util.spec_from_file_location("meshproxy_h2frame_pure", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pure = _load_pure()
assert not pure.__file__.endswith(".so")


@pytest.fixture(params=["compiled", "pure"])
def fr(request):
    return h2frame if request.param == "compiled" else pure


F = h2frame  # constants are plain ints, the same in both builds
FIELDS = (
    "type", "flags", "stream_id", "length", "data", "error_code", "last_stream_id", "promised_stream_id",
    "increment", "depends_on", "weight", "exclusive", "settings",
)


def fields(frame):
    return {name: getattr(frame, name) for name in FIELDS}


def expect(ftype, flags, stream_id, length, **kw):
    out = {
        "type": ftype, "flags": flags, "stream_id": stream_id, "length": length, "data": b"", "error_code": 0,
        "last_stream_id": 0, "promised_stream_id": 0, "increment": 0, "depends_on": 0,
        "weight": 16 if ftype == F.HEADERS else 0, "exclusive": False, "settings": None,
    }
    out.update(kw)
    return out


def drain(mod, reader):
    frames = []
    while True:
        frame = reader.next_frame()
        if frame is mod.NEED_MORE:
            return frames
        frames.append(fields(frame))


def read_whole(mod, wire, **kw):
    reader = mod.FrameReader(**kw)
    reader.feed(wire)
    return drain(mod, reader)


def read_bytewise(mod, wire, **kw):
    reader = mod.FrameReader(**kw)
    frames = []
    for i in range(len(wire)):
        reader.feed(wire[i : i + 1])
        frames += drain(mod, reader)
    return frames


def read_all_ways(mod, wire, **kw):
    """Frames read whole, byte by byte, and with the start of another frame behind; all must agree."""
    whole = read_whole(mod, wire, **kw)
    assert read_bytewise(mod, wire, **kw) == whole
    reader = mod.FrameReader(**kw)
    trailing = mod.ping(b"abcdefgh")
    reader.feed(wire + trailing[:10])
    assert drain(mod, reader) == whole
    assert reader.buffered == 10
    reader.feed(trailing[10:])
    assert drain(mod, reader) == [expect(F.PING, 0, 0, 8, data=b"abcdefgh")]
    assert reader.buffered == 0
    return whole


def error_of(mod, wire, **kw):
    """The H2Error reading ``wire`` raises, checked the same whole and byte by byte."""
    errors = []
    for feed in ("whole", "bytewise"):
        reader = mod.FrameReader(**kw)
        chunks = [wire] if feed == "whole" else [wire[i : i + 1] for i in range(len(wire))]
        err = None
        for chunk in chunks:
            reader.feed(chunk)
            try:
                drain(mod, reader)
            except mod.H2Error as e:
                err = e
                break
        assert err is not None, f"no error reading {wire!r} {feed}"
        errors.append((err.code, err.stream_id, err.reason))
    assert errors[0] == errors[1]
    return errors[0]


def hdr(length, ftype, flags, stream_id):
    return length.to_bytes(3, "big") + bytes([ftype, flags]) + stream_id.to_bytes(4, "big")


# ---------------------------------------------------------------- round trips, one frame type at a time

BLOCK = bytes(range(256)) * 3
BIG_BLOCK = bytes(i % 251 for i in range(40_000))
MAX_SID = F.MAX_STREAM_ID

ROUND_TRIPS = {
    "data": (lambda m: m.data_frame(1, b"hello", True), [expect(F.DATA, 1, 1, 5, data=b"hello")]),
    "data-empty": (lambda m: m.data_frame(MAX_SID, b""), [expect(F.DATA, 0, MAX_SID, 0)]),
    "data-padded": (
        lambda m: m.raw_frame(F.DATA, F.FLAG_PADDED | 1, 3, b"\x03abc\x00\x00\x00"),
        [expect(F.DATA, 9, 3, 7, data=b"abc")],
    ),
    "data-all-padding": (
        lambda m: m.raw_frame(F.DATA, F.FLAG_PADDED, 3, b"\x04\x00\x00\x00\x00"),
        [expect(F.DATA, 8, 3, 5)],
    ),
    "headers": (
        lambda m: m.headers_frames(3, BLOCK),
        [expect(F.HEADERS, F.FLAG_END_HEADERS, 3, len(BLOCK), data=BLOCK)],
    ),
    "headers-continuation": (
        lambda m: m.headers_frames(5, BIG_BLOCK, True),
        [expect(F.HEADERS, 5, 5, len(BIG_BLOCK), data=BIG_BLOCK)],
    ),
    "headers-empty-block": (lambda m: m.headers_frames(7, b"", True), [expect(F.HEADERS, 5, 7, 0)]),
    "headers-padded-priority": (
        lambda m: m.raw_frame(F.HEADERS, 0x2D, 9, b"\x02" + b"\x80\x00\x00\x07" + b"\x63" + b"blk" + b"\x00\x00"),
        [expect(F.HEADERS, 0x2D, 9, 11, data=b"blk", depends_on=7, exclusive=True, weight=100)],
    ),
    "headers-priority": (
        lambda m: m.raw_frame(F.HEADERS, 0x24, 9, b"\x00\x00\x00\x03\xff" + b"blk"),
        [expect(F.HEADERS, 0x24, 9, 8, data=b"blk", depends_on=3, weight=256)],
    ),
    "headers-padded-continuation": (
        lambda m: m.raw_frame(F.HEADERS, F.FLAG_PADDED, 9, b"\x01ab\x00")
        + m.raw_frame(F.CONTINUATION, 0, 9, b"cd")
        + m.raw_frame(F.CONTINUATION, 0, 9, b"")
        + m.raw_frame(F.CONTINUATION, F.FLAG_END_HEADERS, 9, b"e"),
        [expect(F.HEADERS, 0x0C, 9, 7, data=b"abcde")],
    ),
    "priority": (lambda m: m.priority(3, 1, 256, True),
                 [expect(F.PRIORITY, 0, 3, 5, depends_on=1, weight=256, exclusive=True)]),
    "priority-default": (lambda m: m.priority(3, 0), [expect(F.PRIORITY, 0, 3, 5, weight=16)]),
    "rst_stream": (lambda m: m.rst_stream(3, F.CANCEL), [expect(F.RST_STREAM, 0, 3, 4, error_code=F.CANCEL)]),
    "rst_stream-max-code": (lambda m: m.rst_stream(3, 0xFFFFFFFF),
                            [expect(F.RST_STREAM, 0, 3, 4, error_code=0xFFFFFFFF)]),
    "settings": (
        lambda m: m.settings_frame(
            [(1, 8192), (2, 0), (3, 100), (4, 2**31 - 1), (5, 16384), (6, 1 << 20), (8, 1), (9, 1), (5, 2**24 - 1)]
        ),
        [
            expect(
                F.SETTINGS, 0, 0, 54,
                settings=[(1, 8192), (2, 0), (3, 100), (4, 2**31 - 1), (5, 16384), (6, 1 << 20), (8, 1), (9, 1),
                          (5, 2**24 - 1)],
            )
        ],
    ),
    "settings-unknown-ignored": (
        lambda m: m.settings_frame([(0, 5), (7, 9), (0xFFFF, 0xFFFFFFFF), (1, 0), (0x10, 3)]),
        [expect(F.SETTINGS, 0, 0, 30, settings=[(1, 0)])],
    ),
    "settings-empty": (lambda m: m.settings_frame([]), [expect(F.SETTINGS, 0, 0, 0, settings=[])]),
    "settings-ack": (lambda m: m.settings_frame(ack=True), [expect(F.SETTINGS, 1, 0, 0, settings=[])]),
    "push_promise": (
        lambda m: m.push_promise_frames(1, 2, BLOCK),
        [expect(F.PUSH_PROMISE, 4, 1, 4 + len(BLOCK), promised_stream_id=2, data=BLOCK)],
    ),
    "push_promise-continuation": (
        lambda m: m.push_promise_frames(1, MAX_SID - 1, BIG_BLOCK),
        [expect(F.PUSH_PROMISE, 4, 1, 4 + len(BIG_BLOCK), promised_stream_id=MAX_SID - 1, data=BIG_BLOCK)],
    ),
    "push_promise-padded": (
        lambda m: m.raw_frame(F.PUSH_PROMISE, 0x0C, 1, b"\x02\x80\x00\x00\x04blk\x00\x00"),
        [expect(F.PUSH_PROMISE, 0x0C, 1, 10, promised_stream_id=4, data=b"blk")],
    ),
    "ping": (lambda m: m.ping(b"\x00\x01\x02\x03\x04\x05\x06\x07"), [expect(F.PING, 0, 0, 8, data=bytes(range(8)))]),
    "ping-ack": (lambda m: m.ping(b"pingpong", ack=True), [expect(F.PING, 1, 0, 8, data=b"pingpong")]),
    "goaway": (
        lambda m: m.goaway(MAX_SID, F.ENHANCE_YOUR_CALM, b"slow down"),
        [expect(F.GOAWAY, 0, 0, 17, last_stream_id=MAX_SID, error_code=F.ENHANCE_YOUR_CALM, data=b"slow down")],
    ),
    "goaway-no-debug": (lambda m: m.goaway(0, F.NO_ERROR), [expect(F.GOAWAY, 0, 0, 8)]),
    "window_update-connection": (lambda m: m.window_update(0, 1), [expect(F.WINDOW_UPDATE, 0, 0, 4, increment=1)]),
    "window_update-stream": (
        lambda m: m.window_update(7, 2**31 - 1),
        [expect(F.WINDOW_UPDATE, 0, 7, 4, increment=2**31 - 1)],
    ),
    "unknown-type": (lambda m: m.raw_frame(0xFA, 0xFF, 5, b"ext"), [expect(0xFA, 0xFF, 5, 3, data=b"ext")]),
    "unknown-type-stream-0": (lambda m: m.raw_frame(0x10, 0, 0, b""), [expect(0x10, 0, 0, 0)]),
    "reserved-bits-ignored": (
        lambda m: hdr(4, F.WINDOW_UPDATE, 0, 0x80000003) + b"\x80\x00\x00\x05"
        + hdr(8, F.GOAWAY, 0, 0) + b"\x80\x00\x00\x09\x00\x00\x00\x00",
        [expect(F.WINDOW_UPDATE, 0, 3, 4, increment=5), expect(F.GOAWAY, 0, 0, 8, last_stream_id=9)],
    ),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_round_trip(fr, name):
    build, expected = ROUND_TRIPS[name]
    assert read_all_ways(fr, build(fr)) == expected


def test_flag_properties(fr):
    reader = fr.FrameReader()
    reader.feed(
        fr.data_frame(1, b"x", True) + fr.headers_frames(3, b"", False) + fr.settings_frame(ack=True)
        + fr.ping(b"12345678") + fr.raw_frame(0x20, 0xFF, 1, b"")
    )
    got = [(f.end_stream, f.end_headers, f.ack) for f in iter(reader.next_frame, fr.NEED_MORE)]
    assert got == [(True, False, False), (False, True, False), (False, False, True), (False, False, False),
                   (False, False, False)]


def test_all_frames_in_one_stream(fr):
    wire = b"".join(build(fr) for build, _ in ROUND_TRIPS.values())
    expected = [f for _, frames in ROUND_TRIPS.values() for f in frames]
    assert read_all_ways(fr, wire) == expected
    assert read_all_ways(fr, fr.PREFACE + fr.settings_frame([]) + wire, expect_preface=True, expect_settings=True) == [
        expect(F.SETTINGS, 0, 0, 0, settings=[])
    ] + expected


def test_writers_produce_rfc_layout(fr):
    assert fr.window_update(1, 0x12345) == bytes.fromhex("000004 08 00 00000001 00012345")
    assert fr.rst_stream(3, 8) == bytes.fromhex("000004 03 00 00000003 00000008")
    assert fr.settings_frame([(3, 100)]) == bytes.fromhex("000006 04 00 00000000 0003 00000064")
    assert fr.settings_frame(ack=True) == bytes.fromhex("000000 04 01 00000000")
    assert fr.priority(5, 3, 1, True) == bytes.fromhex("000005 02 00 00000005 80000003 00")
    assert fr.goaway(7, 1, b"x") == bytes.fromhex("000009 07 00 00000000 00000007 00000001 78")
    assert fr.data_frame(1, b"ab", True) == bytes.fromhex("000002 00 01 00000001 6162")
    assert fr.frame_header(0xABCDEF, 0xFF, 0xFE, MAX_SID) == bytes.fromhex("abcdef ff fe 7fffffff")
    # A block of exactly one frame, and one octet more.
    one = fr.headers_frames(1, b"b" * 16384)
    assert len(one) == 9 + 16384 and one[3:5] == b"\x01\x04"
    two = fr.headers_frames(1, b"b" * 16385, True)
    assert two[:9] == hdr(16384, F.HEADERS, 1, 1)
    assert two[9 + 16384 :] == hdr(1, F.CONTINUATION, 4, 1) + b"b"
    assert type(one) is bytes and type(fr.window_update(1, 1)) is bytes


def test_header_frames_around_the_one_buffer_size(fr):
    # A frame up to 4096 octets is written whole into one buffer shared by every frame (compiled); above it,
    # assembled from parts. Both give the same octets, and a frame made from the buffer stays what it was.
    made = []
    for total in (4094, 4095, 4096, 4097, 4098):
        block = bytes(range(256)) * 16
        block = block[: total - 9]
        wire = fr.headers_frames(3, block, True)
        assert wire == hdr(len(block), F.HEADERS, 5, 3) + block
        promised = fr.push_promise_frames(1, 2, block[: total - 13])
        assert promised == hdr(total - 9, F.PUSH_PROMISE, 4, 1) + b"\x00\x00\x00\x02" + block[: total - 13]
        made.append((wire, block))
    assert all(wire == hdr(len(block), F.HEADERS, 5, 3) + block for wire, block in made)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.data_frame(0, b""),
        lambda m: m.data_frame(-1, b""),
        lambda m: m.data_frame(2**31, b""),
        lambda m: m.headers_frames(0, b""),
        lambda m: m.headers_frames(1, b"", False, 16383),
        lambda m: m.headers_frames(1, b"", False, 2**24),
        lambda m: m.push_promise_frames(1, 0, b""),
        lambda m: m.window_update(1, 0),
        lambda m: m.window_update(1, 2**31),
        lambda m: m.rst_stream(0, 0),
        lambda m: m.rst_stream(1, 2**32),
        lambda m: m.ping(b"short"),
        lambda m: m.goaway(2**31, 0),
        lambda m: m.goaway(1, -1),
        lambda m: m.priority(1, 0, 0),
        lambda m: m.priority(1, 0, 257),
        lambda m: m.priority(0, 1),
        lambda m: m.settings_frame([(1, 2, 3)]),
        lambda m: m.settings_frame([(0x10000, 1)]),
        lambda m: m.settings_frame([(1, 2**32)]),
        lambda m: m.settings_frame([(1, 1)], ack=True),
        lambda m: m.frame_header(2**24, 0, 0, 1),
        lambda m: m.frame_header(0, 256, 0, 1),
        lambda m: m.FrameReader(max_frame_size=16383),
        lambda m: m.FrameReader(max_frame_size=2**24),
    ],
)
def test_writer_and_reader_argument_checks(fr, call):
    with pytest.raises(ValueError):
        call(fr)


# ---------------------------------------------------------------- validation: exact code, connection or stream

CONN = 0  # expected stream_id of a connection error
PROTO, FSIZE, FLOW, CALM = F.PROTOCOL_ERROR, F.FRAME_SIZE_ERROR, F.FLOW_CONTROL_ERROR, F.ENHANCE_YOUR_CALM


def settings_payload(*pairs):
    return b"".join(i.to_bytes(2, "big") + v.to_bytes(4, "big") for i, v in pairs)


VIOLATIONS = {
    # frame size limit (SETTINGS_MAX_FRAME_SIZE)
    "data-too-large": (hdr(16385, F.DATA, 0, 1), FSIZE, CONN),
    "ping-too-large": (hdr(20000, F.PING, 0, 0), FSIZE, CONN),
    "unknown-too-large": (hdr(2**24 - 1, 0x42, 0, 0), FSIZE, CONN),
    # stream-id rules
    "settings-on-stream": (hdr(0, F.SETTINGS, 0, 1), PROTO, CONN),
    "ping-on-stream": (hdr(8, F.PING, 0, 1) + bytes(8), PROTO, CONN),
    "goaway-on-stream": (hdr(8, F.GOAWAY, 0, 3) + bytes(8), PROTO, CONN),
    "data-on-0": (hdr(1, F.DATA, 0, 0) + b"x", PROTO, CONN),
    "headers-on-0": (hdr(1, F.HEADERS, 4, 0) + b"\x82", PROTO, CONN),
    "priority-on-0": (hdr(5, F.PRIORITY, 0, 0) + bytes(5), PROTO, CONN),
    "rst_stream-on-0": (hdr(4, F.RST_STREAM, 0, 0) + bytes(4), PROTO, CONN),
    "continuation-on-0": (hdr(0, F.CONTINUATION, 4, 0), PROTO, CONN),
    "push_promise-on-0": (hdr(4, F.PUSH_PROMISE, 4, 0) + b"\x00\x00\x00\x02", PROTO, CONN),
    # fixed lengths
    "priority-length-4": (hdr(4, F.PRIORITY, 0, 3) + bytes(4), FSIZE, 3),
    "priority-length-6": (hdr(6, F.PRIORITY, 0, 5) + bytes(6), FSIZE, 5),
    "rst_stream-length-3": (hdr(3, F.RST_STREAM, 0, 1) + bytes(3), FSIZE, CONN),
    "rst_stream-length-5": (hdr(5, F.RST_STREAM, 0, 1) + bytes(5), FSIZE, CONN),
    "ping-length-7": (hdr(7, F.PING, 0, 0) + bytes(7), FSIZE, CONN),
    "ping-length-9": (hdr(9, F.PING, 0, 0) + bytes(9), FSIZE, CONN),
    "settings-length-5": (hdr(5, F.SETTINGS, 0, 0) + bytes(5), FSIZE, CONN),
    "settings-length-7": (hdr(7, F.SETTINGS, 0, 0) + bytes(7), FSIZE, CONN),
    "settings-ack-with-payload": (hdr(6, F.SETTINGS, 1, 0) + settings_payload((1, 0)), FSIZE, CONN),
    "window_update-length-3": (hdr(3, F.WINDOW_UPDATE, 0, 0) + bytes(3), FSIZE, CONN),
    "window_update-length-5-stream": (hdr(5, F.WINDOW_UPDATE, 0, 1) + bytes(5), FSIZE, CONN),
    "goaway-length-7": (hdr(7, F.GOAWAY, 0, 0) + bytes(7), FSIZE, CONN),
    "data-padded-empty": (hdr(0, F.DATA, 8, 1), FSIZE, CONN),
    "headers-padded-empty": (hdr(0, F.HEADERS, 0x0C, 1), FSIZE, CONN),
    "headers-priority-short": (hdr(4, F.HEADERS, 0x24, 1) + bytes(4), FSIZE, CONN),
    "headers-padded-priority-short": (hdr(5, F.HEADERS, 0x2C, 1) + bytes(5), FSIZE, CONN),
    "push_promise-short": (hdr(3, F.PUSH_PROMISE, 4, 1) + bytes(3), FSIZE, CONN),
    "push_promise-padded-short": (hdr(4, F.PUSH_PROMISE, 0x0C, 1) + b"\x00\x00\x00\x02", FSIZE, CONN),
    # padding
    "data-pad-equals-length": (hdr(5, F.DATA, 8, 1) + b"\x05abcd", PROTO, CONN),
    "data-pad-over-length": (hdr(2, F.DATA, 8, 1) + b"\xffa", PROTO, CONN),
    "headers-pad-too-long": (hdr(3, F.HEADERS, 0x0C, 1) + b"\x03ab", PROTO, CONN),
    "headers-pad-eats-priority": (hdr(7, F.HEADERS, 0x2C, 1) + b"\x02" + bytes(6), PROTO, CONN),
    "push_promise-pad-too-long": (hdr(6, F.PUSH_PROMISE, 0x0C, 1) + b"\x02\x00\x00\x00\x02a", PROTO, CONN),
    # WINDOW_UPDATE increment 0
    "window_update-0-connection": (hdr(4, F.WINDOW_UPDATE, 0, 0) + bytes(4), PROTO, CONN),
    "window_update-0-stream": (hdr(4, F.WINDOW_UPDATE, 0, 9) + bytes(4), PROTO, 9),
    "window_update-0-reserved-bit": (hdr(4, F.WINDOW_UPDATE, 0, 9) + b"\x80\x00\x00\x00", PROTO, 9),
    # SETTINGS values
    "enable_push-2": (hdr(6, F.SETTINGS, 0, 0) + settings_payload((2, 2)), PROTO, CONN),
    "initial_window-2^31": (hdr(6, F.SETTINGS, 0, 0) + settings_payload((4, 2**31)), FLOW, CONN),
    "initial_window-max32": (hdr(6, F.SETTINGS, 0, 0) + settings_payload((4, 2**32 - 1)), FLOW, CONN),
    "max_frame_size-small": (hdr(6, F.SETTINGS, 0, 0) + settings_payload((5, 16383)), PROTO, CONN),
    "max_frame_size-large": (hdr(6, F.SETTINGS, 0, 0) + settings_payload((5, 2**24)), PROTO, CONN),
    "max_frame_size-zero": (hdr(12, F.SETTINGS, 0, 0) + settings_payload((1, 0), (5, 0)), PROTO, CONN),
    "enable_connect_protocol-2": (hdr(6, F.SETTINGS, 0, 0) + settings_payload((8, 2)), PROTO, CONN),
    "no_rfc7540_priorities-2": (hdr(6, F.SETTINGS, 0, 0) + settings_payload((9, 2)), PROTO, CONN),
    # CONTINUATION sequencing
    "continuation-alone": (hdr(1, F.CONTINUATION, 4, 1) + b"x", PROTO, CONN),
    "continuation-after-complete-headers": (
        hdr(1, F.HEADERS, 4, 1) + b"x" + hdr(1, F.CONTINUATION, 4, 1) + b"y", PROTO, CONN,
    ),
    "headers-then-data": (hdr(1, F.HEADERS, 0, 1) + b"x" + hdr(1, F.DATA, 0, 1) + b"y", PROTO, CONN),
    "headers-then-ping": (hdr(1, F.HEADERS, 0, 1) + b"x" + hdr(8, F.PING, 0, 0) + bytes(8), PROTO, CONN),
    "headers-then-unknown": (hdr(1, F.HEADERS, 0, 1) + b"x" + hdr(0, 0x42, 0, 1), PROTO, CONN),
    "headers-then-headers": (hdr(1, F.HEADERS, 0, 1) + b"x" + hdr(1, F.HEADERS, 4, 3) + b"y", PROTO, CONN),
    "continuation-other-stream": (
        hdr(1, F.HEADERS, 0, 1) + b"x" + hdr(1, F.CONTINUATION, 4, 3) + b"y", PROTO, CONN,
    ),
    "push_promise-then-settings": (
        hdr(4, F.PUSH_PROMISE, 0, 1) + b"\x00\x00\x00\x02" + hdr(0, F.SETTINGS, 0, 0), PROTO, CONN,
    ),
    # priority self-dependency
    "priority-self-dependency": (hdr(5, F.PRIORITY, 0, 3) + b"\x00\x00\x00\x03\x10", PROTO, 3),
    "priority-self-dependency-exclusive": (hdr(5, F.PRIORITY, 0, 3) + b"\x80\x00\x00\x03\x10", PROTO, 3),
    "headers-self-dependency": (hdr(6, F.HEADERS, 0x24, 5) + b"\x00\x00\x00\x05\x10\x82", PROTO, CONN),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_violation(fr, name):
    wire, code, stream_id = VIOLATIONS[name]
    got_code, got_stream, reason = error_of(fr, wire)
    assert (got_code, got_stream) == (code, stream_id), reason


def test_frame_size_error_needs_only_the_header(fr):
    reader = fr.FrameReader()
    reader.feed(hdr(16385, F.DATA, 0, 1))
    with pytest.raises(fr.H2Error) as info:
        reader.next_frame()
    assert (info.value.code, info.value.stream_id, info.value.is_connection_error) == (FSIZE, 0, True)
    assert "FRAME_SIZE_ERROR (connection)" in str(info.value)


def test_max_frame_size_can_be_raised(fr):
    payload = b"d" * 20_000
    wire = hdr(len(payload), F.DATA, 0, 1) + payload
    assert error_of(fr, wire)[:2] == (FSIZE, 0)
    assert read_whole(fr, wire, max_frame_size=20_000) == [expect(F.DATA, 0, 1, 20_000, data=payload)]
    reader = fr.FrameReader()
    reader.max_frame_size = 2**24 - 1
    reader.feed(wire)
    assert drain(fr, reader) == [expect(F.DATA, 0, 1, 20_000, data=payload)]
    # Header blocks split at the larger size.
    wire = fr.headers_frames(5, BIG_BLOCK, False, 20_000)
    assert len(wire) == len(BIG_BLOCK) + 2 * 9
    assert read_all_ways(fr, wire, max_frame_size=20_000) == [expect(F.HEADERS, 4, 5, len(BIG_BLOCK), data=BIG_BLOCK)]


def test_boundary_values_are_accepted(fr):
    wire = (
        fr.settings_frame([(4, 2**31 - 1), (5, 16384), (5, 2**24 - 1), (2, 1), (8, 0), (9, 0)])
        + hdr(16384, F.DATA, 0, 1) + bytes(16384)
        + hdr(3, F.DATA, 8, 1) + b"\x02\x00\x00"
        + hdr(8, F.HEADERS, 0x2C, 1) + b"\x02\x00\x00\x00\x03\x00" + b"\x00\x00"
        + hdr(8, F.GOAWAY, 0, 0) + bytes(8)
    )
    frames = read_all_ways(fr, wire)
    assert [f["type"] for f in frames] == [F.SETTINGS, F.DATA, F.DATA, F.HEADERS, F.GOAWAY]
    assert frames[2]["data"] == b"" and frames[3]["data"] == b""


def test_stream_errors_leave_the_reader_usable(fr):
    reader = fr.FrameReader()
    reader.feed(
        VIOLATIONS["window_update-0-stream"][0] + VIOLATIONS["priority-length-4"][0]
        + VIOLATIONS["priority-self-dependency"][0] + fr.data_frame(1, b"after")
    )
    for stream_id, code in ((9, PROTO), (3, FSIZE), (3, PROTO)):
        with pytest.raises(fr.H2Error) as info:
            reader.next_frame()
        assert (info.value.stream_id, info.value.code, info.value.is_connection_error) == (stream_id, code, False)
        assert f"(stream {stream_id})" in str(info.value)
    assert fields(reader.next_frame()) == expect(F.DATA, 0, 1, 5, data=b"after")
    assert reader.next_frame() is fr.NEED_MORE


def test_connection_errors_are_sticky(fr):
    reader = fr.FrameReader()
    reader.feed(fr.data_frame(1, b"ok") + VIOLATIONS["settings-on-stream"][0] + fr.ping(b"12345678"))
    assert fields(reader.next_frame())["data"] == b"ok"
    with pytest.raises(fr.H2Error) as first:
        reader.next_frame()
    reader.feed(fr.ping(b"abcdefgh"))
    for _ in range(2):
        with pytest.raises(fr.H2Error) as again:
            reader.next_frame()
        assert again.value is first.value


# ---------------------------------------------------------------- header block bounds


def test_continuation_flood_is_cut(fr):
    # Empty CONTINUATION frames cost their 9-octet header against the bound.
    wire = hdr(1, F.HEADERS, 0, 1) + b"x" + hdr(0, F.CONTINUATION, 0, 1) * 200
    code, stream_id, reason = error_of(fr, wire, max_header_block_size=1000)
    assert (code, stream_id, reason) == (CALM, 0, "header block too large")
    # HEADERS (10 octets) and 109 CONTINUATION frames make 991 octets: that fits.
    ok = hdr(1, F.HEADERS, 0, 1) + b"x" + hdr(0, F.CONTINUATION, 0, 1) * 108 + hdr(0, F.CONTINUATION, 4, 1)
    assert read_whole(fr, ok, max_header_block_size=1000) == [expect(F.HEADERS, 4, 1, 1, data=b"x")]


def test_large_header_block_is_cut_before_its_payload_arrives(fr):
    reader = fr.FrameReader(max_header_block_size=20_000)
    reader.feed(hdr(16384, F.HEADERS, 0, 1) + bytes(16384) + hdr(16384, F.CONTINUATION, 0, 1))
    with pytest.raises(fr.H2Error) as info:
        reader.next_frame()
    assert (info.value.code, info.value.stream_id) == (CALM, 0)
    reader = fr.FrameReader(max_header_block_size=10_000)
    reader.feed(hdr(16384, F.HEADERS, 4, 1))
    with pytest.raises(fr.H2Error) as info:
        reader.next_frame()
    assert (info.value.code, info.value.stream_id) == (CALM, 0)
    # Inside the bound the same block is fine.
    block = bytes(30_000)
    assert read_whole(fr, fr.headers_frames(1, block), max_header_block_size=30_000 + 18) == [
        expect(F.HEADERS, 4, 1, 30_000, data=block)
    ]
    assert error_of(fr, fr.headers_frames(1, block), max_header_block_size=30_000 + 17)[:2] == (CALM, 0)


def test_pending_header_block_counts_as_buffered(fr):
    reader = fr.FrameReader()
    reader.feed(hdr(3, F.HEADERS, 0, 1) + b"abc")
    assert reader.next_frame() is fr.NEED_MORE
    assert reader.buffered == 12
    reader.feed(hdr(2, F.CONTINUATION, 4, 1) + b"de")
    assert fields(reader.next_frame()) == expect(F.HEADERS, 4, 1, 5, data=b"abcde")
    assert reader.buffered == 0


# ---------------------------------------------------------------- preface and first frame


def test_check_preface(fr):
    assert fr.check_preface(fr.PREFACE) == 24
    assert fr.check_preface(fr.PREFACE + b"\x00\x00") == 24
    for k in range(24):
        assert fr.check_preface(fr.PREFACE[:k]) is fr.NEED_MORE
    for bad in (b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"PRX", b"\x16\x03\x01"):
        with pytest.raises(fr.H2Error) as info:
            fr.check_preface(bad)
        assert (info.value.code, info.value.stream_id) == (PROTO, 0)
    with pytest.raises(TypeError):
        fr.check_preface(None)


def test_reader_checks_preface_and_first_settings(fr):
    assert error_of(fr, b"GET / HTTP/1.1\r\n", expect_preface=True) == (PROTO, 0, "invalid connection preface")
    # The mismatch is seen at the first wrong octet, not after 24.
    reader = fr.FrameReader(expect_preface=True)
    reader.feed(b"G")
    with pytest.raises(fr.H2Error):
        reader.next_frame()
    reader = fr.FrameReader(expect_preface=True)
    reader.feed(fr.PREFACE[:10])
    assert reader.next_frame() is fr.NEED_MORE
    assert error_of(fr, fr.PREFACE + fr.ping(b"12345678"), expect_preface=True, expect_settings=True) == (
        PROTO, 0, "first frame is not settings",
    )
    assert error_of(fr, fr.settings_frame(ack=True), expect_settings=True)[:2] == (PROTO, 0)
    assert read_all_ways(fr, fr.settings_frame([(3, 10)]) + fr.ping(b"12345678"), expect_settings=True) == [
        expect(F.SETTINGS, 0, 0, 6, settings=[(3, 10)]), expect(F.PING, 0, 0, 8, data=b"12345678"),
    ]


def test_feed_accepts_bytes_like_and_ignores_empty(fr):
    reader = fr.FrameReader()
    reader.feed(b"")
    reader.feed(bytearray(fr.ping(b"12345678")[:5]))
    reader.feed(memoryview(fr.ping(b"12345678")[5:]))
    assert fields(reader.next_frame())["data"] == b"12345678"
    with pytest.raises(TypeError):
        reader.feed(None)


# ---------------------------------------------------------------- hypothesis: round trips and fuzzing

SIDS = st.integers(1, MAX_SID)
KNOWN_SETTINGS = st.one_of(
    st.tuples(st.sampled_from([1, 3, 6]), st.integers(0, 2**32 - 1)),
    st.tuples(st.sampled_from([2, 8, 9]), st.integers(0, 1)),
    st.tuples(st.just(4), st.integers(0, 2**31 - 1)),
    st.tuples(st.just(5), st.integers(16384, 2**24 - 1)),
)
UNKNOWN_SETTINGS = st.tuples(st.integers(0, 0xFFFF).filter(lambda i: i not in (1, 2, 3, 4, 5, 6, 8, 9)),
                             st.integers(0, 2**32 - 1))


@st.composite
def frame_specs(draw):
    """One frame (or header block) as (wire bytes, expected frames)."""
    kind = draw(st.sampled_from(
        ["data", "data-padded", "headers", "headers-split", "priority", "rst", "settings", "ack", "push",
         "ping", "goaway", "window", "unknown"]
    ))
    sid = draw(SIDS)
    if kind == "data":
        data, end = draw(st.binary(max_size=64)), draw(st.booleans())
        return F.data_frame(sid, data, end), [expect(F.DATA, int(end), sid, len(data), data=data)]
    if kind == "data-padded":
        data, pad = draw(st.binary(max_size=32)), draw(st.integers(0, 40))
        wire = F.raw_frame(F.DATA, 8, sid, bytes([pad]) + data + bytes(pad))
        return wire, [expect(F.DATA, 8, sid, 1 + len(data) + pad, data=data)]
    if kind == "headers":
        block, end = draw(st.binary(max_size=64)), draw(st.booleans())
        return F.headers_frames(sid, block, end), [expect(F.HEADERS, 4 | int(end), sid, len(block), data=block)]
    if kind == "headers-split":
        pieces = draw(st.lists(st.binary(max_size=20), min_size=2, max_size=5))
        wire = F.raw_frame(F.HEADERS, 1, sid, pieces[0])
        for i, piece in enumerate(pieces[1:], 2):
            wire += F.raw_frame(F.CONTINUATION, 4 if i == len(pieces) else 0, sid, piece)
        block = b"".join(pieces)
        return wire, [expect(F.HEADERS, 5, sid, len(block), data=block)]
    if kind == "priority":
        dep = draw(st.integers(0, MAX_SID).filter(lambda d: d != sid))
        weight, excl = draw(st.integers(1, 256)), draw(st.booleans())
        return F.priority(sid, dep, weight, excl), [
            expect(F.PRIORITY, 0, sid, 5, depends_on=dep, weight=weight, exclusive=excl)
        ]
    if kind == "rst":
        code = draw(st.integers(0, 2**32 - 1))
        return F.rst_stream(sid, code), [expect(F.RST_STREAM, 0, sid, 4, error_code=code)]
    if kind == "settings":
        pairs = draw(st.lists(st.one_of(KNOWN_SETTINGS, UNKNOWN_SETTINGS), max_size=6))
        known = [p for p in pairs if p[0] in (1, 2, 3, 4, 5, 6, 8, 9)]
        return F.settings_frame(pairs), [expect(F.SETTINGS, 0, 0, 6 * len(pairs), settings=known)]
    if kind == "ack":
        return F.settings_frame(ack=True), [expect(F.SETTINGS, 1, 0, 0, settings=[])]
    if kind == "push":
        block, promised = draw(st.binary(max_size=64)), draw(SIDS)
        return F.push_promise_frames(sid, promised, block), [
            expect(F.PUSH_PROMISE, 4, sid, 4 + len(block), promised_stream_id=promised, data=block)
        ]
    if kind == "ping":
        opaque, ack = draw(st.binary(min_size=8, max_size=8)), draw(st.booleans())
        return F.ping(opaque, ack), [expect(F.PING, int(ack), 0, 8, data=opaque)]
    if kind == "goaway":
        last, code, debug = draw(st.integers(0, MAX_SID)), draw(st.integers(0, 2**32 - 1)), draw(st.binary(max_size=30))
        return F.goaway(last, code, debug), [
            expect(F.GOAWAY, 0, 0, 8 + len(debug), last_stream_id=last, error_code=code, data=debug)
        ]
    if kind == "window":
        sid = draw(st.integers(0, MAX_SID))
        inc = draw(st.integers(1, 2**31 - 1))
        return F.window_update(sid, inc), [expect(F.WINDOW_UPDATE, 0, sid, 4, increment=inc)]
    ftype, flags = draw(st.integers(10, 255)), draw(st.integers(0, 255))
    payload, sid = draw(st.binary(max_size=40)), draw(st.integers(0, MAX_SID))
    return F.raw_frame(ftype, flags, sid, payload), [expect(ftype, flags, sid, len(payload), data=payload)]


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_specs(), min_size=1, max_size=12), st.lists(st.integers(0, 10_000), max_size=12))
def test_random_frame_sequences_round_trip(specs, cuts):
    wire = b"".join(w for w, _ in specs)
    expected = [f for _, frames in specs for f in frames]
    reader = h2frame.FrameReader()
    got = []
    for piece in split(wire, cuts):
        reader.feed(piece)
        got += drain(h2frame, reader)
    assert got == expected
    assert reader.buffered == 0
    assert read_whole(pure, wire) == expected


# A valid-looking frame header over a random payload reaches far more
# validation code than random bytes alone.
RANDOM_FRAMES = st.builds(
    lambda ftype, flags, sid, payload: hdr(len(payload), ftype, flags, sid) + payload,
    st.integers(0, 12), st.integers(0, 255), st.sampled_from([0, 1, 3, 0x80000001, MAX_SID]),
    st.binary(max_size=24),
)
FUZZ_INPUT = st.one_of(
    st.binary(max_size=200),
    st.lists(RANDOM_FRAMES, min_size=1, max_size=8).map(b"".join),
    st.lists(st.one_of(RANDOM_FRAMES, st.binary(max_size=12)), min_size=1, max_size=8).map(b"".join),
)


def fuzz_outcome(mod, pieces, **kw):
    reader = mod.FrameReader(**kw)
    outcome = []
    for piece in pieces:
        reader.feed(piece)
        while True:
            try:
                frame = reader.next_frame()
            except mod.H2Error as err:
                assert err.code in F.ERROR_CODE_NAMES and isinstance(err.reason, str)
                outcome.append(("error", err.code, err.stream_id, err.reason))
                if err.stream_id == 0:
                    with pytest.raises(mod.H2Error):
                        reader.next_frame()
                    return outcome
                continue
            if frame is mod.NEED_MORE:
                break
            assert 0 <= frame.stream_id <= MAX_SID and frame.length <= reader.max_frame_size or frame.type in (1, 5)
            outcome.append(fields(frame))
    return outcome


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FUZZ_INPUT, st.lists(st.integers(0, 300), max_size=6), st.booleans())
def test_arbitrary_bytes_parse_or_raise_h2error(data, cuts, preface):
    kw = {"expect_preface": preface, "max_header_block_size": 100}
    if preface:
        data = h2frame.PREFACE + data
    pieces = split(data, cuts)
    compiled = fuzz_outcome(h2frame, pieces, **kw)
    assert fuzz_outcome(pure, pieces, **kw) == compiled
    assert fuzz_outcome(h2frame, [data], **kw) == compiled
