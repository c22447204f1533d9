"""The span exporter: batches by size and by interval, a bounded buffer, drops counted, a flush on close."""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from proxy.config import Collector, TracingSettings
from proxy.telemetry import otlp
from proxy.telemetry.trace_export import ExportError, SpanExporter


class Transport:
    def __init__(self, fail=False, hang=False):
        self.fail, self.hang = fail, hang
        self.batches = []

    async def export(self, payload):
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise ExportError("down")
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(payload)
        self.batches.append([s.name for s in msg.resource_spans[0].scope_spans[0].spans])


def _settings(**overrides):
    values = dict(collector=Collector("grpc", "127.0.0.1", 4317), resource=(("service.name", "t"),), batch_size=3,
                  batch_interval=0.05, max_buffered_spans=5, export_timeout=0.2)
    values.update(overrides)
    return TracingSettings(**values)


def _span(n):
    return otlp.SpanRecord(bytes(range(16)), bytes(range(8)), b"", b"", 1, f"s{n}", otlp.KIND_SERVER, 1, 2, [])


def _run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_full_batch_goes_at_once_partial_after_the_interval():
    async def main():
        transport = Transport()
        exp = SpanExporter(asyncio.get_running_loop(), _settings(batch_interval=0.3), transport)
        for n in range(4):
            exp.offer(_span(n))
        await asyncio.sleep(0.05)
        assert transport.batches == [["s0", "s1", "s2"]]  # the size, not the interval, sent these
        await asyncio.sleep(0.5)
        assert transport.batches == [["s0", "s1", "s2"], ["s3"]]
        assert exp.exported == 4 and exp.dropped == {"buffer_full": 0, "export_failed": 0}

    _run(main())


def test_full_buffer_drops_and_counts():
    async def main():
        transport = Transport(hang=True)
        exp = SpanExporter(asyncio.get_running_loop(), _settings(batch_size=100, batch_interval=10), transport)
        for n in range(8):
            exp.offer(_span(n))
        assert len(exp.buffer) == 5 and exp.dropped["buffer_full"] == 3
        out = []
        exp.render(out)
        text = "\n".join(out)
        assert 'trace_spans_dropped_total{reason="buffer_full"} 3' in text
        assert "# TYPE trace_spans_dropped_total counter" in text and "trace_spans_buffered 5" in text

    _run(main())


def test_failed_and_timed_out_exports_drop_their_spans():
    async def main():
        for transport in (Transport(fail=True), Transport(hang=True)):
            exp = SpanExporter(asyncio.get_running_loop(), _settings(), transport)
            for n in range(3):
                exp.offer(_span(n))
            await asyncio.sleep(0.4)
            assert exp.dropped["export_failed"] == 3 and exp.exported == 0

    _run(main())


def test_close_flushes():
    async def main():
        transport = Transport()
        exp = SpanExporter(asyncio.get_running_loop(), _settings(batch_interval=60), transport)
        exp.offer(_span(1))
        await exp.close(1.0)
        assert transport.batches == [["s1"]]

    _run(main())


def test_mutual_tls_transport_waits_for_a_certificate_and_follows_rotation():
    """With a collector identity, no certificate means a failed (counted) export, and a kept connection
    made with a certificate that has since rotated is replaced before the next export."""
    from proxy.telemetry.trace_export import GrpcTransport

    current: list = [None]
    transport = GrpcTransport("127.0.0.1", 4317, "otel.tracing.serviceaccount.identity.cluster.local",
                              lambda: current[0])
    assert transport.scheme == b"https"
    try:
        asyncio.run(transport.export(b"x"))
    except ExportError as err:
        assert "no identity certificate" in str(err)
    else:
        raise AssertionError("exported without a certificate")
    old, new = object(), object()
    sent: list = []

    async def fake_export(payload):
        sent.append((transport._conn, payload))

    transport._export = fake_export  # type: ignore[method-assign]
    transport._conn, transport._tls = "kept", old
    current[0] = old
    asyncio.run(transport.export(b"a"))
    current[0] = new
    asyncio.run(transport.export(b"b"))
    assert sent == [("kept", b"a"), (None, b"b")]  # the rotated certificate closed the kept connection
    assert GrpcTransport("127.0.0.1", 4317).scheme == b"http"


def test_grpc_transport_sends_large_batches_and_reuses_its_connection_with_a_real_collector():
    # grpcio's receiver with its default 64 KiB windows: a 2,000-span batch (~125 KiB) needs the window
    # updates; three batches go over the one kept connection.
    from helpers.otel import GrpcCollector
    from proxy.telemetry.trace_export import GrpcTransport

    collector = GrpcCollector()
    try:
        transport = GrpcTransport("127.0.0.1", collector.port)
        spans = [_span(n) for n in range(2000)]
        payload = otlp.export_request(otlp.encode_resource([("service.name", "big")]), spans, "1")
        assert len(payload) > 65535

        async def go():
            for _ in range(3):
                await transport.export(payload)
            conn = transport._conn
            await transport.export(otlp.export_request(otlp.encode_resource([("service.name", "small")]),
                                                       spans[:1], "1"))
            assert transport._conn is conn  # kept
            transport.close()

        _run(go())
        assert collector.requests == 4 and len(collector.spans) == 3 * 2000 + 1
        assert [s.span.name for s in collector.spans[:3]] == ["s0", "s1", "s2"]
    finally:
        collector.stop()
