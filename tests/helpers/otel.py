"""OpenTelemetry for the tracing tests: OTLP receivers (gRPC and HTTP) and an app instrumented with the SDK.

The receivers decode with the official ``opentelemetry-proto`` messages and
keep every span with its resource; the app and the client trace with the
official ``opentelemetry-sdk`` into in-memory exporters, so a test compares
real ids end to end.
"""

from __future__ import annotations

import http.client
import json
import ssl
import tempfile
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


class ReceivedSpan:
    """A span as a collector got it: the protobuf Span plus its resource's attributes and the transport."""

    def __init__(self, span: Any, resource: dict[str, str], via: str) -> None:
        self.span = span
        self.resource = resource
        self.via = via
        self.attributes = {a.key: _any(a.value) for a in span.attributes}

    def __repr__(self) -> str:
        return f"<ReceivedSpan {self.span.name} kind={self.span.kind} via={self.via} {self.attributes}>"


def _any(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1, no access log; ``reply`` sends a whole answer."""

    protocol_version = "HTTP/1.1"

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _HttpServer:
    """A threaded HTTP server on a free loopback port, serving ``handler`` until ``stop``."""

    def serve(self, handler: type[_Handler]) -> int:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Store:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.cond = threading.Condition()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, via: str) -> None:
        with self.cond:
            self.requests += 1
            for rs in request.resource_spans:
                resource = {a.key: _any(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append(ReceivedSpan(span, resource, via))
            self.cond.notify_all()

    def wait_for(self, trace_id: bytes, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [s for s in self.spans if s.span.trace_id == trace_id]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self.cond.wait(left)

    def of_trace(self, trace_id: bytes) -> list[ReceivedSpan]:
        with self.cond:
            return [s for s in self.spans if s.span.trace_id == trace_id]


class HttpCollector(_Store, _HttpServer):
    """OTLP/HTTP receiver (``POST /v1/traces``, binary protobuf); ``status`` is what it answers. With ``tls`` =
    (key PEM, chain PEM, trust anchors PEM): HTTPS that requires a client certificate from those anchors,
    each client's certificate DNS SAN kept in ``client_ids``."""

    def __init__(self, status: int = 200, tls: tuple[bytes, bytes, bytes] | None = None) -> None:
        super().__init__()
        self.status = status
        self.client_ids: list[str] = []
        store = self

        class Handler(_Handler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
                peer = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
                if peer:
                    store.client_ids.extend(v for k, v in peer.get("subjectAltName", ()) if k == "DNS")
                if ok and store.status == 200:
                    request = trace_service_pb2.ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    store.add(request, "http")
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.reply(store.status if ok else 404, "application/x-protobuf", answer)

        self.port = self.serve(Handler)
        if tls is not None:
            self.server.socket = _server_tls(*tls).wrap_socket(self.server.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _server_tls(key: bytes, chain: bytes, anchors: bytes) -> ssl.SSLContext:
    """TLS 1.3 serving ``chain``, requiring a client certificate from ``anchors`` (files: ssl reads keys only so)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=anchors.decode("ascii"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tls.pem"
        path.write_bytes(key + b"\n" + chain)
        ctx.load_cert_chain(str(path))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class GrpcCollector(_Store):
    """OTLP/gRPC receiver (``TraceService/Export``) on grpcio; over TLS with ``tls`` = (key PEM, chain PEM)."""

    def __init__(self, tls: tuple[bytes, bytes] | None = None) -> None:
        super().__init__()
        import grpc

        store = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 (the service's naming)
                store.add(request, "grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
        self.server.start()

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0)


def sdk_tracer(name: str) -> tuple[Any, InMemorySpanExporter]:
    """A tracer of its own provider (never the global one) exporting into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer(name), exporter


class TracedApp(_HttpServer):
    """An HTTP/1.1 server traced with the SDK: each request's span continues the context ``propagator``
    extracts; the answer is JSON of the trace fields it received (what the proxy forwarded)."""

    FIELDS = ("traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-parentspanid", "b3")

    def __init__(self, propagator: Any) -> None:
        self.tracer, self.exporter = sdk_tracer("app")
        self.propagator = propagator
        app = self

        class Handler(_Handler):
            def do_GET(self) -> None:  # noqa: N802
                carrier = {k.lower(): v for k, v in self.headers.items()}
                ctx = app.propagator.extract(carrier)
                with app.tracer.start_as_current_span(f"GET {self.path}", context=ctx, kind=SpanKind.SERVER):
                    self.reply(200, "application/json", json.dumps({k: carrier.get(k) for k in app.FIELDS}).encode())

        self.hostport = f"127.0.0.1:{self.serve(Handler)}"


def get(addr: tuple[str, int], path: str, headers: dict[str, str], timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
