"""Distributed tracing end to end: an SDK-traced client calls an SDK-traced app through two real proxies.

client (opentelemetry-sdk) -> proxy A outbound -> meshed hop -> proxy B inbound -> app (opentelemetry-sdk).
A exports its spans over OTLP/gRPC, B over OTLP/HTTP, to receivers started
here that decode with opentelemetry-proto. The trace must come out as one
chain: client span -> A's CLIENT span -> B's SERVER span -> app span.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import pytest
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from helpers.meshproxy import MeshProxy
from helpers.otel import GrpcCollector, HttpCollector, TracedApp, get, sdk_tracer
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(120)

FAST_EXPORT = {"MESHPROXY_TRACE_BATCH_INTERVAL": "50ms"}


@pytest.fixture(scope="module")
def collectors():
    grpc_collector, http_collector = GrpcCollector(), HttpCollector()
    yield grpc_collector, http_collector
    grpc_collector.stop()
    http_collector.stop()


PROPAGATORS = {"w3c": TraceContextTextMapPropagator, "b3-multi": B3MultiFormat, "b3-single": B3SingleFormat}


@pytest.fixture(scope="module")
def meshes(collectors, tmp_path_factory):
    """``meshes(fmt)``: the app (traced, reading ``fmt``) behind proxy B, reached through proxy A; one per format,
    made on first use."""
    made: dict = {}
    stack = contextlib.ExitStack()

    def get_mesh(fmt: str):
        if fmt not in made:
            made[fmt] = stack.enter_context(_mesh(fmt, collectors, tmp_path_factory.mktemp(f"tracing-{fmt}")))
        return made[fmt]

    with stack:
        yield get_mesh


@contextlib.contextmanager
def _mesh(fmt, collectors, tmp: Path):
    propagator = PROPAGATORS[fmt]()
    grpc_collector, http_collector = collectors
    app = TracedApp(propagator)
    b = MeshProxy(env={"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8", "MESHPROXY_TRACE_COLLECTOR": http_collector.url,
                       "MESHPROXY_TRACE_SERVICE_NAME": "api-proxy", "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=api-1",
                       **FAST_EXPORT}, name="proxy-B", log_path=tmp / "b.log")
    a = None
    try:
        b.start()
        endpoints = tmp / "endpoints.yaml"
        endpoints.write_text(
            "services:\n"
            "  api.traced:80:\n"
            "    endpoints:\n"
            f"      - address: {app.hostport}\n"
            f"        proxy: {b.inbound_hostport}\n"
            "        protocol: http1\n"
        )
        a = MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}",
                           "MESHPROXY_TRACE_COLLECTOR": grpc_collector.url, "OTEL_SERVICE_NAME": "web-proxy",
                           **FAST_EXPORT}, name="proxy-A", log_path=tmp / "a.log")
        a.start()
        yield a, b, app, propagator
    finally:
        if a is not None:
            a.close()
        b.close()
        app.stop()


def _call(a, propagator, path="/hello?x=1"):
    """One request from an SDK-traced client through A: (client span context, its exporter, status, the trace
    fields the app received, the fields the client sent (lower-case names))."""
    from opentelemetry import trace

    tracer, exporter = sdk_tracer("client")
    headers = {"Host": "api.traced:80"}
    with tracer.start_as_current_span("client call", kind=SpanKind.CLIENT) as span:
        propagator.inject(headers, context=trace.set_span_in_context(span))
        status, body = get(a.outbound, path, headers)
    sent = {k.lower(): v for k, v in headers.items()}
    return span.get_span_context(), exporter, status, json.loads(body), sent


@pytest.mark.parametrize("fmt", list(PROPAGATORS))
def test_one_trace_client_outbound_inbound_app(meshes, collectors, fmt):
    a, b, app, propagator = meshes(fmt)
    grpc_collector, http_collector = collectors
    client_ctx, client_exporter, status, received, sent = _call(a, propagator)
    assert status == 200
    trace_id = client_ctx.trace_id.to_bytes(16, "big")
    (a_span,) = grpc_collector.wait_for(trace_id, 1)
    (b_span,) = http_collector.wait_for(trace_id, 1)
    (client_span,) = client_exporter.get_finished_spans()
    app_spans = [s for s in app.exporter.get_finished_spans() if s.context.trace_id == client_ctx.trace_id]
    assert len(app_spans) == 1
    app_span = app_spans[0]

    # The chain: client -> A (outbound, CLIENT) -> B (inbound, SERVER) -> app.
    assert a_span.span.parent_span_id == client_span.context.span_id.to_bytes(8, "big")
    assert b_span.span.parent_span_id == a_span.span.span_id
    assert app_span.parent.span_id == int.from_bytes(b_span.span.span_id, "big")
    assert app_span.parent.is_remote
    assert len({client_span.context.span_id, int.from_bytes(a_span.span.span_id, "big"),
                int.from_bytes(b_span.span.span_id, "big"), app_span.context.span_id}) == 4
    assert a_span.span.kind == Span.SPAN_KIND_CLIENT and b_span.span.kind == Span.SPAN_KIND_SERVER
    # The client's W3C trace flags (sampled; the SDK also sets "random") and HAS_IS_REMOTE | IS_REMOTE.
    flags = int(client_ctx.trace_flags) if "traceparent" in sent else 1
    assert a_span.span.flags == 0x300 | flags and b_span.span.flags == 0x300 | flags

    # Attributes per OpenTelemetry's HTTP conventions, plus direction.
    assert a_span.span.name == "GET" and b_span.span.name == "GET"
    assert a_span.attributes["http.request.method"] == "GET"
    assert a_span.attributes["http.response.status_code"] == 200
    assert a_span.attributes["url.full"] == "http://api.traced/hello?x=1"
    assert a_span.attributes["server.address"] == "api.traced" and a_span.attributes["server.port"] == 80
    assert a_span.attributes["direction"] == "outbound"
    assert a_span.attributes["network.protocol.version"] == "1.1"
    assert b_span.attributes["direction"] == "inbound"
    assert b_span.attributes["url.path"] == "/hello" and b_span.attributes["url.query"] == "x=1"
    assert b_span.attributes["url.scheme"] == "http"
    assert b_span.attributes["http.response.status_code"] == 200
    assert b_span.attributes["client.address"] == "127.0.0.1"
    # The meshed hop is HTTP/2 between the proxies.
    assert b_span.attributes["network.protocol.version"] == "2"

    # Times in ns, nested: B's span lies inside A's.
    assert a_span.span.start_time_unix_nano <= b_span.span.start_time_unix_nano
    assert b_span.span.end_time_unix_nano <= a_span.span.end_time_unix_nano
    assert abs(a_span.span.start_time_unix_nano - time.time_ns()) < 60 * 10**9

    # Resources: OTEL_SERVICE_NAME for A; B's own service name and OTEL_RESOURCE_ATTRIBUTES.
    assert a_span.resource["service.name"] == "web-proxy" and a_span.via == "grpc"
    assert b_span.resource["service.name"] == "api-proxy" and b_span.resource["k8s.pod.name"] == "api-1"
    assert b_span.via == "http"

    # The app got the context in the format the client sent, naming B's span as the parent.
    b_span_hex = b_span.span.span_id.hex()
    if "traceparent" in sent:
        assert received["traceparent"] == f"00-{client_ctx.trace_id:032x}-{b_span_hex}-{flags:02x}"
    elif "b3" in sent:
        assert received["b3"].split("-")[1] == b_span_hex
        assert received["traceparent"] is None
    else:
        assert received["x-b3-spanid"] == b_span_hex and received["x-b3-traceid"] == sent["x-b3-traceid"]


def _marker_then_check_absent(a, propagator, collectors, trace_id: bytes):
    """Spans leave in order: once a later sampled request's spans arrived, an earlier span would have too."""
    client_ctx, _, status, _, _ = _call(a, propagator)
    assert status == 200
    marker = client_ctx.trace_id.to_bytes(16, "big")
    assert len(collectors[0].wait_for(marker, 1)) == 1 and len(collectors[1].wait_for(marker, 1)) == 1
    assert collectors[0].of_trace(trace_id) == [] and collectors[1].of_trace(trace_id) == []


