"""Exchange core: the tracing hooks. No context: the tracer is never asked; a sampled one: one span, ended once."""

from __future__ import annotations

from proxy.telemetry.otlp import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, STATUS_UNSET
from proxy.telemetry.tracing import Tracer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Exporter:
    def __init__(self):
        self.spans = []

    def offer(self, span):
        self.spans.append(span)


class CountingTracer(Tracer):
    def __init__(self, direction="outbound"):
        super().__init__(direction, Exporter())
        self.begins = 0

    def begin(self, ex):
        self.begins += 1
        return super().begin(ex)


def _rig(make_rig, direction="outbound"):
    rig = make_rig(direction=direction)
    rig.ctx.tracer = CountingTracer(direction)
    return rig, rig.ctx.tracer


def _complete(up, status=200, body=b"ok"):
    up.attach()
    up.head(status, length=len(body))
    up.data(body, end=True)


def test_no_context_never_asks_the_tracer(make_rig):
    rig, tracer = _rig(make_rig)
    ex, _ = rig.start_h1(headers=[(b"Tracestate", b"a=b"), (b"X-B3-Sampled", b"1")])
    assert ex.span is None
    _complete(rig.disp.last)
    ex, _ = rig.start_h2()
    _complete(rig.disp.last)
    assert tracer.begins == 0 and tracer.exporter.spans == []


def test_sampled_h1_request_makes_one_client_span(make_rig):
    rig, tracer = _rig(make_rig)
    ex, down = rig.start_h1(path=b"/books?id=1", headers=[(b"TraceParent", f"00-{TRACE}-{PARENT}-01".encode())])
    assert tracer.begins == 1 and ex.span is not None
    _complete(rig.disp.last)
    assert down.kinds() == ["head", "send", "end", "done"]
    (span,) = tracer.exporter.spans
    assert span.trace_id.hex() == TRACE and span.parent_id.hex() == PARENT and len(span.span_id) == 8
    assert span.kind == KIND_CLIENT and span.name == "GET" and span.status_code == STATUS_UNSET
    attrs = dict(span.attributes)
    assert attrs["http.response.status_code"] == 200 and attrs["direction"] == "outbound"
    assert attrs["url.full"] == "http://svc.ns/books?id=1"
    assert attrs["server.address"] == "svc.ns" and attrs["server.port"] == 80
    assert span.start_ns <= span.end_ns
    assert ex.span is None  # ended once, forgotten


def test_sampled_h2_request_makes_a_server_span_inbound(make_rig):
    rig, tracer = _rig(make_rig, "inbound")
    value = f"{TRACE}-{PARENT}-1".encode()
    rig.start_h2(extra=[(b"b3", value)])
    _complete(rig.disp.last, status=503)
    (span,) = tracer.exporter.spans
    assert span.kind == KIND_SERVER and span.status_code == STATUS_ERROR
    attrs = dict(span.attributes)
    assert attrs["error.type"] == "503" and attrs["url.path"] == "/" and attrs["client.address"] == "10.0.0.9"


def test_unsampled_and_malformed_make_no_span(make_rig):
    rig, tracer = _rig(make_rig)
    for value in (f"00-{TRACE}-{PARENT}-00", "00-garbage"):
        ex, _ = rig.start_h1(headers=[(b"traceparent", value.encode())])
        assert ex.span is None
        _complete(rig.disp.last)
    assert tracer.begins == 2 and tracer.exporter.spans == [] and tracer.malformed == 1


def test_proxy_error_and_client_gone_are_recorded(make_rig):
    rig, tracer = _rig(make_rig)
    header = [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())]
    rig.start_h1(headers=header)
    rig.disp.last.connect_fail()
    ex, _ = rig.start_h1(headers=header)
    ex.client_gone()
    failed, gone = tracer.exporter.spans
    assert dict(failed.attributes)["http.response.status_code"] == 502 and failed.status_code == STATUS_ERROR
    assert dict(gone.attributes)["error.type"] == "cancelled" and "http.response.status_code" not in dict(
        gone.attributes)
