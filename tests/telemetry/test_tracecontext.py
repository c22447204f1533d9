"""Trace context propagation: each format valid, sampled or not, malformed; the order; writing the span id back.

The expected values come from the formats' specifications and are checked
against OpenTelemetry's own propagators (W3C and B3) where one exists.
"""

from __future__ import annotations

import base64

import pytest

from proxy.telemetry import tracecontext as tc

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
NEW = bytes.fromhex("1122334455667788")


def _fields(**named: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in named.items()]


# ---------------------------------------------------------------- W3C


def test_w3c_sampled():
    ctx = tc.extract(_fields(traceparent=f"00-{TRACE}-{PARENT}-01", tracestate="congo=t61rcWkgMzE"))
    assert ctx is not None and ctx.format == tc.W3C
    assert ctx.trace_id.hex() == TRACE and ctx.parent_id.hex() == PARENT
    assert ctx.sampled and ctx.trace_state == b"congo=t61rcWkgMzE"
    assert ctx.forward(NEW) == [(b"traceparent", f"00-{TRACE}-{NEW.hex()}-01".encode())]


def test_w3c_unsampled_is_parsed_but_not_sampled():
    ctx = tc.extract(_fields(traceparent=f"00-{TRACE}-{PARENT}-00"))
    assert ctx is not None and not ctx.sampled


def test_w3c_higher_version_is_read_as_00():
    ctx = tc.extract(_fields(traceparent=f"cc-{TRACE}-{PARENT}-01-what-the-future-holds"))
    assert ctx is not None and ctx.sampled
    assert ctx.forward(NEW)[0][1].startswith(b"00-")


@pytest.mark.parametrize("value", [
    f"00-{TRACE}-{PARENT}-01-extra",           # version 00 has exactly four fields
    f"ff-{TRACE}-{PARENT}-01",                  # version ff is invalid
    f"00-{TRACE.upper()}-{PARENT}-01",          # upper-case hex
    f"00-{'0' * 32}-{PARENT}-01",               # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",                # all-zero parent id
    f"00-{TRACE[:-1]}-{PARENT}-01",             # short trace id
    f"00-{TRACE}-{PARENT}-0x",                  # bad flags
    f"00_{TRACE}_{PARENT}_01",                  # separators
    "",
    "garbage",
    f"cc-{TRACE}-{PARENT}-01.",                 # a later version still needs a dash after the flags
])
def test_w3c_malformed(value):
    assert tc.extract(_fields(traceparent=value)) is None


def test_w3c_twice_is_malformed():
    value = f"00-{TRACE}-{PARENT}-01"
    assert tc.extract([(b"traceparent", value.encode()), (b"traceparent", value.encode())]) is None


def test_w3c_matches_opentelemetry_propagator():
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
    otel = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    ours = tc.extract(_fields(**carrier))
    assert ours is not None
    assert int.from_bytes(ours.trace_id, "big") == otel.trace_id
    assert int.from_bytes(ours.parent_id, "big") == otel.span_id
    # And what we write back is what OpenTelemetry reads as our span.
    written = dict((k.decode(), v.decode()) for k, v in ours.forward(NEW))
    child = trace.get_current_span(TraceContextTextMapPropagator().extract(written)).get_span_context()
    assert child.trace_id == otel.trace_id and child.span_id == int.from_bytes(NEW, "big") and child.trace_flags == 1


# ---------------------------------------------------------------- grpc-trace-bin


def _grpc_bin(trace: str, span: str, options: int | None, pad: bool = True) -> str:
    blob = b"\x00\x00" + bytes.fromhex(trace) + b"\x01" + bytes.fromhex(span)
    if options is not None:
        blob += b"\x02" + bytes((options,))
    text = base64.b64encode(blob).decode()
    return text if pad else text.rstrip("=")