def test_unsampled_context_is_forwarded_untouched_without_spans(meshes, collectors):
    a, _, _, propagator = meshes("w3c")
    value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    status, body = get(a.outbound, "/unsampled", {"Host": "api.traced:80", "traceparent": value})
    assert status == 200 and json.loads(body)["traceparent"] == value
    _marker_then_check_absent(a, propagator, collectors, bytes.fromhex("0af7651916cd43dd8448eb211c80319c"))


@pytest.mark.parametrize("field,value", [
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319d-00000000000000000-01"),
    ("traceparent", "00-0AF7651916CD43DD8448EB211C80319D-b7ad6b7169203331-01"),
    ("b3", "0af7651916cd43dd8448eb211c80319d-nothex-1"),
])
def test_malformed_context_is_forwarded_untouched_without_spans(meshes, collectors, field, value):
    a, _, _, propagator = meshes("w3c")
    status, body = get(a.outbound, "/malformed", {"Host": "api.traced:80", field: value})
    assert status == 200 and json.loads(body)[field] == value
    _marker_then_check_absent(a, propagator, collectors, bytes.fromhex("0af7651916cd43dd8448eb211c80319d"))


def test_proxy_error_span(meshes, collectors):
    """A request the proxy answers itself (a refused connect: 502) still gets a span with the error."""
    a, _, _, _ = meshes("w3c")
    trace_hex = "5af7651916cd43dd8448eb211c80319c"
    value = f"00-{trace_hex}-b7ad6b7169203331-01"
    # A closed port: the connect is refused and the proxy answers 502.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    status, _ = get(a.outbound, "/", {"Host": f"127.0.0.1:{closed}", "traceparent": value})
    assert status in (502, 503)
    (span,) = collectors[0].wait_for(bytes.fromhex(trace_hex), 1)
    assert span.attributes["http.response.status_code"] == status
    assert span.attributes["error.type"] == str(status)
    assert span.span.status.code == 2  # STATUS_CODE_ERROR


