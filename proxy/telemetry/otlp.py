"""OTLP trace export messages, sans-IO: finished spans -> ``ExportTraceServiceRequest`` protobuf bytes.

Hand-written protobuf encoding of the few messages a proxy sends
(opentelemetry/proto/collector/trace/v1 and trace/v1), so the proxy needs no
protobuf runtime; the tests decode the output with the official
``opentelemetry-proto`` package. The wire format itself is pbwire's.
"""

import struct

from proxy.telemetry.pbwire import len_field as _len_field
from proxy.telemetry.pbwire import str_field as _str_field
from proxy.telemetry.pbwire import varint as _varint

# Span.SpanKind
KIND_SERVER = 2
KIND_CLIENT = 3
# Status.StatusCode
STATUS_UNSET = 0
STATUS_ERROR = 2
# Span.flags: the low byte is the W3C trace flags; these say the parent is remote.
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200

GRPC_PATH = b"/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HTTP_PATH = "/v1/traces"
SCOPE_NAME = b"meshproxy"


class SpanRecord:
    """One finished span, as the tracer hands it to the exporter (attributes: ``[(str, str | int)]``)."""

    __slots__ = ("trace_id", "span_id", "parent_id", "trace_state", "flags", "name", "kind", "start_ns",
                 "end_ns", "attributes", "status_code", "status_message")

    def __init__(self, trace_id, span_id, parent_id, trace_state, flags, name, kind, start_ns, end_ns,
                 attributes, status_code=STATUS_UNSET, status_message=""):
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.trace_state = trace_state
        self.flags = flags
        self.name = name
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.status_code = status_code
        self.status_message = status_message


# An encoded attribute (the Span.attributes field, tag and length included) per (key, value): most repeat from
# span to span (method, direction, addresses, status), so a batch encodes each once. Bounded: cleared when full.
_ATTR_CACHE: dict = {}
_ATTR_CACHE_LIMIT = 4096


def _key_value(key, value):
    if isinstance(value, bool):
        any_value = b"\x10" + (b"\x01" if value else b"\x00")
    elif isinstance(value, int):
        any_value = b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64, two's complement
    else:
        any_value = _str_field(1, value)
    return _str_field(1, key) + _len_field(2, any_value)


def _attribute(key, value):
    """Span field 9 (a KeyValue) for one attribute, from the cache when seen before."""
    item = (key, value, type(value))  # True and 1 are equal keys otherwise
    encoded = _ATTR_CACHE.get(item)
    if encoded is None:
        if len(_ATTR_CACHE) >= _ATTR_CACHE_LIMIT:
            _ATTR_CACHE.clear()
        encoded = _ATTR_CACHE[item] = _len_field(9, _key_value(key, value))
    return encoded


_PACK_Q = struct.Struct("<Q").pack
_PACK_I = struct.Struct("<I").pack


def encode_span(span):
    out = [b"\x0a\x10", span.trace_id, b"\x12\x08", span.span_id]  # 16- and 8-byte ids: fixed headers
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        out = [_len_field(1, span.trace_id), _len_field(2, span.span_id)]
    if span.trace_state:
        out.append(_str_field(3, span.trace_state))
    if span.parent_id:
        out.append(_len_field(4, span.parent_id))
    out.append(_str_field(5, span.name))
    out.append(b"\x30" + _varint(span.kind))
    out.append(b"\x39" + _PACK_Q(span.start_ns))
    out.append(b"\x41" + _PACK_Q(span.end_ns))
    for key, value in span.attributes:
        out.append(_attribute(key, value))
    status = b""
    if span.status_message:
        status += _str_field(2, span.status_message)
    if span.status_code:
        status += b"\x18" + _varint(span.status_code)
    if status:
        out.append(_len_field(15, status))
    out.append(b"\x85\x01" + _PACK_I(span.flags))  # field 16, fixed32: a two-byte tag
    return b"".join(out)


def encode_resource(attributes):
    """A Resource message from ``[(key, value)]``: encoded once per exporter, reused by every request."""
    return b"".join(_len_field(1, _key_value(k, v)) for k, v in attributes)


def export_request(resource, spans, scope_version):
    """``ExportTraceServiceRequest`` bytes: one ResourceSpans (``resource`` from ``encode_resource``) with one
    ScopeSpans holding ``spans``."""
    scope = _str_field(1, SCOPE_NAME) + _str_field(2, scope_version)
    body = [_len_field(1, scope)]
    for span in spans:
        body.append(_len_field(2, encode_span(span)))
    scope_spans = b"".join(body)
    resource_spans = _len_field(1, resource) + _len_field(2, scope_spans)
    return _len_field(1, resource_spans)