@pytest.mark.parametrize("pad", [True, False])
def test_grpc_trace_bin_sampled(pad):
    ctx = tc.extract(_fields(grpc_trace_bin=_grpc_bin(TRACE, PARENT, 1, pad)))
    assert ctx is not None and ctx.format == tc.B3_GRPC and ctx.sampled
    assert ctx.trace_id.hex() == TRACE and ctx.parent_id.hex() == PARENT
    ((name, value),) = ctx.forward(NEW)
    assert name == b"grpc-trace-bin"
    assert value.decode() == _grpc_bin(TRACE, NEW.hex(), 1, pad)  # same padding as it came


def test_grpc_trace_bin_unsampled_and_without_options():
    assert not tc.extract(_fields(grpc_trace_bin=_grpc_bin(TRACE, PARENT, 0))).sampled
    assert not tc.extract(_fields(grpc_trace_bin=_grpc_bin(TRACE, PARENT, None))).sampled


def test_grpc_trace_bin_unknown_field_ends_parse():
    blob = base64.b64decode(_grpc_bin(TRACE, PARENT, 1)) + b"\x07whatever"
    ctx = tc.extract([(b"grpc-trace-bin", base64.b64encode(blob))])
    assert ctx is not None and ctx.sampled


@pytest.mark.parametrize("value", [
    "not base64!",
    base64.b64encode(b"\x01" + bytes(28)).decode(),                       # version 1
    base64.b64encode(b"\x00\x00" + bytes.fromhex(TRACE)).decode(),         # no span id
    base64.b64encode(b"\x00\x00" + bytes.fromhex(TRACE) + b"\x01\x12").decode(),  # truncated span id
    _grpc_bin("0" * 32, PARENT, 1),                                        # zero trace id
    "",
])
def test_grpc_trace_bin_malformed(value):
    assert tc.extract(_fields(grpc_trace_bin=value)) is None


# ---------------------------------------------------------------- B3


def test_b3_multi_sampled_and_parent_rewritten():
    fields = _fields(x_b3_traceid=TRACE, x_b3_spanid=PARENT, x_b3_sampled="1", x_b3_parentspanid="0102030405060708")
    ctx = tc.extract(fields)
    assert ctx is not None and ctx.format == tc.B3_MULTI and ctx.sampled
    assert ctx.forward(NEW) == [(b"x-b3-spanid", NEW.hex().encode()), (b"x-b3-parentspanid", PARENT.encode())]


def test_b3_multi_64_bit_trace_id_is_padded():
    ctx = tc.extract(_fields(x_b3_traceid="a3ce929d0e0e4736", x_b3_spanid=PARENT, x_b3_sampled="1"))
    assert ctx is not None and ctx.trace_id.hex() == "0000000000000000a3ce929d0e0e4736"
    assert ctx.forward(NEW) == [(b"x-b3-spanid", NEW.hex().encode())]  # no parent field sent: none added


@pytest.mark.parametrize("sampled,flags,expected", [
    ("1", None, True), ("true", None, True), ("0", None, False), (None, None, False), (None, "1", True),
])
def test_b3_multi_sampling(sampled, flags, expected):
    named = {"x_b3_traceid": TRACE, "x_b3_spanid": PARENT}
    if sampled is not None:
        named["x_b3_sampled"] = sampled
    if flags is not None:
        named["x_b3_flags"] = flags
    ctx = tc.extract(_fields(**named))
    assert ctx is not None and ctx.sampled is expected


@pytest.mark.parametrize("named", [
    {"x_b3_traceid": TRACE, "x_b3_spanid": "xyz"},
    {"x_b3_traceid": "123", "x_b3_spanid": PARENT},
    {"x_b3_spanid": PARENT, "x_b3_sampled": "1"},                 # no trace id
    {"x_b3_traceid": TRACE, "x_b3_spanid": PARENT, "x_b3_sampled": "yes"},
])
def test_b3_multi_malformed(named):
    assert tc.extract(_fields(**named)) is None


