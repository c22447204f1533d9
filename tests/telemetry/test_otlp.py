"""OTLP encoding, decoded with the official opentelemetry-proto messages."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from proxy.telemetry import otlp


def _span(**overrides):
    values = dict(trace_id=bytes(range(1, 17)), span_id=bytes(range(21, 29)), parent_id=bytes(range(31, 39)),
                  trace_state=b"congo=t61rcWkgMzE", flags=0x301, name="GET", kind=otlp.KIND_SERVER,
                  start_ns=1_700_000_000_123_456_789, end_ns=1_700_000_000_223_456_789,
                  attributes=[("http.request.method", "GET"), ("http.response.status_code", 503),
                              ("server.port", 8080), ("flag", True), ("neg", -5), ("utf", "caf\u00e9")],
                  status_code=otlp.STATUS_ERROR, status_message="upstream failed")
    values.update(overrides)
    return otlp.SpanRecord(**values)


def _decode(payload: bytes) -> ExportTraceServiceRequest:
    msg = ExportTraceServiceRequest()
    msg.ParseFromString(payload)
    return msg


def test_export_request_decodes_with_opentelemetry_proto():
    resource = otlp.encode_resource([("service.name", "meshproxy"), ("k8s.pod.name", "web-1")])
    payload = otlp.export_request(resource, [_span(), _span(kind=otlp.KIND_CLIENT, parent_id=b"", trace_state=b"",
                                                           status_code=otlp.STATUS_UNSET, status_message="")],
                                  "0.1.0")
    msg = _decode(payload)
    (rs,) = msg.resource_spans
    assert {a.key: a.value.string_value for a in rs.resource.attributes} == {
        "service.name": "meshproxy", "k8s.pod.name": "web-1"}
    (ss,) = rs.scope_spans
    assert ss.scope.name == "meshproxy" and ss.scope.version == "0.1.0"
    first, second = ss.spans
    assert first.trace_id == bytes(range(1, 17)) and first.span_id == bytes(range(21, 29))
    assert first.parent_span_id == bytes(range(31, 39)) and first.trace_state == "congo=t61rcWkgMzE"
    assert first.flags == 0x301
    assert first.name == "GET" and first.kind == Span.SPAN_KIND_SERVER
    assert first.start_time_unix_nano == 1_700_000_000_123_456_789
    assert first.end_time_unix_nano == 1_700_000_000_223_456_789
    attrs = {a.key: a.value for a in first.attributes}
    assert attrs["http.request.method"].string_value == "GET"
    assert attrs["http.response.status_code"].int_value == 503
    assert attrs["flag"].bool_value is True
    assert attrs["neg"].int_value == -5
    assert attrs["utf"].string_value == "caf\u00e9"
    assert first.status.code == Status.STATUS_CODE_ERROR and first.status.message == "upstream failed"
    assert second.kind == Span.SPAN_KIND_CLIENT and second.parent_span_id == b""
    assert second.status.code == Status.STATUS_CODE_UNSET


def test_empty_batch_is_a_valid_request():
    msg = _decode(otlp.export_request(otlp.encode_resource([]), [], "x"))
    assert len(msg.resource_spans) == 1 and len(msg.resource_spans[0].scope_spans[0].spans) == 0
