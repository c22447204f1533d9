"""viz tap's messages: the ObserveRequest it sends read back by the generated classes (and by the proxy's own
parser), the events the proxy's encoder writes decoded into Linkerd's req/rsp/end lines."""

from __future__ import annotations

import json

import pytest

from helpers import tapclient
from proxy.exchange import clock
from proxy.telemetry import tap
from proxy.telemetry.pbwire import DecodeError
from proxy.telemetry.tapproto import parse_observe
from proxy.viz.tapevent import decode_event, observe_request


def test_observe_request_filters_are_linkerds_matches():
    tap_pb2 = tapclient.modules()[0]
    data = observe_request(7, method="post", path="/books", authority="web.ns:80", to_labels={"deployment": "api"})
    req = tap_pb2.ObserveRequest.FromString(data)
    assert req.limit == 7
    items = req.match.all.matches
    assert items[0].http.method.registered == 1  # POST
    assert items[1].http.path.prefix == "/books"
    assert items[2].http.authority.exact == "web.ns:80"
    assert (items[3].destination_label.key, items[3].destination_label.value) == ("deployment", "api")
    spec = parse_observe(data)
    view = tap.TapView("10.0.0.1", 1, "10.0.0.2", 80, {"deployment": "api"}, None, None, "POST", "web.ns:80",
                       "/books/1")
    assert spec.match.matches(view)
    view.method = "GET"
    assert not spec.match.matches(view)
    assert parse_observe(observe_request(3)).match.matches(view)  # no filter: every request
    assert tap_pb2.ObserveRequest.FromString(observe_request(1, method="PURGE")).match.all.matches[0] \
        .http.method.unregistered == "PURGE"


def _events(frames):
    out = []
    while frames:
        size = int.from_bytes(frames[1:5], "big")
        out.append(decode_event(frames[5:5 + size]))
        frames = frames[5 + size:]
    return out


def test_the_proxys_events_become_linkerds_lines():
    hub = tap.TapHub()
    session = hub.open(tap.MatchAll([]), 10, False, 1 << 16)
    base = (tap._source_fields(type("M", (), {"client": ("10.1.0.5", 41000), "tls": True,
                                              "client_id": "web.ns.serviceaccount.identity.cluster.local"})(),
                               True, True, {})
            + tap.uint_field(6, tap.INBOUND))
    record = tap.new_record(session, 3, base, 1.0)
    times = iter([1.25, 1.75])
    clock.set_source(lambda: next(times))
    try:
        record.response_init(200, None, None)
        record.add_bytes(12)
        record.end([(b"grpc-status", b"5")])
    finally:
        clock.set_source(None)
    rsp, end = _events(session.take())
    assert rsp.line() == (f"rsp id={session.base_id}:3 proxy=in src=10.1.0.5:41000 dst= tls=true "
                          ":status=200 latency=250000µs")
    assert end.line().endswith("tls=true grpc-status=NOT_FOUND duration=500000µs response-length=12B")
    assert "src_client_id=web.ns.serviceaccount.identity.cluster.local" in end.line(wide=True)
    doc = json.loads(end.json())
    assert doc["proxyDirection"] == "INBOUND" and doc["grpcStatusCode"] == 5 and doc["responseBytes"] == 12


def test_reset_and_undecodable_events():
    hub = tap.TapHub()
    session = hub.open(tap.MatchAll([]), 10, False, 1 << 16)
    tap.new_record(session, 0, tap.uint_field(6, tap.OUTBOUND), 0.0).reset(8)
    (end,) = _events(session.take())
    assert "reset-error=CANCEL" in end.line() and end.direction == "out"
    with pytest.raises(DecodeError):
        decode_event(b"\x1a\x03\x0a\x01")
    with pytest.raises(DecodeError):
        decode_event(tap.uint_field(6, 1))  # no http event