def test_b3_multi_matches_opentelemetry_propagator():
    from opentelemetry import trace
    from opentelemetry.propagators.b3 import B3MultiFormat

    carrier = {"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "1"}
    otel = trace.get_current_span(B3MultiFormat().extract(carrier)).get_span_context()
    ours = tc.extract([(k.encode(), v.encode()) for k, v in carrier.items()])
    assert int.from_bytes(ours.trace_id, "big") == otel.trace_id
    assert int.from_bytes(ours.parent_id, "big") == otel.span_id and otel.trace_flags.sampled


@pytest.mark.parametrize("value,sampled,written", [
    (f"{TRACE}-{PARENT}-1", True, f"{TRACE}-{NEW.hex()}-1"),
    (f"{TRACE}-{PARENT}-d", True, f"{TRACE}-{NEW.hex()}-d"),
    (f"{TRACE}-{PARENT}-0", False, f"{TRACE}-{NEW.hex()}-0"),
    (f"{TRACE}-{PARENT}", False, f"{TRACE}-{NEW.hex()}"),
    (f"{TRACE}-{PARENT}-1-0102030405060708", True, f"{TRACE}-{NEW.hex()}-1-{PARENT}"),
])
def test_b3_single(value, sampled, written):
    ctx = tc.extract(_fields(b3=value))
    assert ctx is not None and ctx.format == tc.B3_SINGLE and ctx.sampled is sampled
    assert ctx.forward(NEW) == [(b"b3", written.encode())]


@pytest.mark.parametrize("value", ["0", "1", "d", f"{TRACE}-{PARENT}-x", f"{TRACE}-zz", f"{TRACE}-{PARENT}-1-nope",
                                   f"{TRACE}-{PARENT}-1-{PARENT}-more"])
def test_b3_single_malformed_or_decision_only(value):
    assert tc.extract(_fields(b3=value)) is None


# ---------------------------------------------------------------- order and writing back


def test_order_w3c_then_grpc_then_b3_multi_then_b3_single():
    w3c = ("traceparent", f"00-{TRACE}-{PARENT}-01")
    grpc = ("grpc-trace-bin", _grpc_bin(TRACE, PARENT, 1))
    multi = [("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT), ("x-b3-sampled", "1")]
    single = ("b3", f"{TRACE}-{PARENT}-1")

    def fmt(items):
        return tc.extract([(k.encode(), v.encode()) for k, v in items]).format

    assert fmt([single, *multi, grpc, w3c]) == tc.W3C
    assert fmt([single, *multi, grpc]) == tc.B3_GRPC
    assert fmt([single, *multi]) == tc.B3_MULTI
    assert fmt([single]) == tc.B3_SINGLE
    # A malformed earlier format falls through to the next, as Linkerd's does.
    assert fmt([("traceparent", "bogus"), single]) == tc.B3_SINGLE


def test_no_context():
    assert tc.extract([(b"accept", b"*/*"), (b"tracestate", b"a=b")]) is None
    assert tc.extract([]) is None


def test_replace_h1_fields_keeps_every_other_byte():
    raw = (b"GET /x HTTP/1.1\r\nHost: a\r\nTraceParent:  00-old\r\nX-Other: traceparent: no\r\n"
           b"traceparent: second\r\n\r\n")
    out = tc.replace_h1_fields(raw, [(b"traceparent", b"00-new")])
    assert out == (b"GET /x HTTP/1.1\r\nHost: a\r\nTraceParent: 00-new\r\nX-Other: traceparent: no\r\n"
                   b"traceparent: second\r\n\r\n")


def test_replace_h2_fields_in_place():
    fields = [(b":method", b"GET"), (b"x-b3-spanid", b"old"), (b"accept", b"*/*")]
    assert tc.replace_h2_fields(fields, [(b"x-b3-spanid", b"new")]) == [
        (b":method", b"GET"), (b"x-b3-spanid", b"new"), (b"accept", b"*/*")]