# ---------------------------------------------------------------- one proxy, byte for byte


RAW_HEAD = (b"GET /echo-head HTTP/1.1\r\nHost: {host}\r\nUser-Agent: raw/1\r\nX-Case: KeepMe\r\n"
            b"{extra}Accept: */*\r\n\r\n")


def _send_raw(addr, data: bytes) -> bytes:
    with socket.create_connection(addr, timeout=10) as sock:
        sock.sendall(data)
        chunks = b""
        while b"\r\n\r\n" not in chunks:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks += chunk
        return chunks


@pytest.fixture(scope="module")
def single(collectors, tmp_path_factory):
    upstream = HttpUpstream(name="raw-upstream")
    tmp = tmp_path_factory.mktemp("tracing-single")
    proxy = MeshProxy(env={"MESHPROXY_TRACE_COLLECTOR": collectors[1].url, **FAST_EXPORT}, name="proxy-single",
                      log_path=tmp / "p.log")
    proxy.start()
    yield proxy, upstream
    proxy.close()
    upstream.stop()


def test_no_context_no_span_and_unchanged_byte_for_byte(single, collectors):
    proxy, upstream = single
    before = proxy.metrics()
    head = RAW_HEAD.replace(b"{host}", upstream.hostport.encode()).replace(b"{extra}", b"")
    assert _send_raw(proxy.outbound, head).startswith(b"HTTP/1.1 200")
    assert upstream.requests[-1].head.raw == head
    # Traced: exactly the span id differs, in place, same spelling of the field name.
    trace_hex, parent_hex = "6af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traced = RAW_HEAD.replace(b"{host}", upstream.hostport.encode()).replace(
        b"{extra}", f"TraceParent: 00-{trace_hex}-{parent_hex}-01\r\n".encode())
    assert _send_raw(proxy.outbound, traced).startswith(b"HTTP/1.1 200")
    got = upstream.requests[-1].head.raw
    (span,) = collectors[1].wait_for(bytes.fromhex(trace_hex), 1)
    assert got == traced.replace(parent_hex.encode(), span.span.span_id.hex().encode())
    # One span exported in all: the request without context made none (it went first, so a span of
    # its own would have been exported with or before the traced one).
    deadline = time.monotonic() + 10
    while proxy.metrics().get("trace_spans_exported_total") == before.get("trace_spans_exported_total"):
        assert time.monotonic() < deadline, "the proxy never counted its export"
        time.sleep(0.05)
    time.sleep(0.3)
    assert proxy.metrics().get("trace_spans_exported_total") - before.get("trace_spans_exported_total") == 1


def test_dropped_spans_are_counted(make_proxy, make_upstream):
    """A collector that is down: spans are dropped and counted, requests never wait for it."""
    upstream = make_upstream(name="drop-upstream")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    proxy = make_proxy(env={"MESHPROXY_TRACE_COLLECTOR": f"http://127.0.0.1:{dead}",
                            "MESHPROXY_TRACE_MAX_BUFFERED_SPANS": "3", "MESHPROXY_TRACE_BATCH_SIZE": "100",
                            "MESHPROXY_TRACE_BATCH_INTERVAL": "2s"})
    for i in range(5):
        value = f"00-7af7651916cd43dd8448eb211c8031{i:02x}-b7ad6b7169203331-01"
        status, _ = get(proxy.outbound, "/", {"Host": upstream.hostport, "traceparent": value})
        assert status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = proxy.metrics()
        if m.get("trace_spans_dropped_total", reason="export_failed") >= 3:
            break
        time.sleep(0.1)
    assert m.get("trace_spans_dropped_total", reason="buffer_full") == 2
    assert m.get("trace_spans_dropped_total", reason="export_failed") == 3
    assert m.get("trace_spans_exported_total") == 0
    text = proxy.admin_request("GET", "/metrics")[2].decode()
    assert "# TYPE trace_spans_dropped_total counter" in text and "# HELP trace_spans_dropped_total" in text
