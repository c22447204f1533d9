"""Spans to a meshed collector over mutual TLS (MESHPROXY_TRACE_COLLECTOR_IDENTITY), end to end.

The collector is an OTLP/gRPC receiver (grpcio) or an OTLP/HTTP one behind
TLS with a certificate issued for its mesh identity by the test's trust
anchors (the HTTP one requires and records the client's certificate). A proxy
with an identity of its own sends its spans there, verifying that identity; a
receiver holding another identity gets nothing, and the proxy counts the spans
it dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from cryptography import x509

from helpers.issuer import Issuer, identity_name
from helpers.meshproxy import EXIT_CONFIG, MeshProxy, run_once
from helpers.otel import GrpcCollector, HttpCollector, get
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(120)

WEB = identity_name("web")
COLLECTOR = identity_name("otel-collector", "tracing")
ROGUE = identity_name("rogue-collector", "tracing")
FAST_EXPORT = {"MESHPROXY_TRACE_BATCH_INTERVAL": "50ms", "MESHPROXY_TRACE_EXPORT_TIMEOUT": "3s"}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    iss = Issuer(tmp_path_factory.mktemp("issuer"), [WEB]).start()
    yield iss
    iss.stop()


def _credentials(issuer: Issuer, name: str) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM) of a serving certificate for mesh identity ``name``, from the test's issuer."""
    from proxy.identity.ca import cert_pem, key_pem, load_issuer, new_key, sign_leaf

    authority, _ = load_issuer(issuer.dir)
    key = new_key()
    leaf = sign_leaf(authority, key.public_key(), name, [x509.DNSName(name)], dt.timedelta(hours=1))
    return key_pem(key), cert_pem(leaf) + cert_pem(authority.cert)


@pytest.fixture(scope="module")
def app():
    up = HttpUpstream(name="traced-app")
    yield up
    up.stop()


def _collector(protocol: str, issuer: Issuer, name: str):
    """(receiver, MESHPROXY_TRACE_COLLECTOR) of a collector proving identity ``name``."""
    key, chain = _credentials(issuer, name)
    if protocol == "grpc":
        grpc = GrpcCollector(tls=(key, chain))
        return grpc, f"grpc://127.0.0.1:{grpc.port}"
    http = HttpCollector(tls=(key, chain, issuer.anchors.read_bytes()))
    return http, f"http://127.0.0.1:{http.port}"


def _traced_request(proxy: MeshProxy, app: HttpUpstream, trace_id: str) -> None:
    """One sampled request through the proxy's outbound side (routed by Host): one CLIENT span."""
    status, _ = get(proxy.outbound, "/traced", {"Host": app.hostport,
                                                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert status == 200


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_reach_a_collector_proving_its_identity_over_mutual_tls(issuer, app, tmp_path, protocol):
    collector, url = _collector(protocol, issuer, COLLECTOR)
    env = {**issuer.env(WEB), **FAST_EXPORT, "MESHPROXY_TRACE_COLLECTOR": url,
           "MESHPROXY_TRACE_COLLECTOR_IDENTITY": COLLECTOR}
    try:
        with MeshProxy(env=env, name="proxy-mtls", log_path=tmp_path / "proxy.log").start() as proxy:
            _, _, body = proxy.admin_request("GET", "/config")
            assert json.loads(body)["trace_collector_identity"] == COLLECTOR
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
            _traced_request(proxy, app, trace_id)
            spans = collector.wait_for(bytes.fromhex(trace_id), 1, timeout=15)
            assert [s.via for s in spans] == [protocol]
            if protocol == "http":  # the collector saw this proxy's own certificate
                assert set(collector.client_ids) == {WEB}, collector.client_ids
            assert spans[0].span.kind == 3  # SPAN_KIND_CLIENT
            deadline = time.monotonic() + 10  # the collector stores the batch before the proxy reads its answer
            while proxy.metrics().get("trace_spans_exported_total") < 1:
                assert time.monotonic() < deadline, "the export was never counted"
                time.sleep(0.05)
            assert proxy.metrics().get("trace_spans_dropped_total", reason="export_failed") == 0
    finally:
        collector.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_collector_with_another_identity_gets_nothing_and_the_drop_is_counted(issuer, app, tmp_path, protocol):
    rogue, url = _collector(protocol, issuer, ROGUE)
    env = {**issuer.env(WEB), **FAST_EXPORT, "MESHPROXY_TRACE_COLLECTOR": url,
           "MESHPROXY_TRACE_COLLECTOR_IDENTITY": COLLECTOR}
    try:
        with MeshProxy(env=env, name="proxy-rogue", log_path=tmp_path / "proxy.log").start() as proxy:
            trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
            _traced_request(proxy, app, trace_id)
            deadline = time.monotonic() + 15
            while proxy.metrics().get("trace_spans_dropped_total", reason="export_failed") < 1:
                assert time.monotonic() < deadline, "the failed export was never counted"
                time.sleep(0.1)
            assert rogue.of_trace(bytes.fromhex(trace_id)) == []
            assert proxy.metrics().get("trace_spans_exported_total") == 0
    finally:
        rogue.stop()


def test_a_collector_identity_without_one_of_its_own_is_a_config_error():
    result = run_once(env={"MESHPROXY_TRACE_COLLECTOR": "grpc://127.0.0.1:4317",
                           "MESHPROXY_TRACE_COLLECTOR_IDENTITY": COLLECTOR})
    assert result.returncode == EXIT_CONFIG
    err = result.stderr.decode()
    assert "MESHPROXY_TRACE_COLLECTOR_IDENTITY" in err and "MESHPROXY_IDENTITY_NAME" in err, err
