"""Exchange core: the tap hooks. No tap open: the hub is never asked. A tap open: each request reported
once (request_init at its first destination, response_init, response_end) whatever its fate: retried,
cut, abandoned by its client, answered by the proxy, upgraded, or ended with gRPC trailers."""

from __future__ import annotations

import pytest

from helpers import tapclient
from proxy import errors
from proxy.telemetry.tap import MatchAll, MatchString, TapHub

from .fakes import GRPC, FakePolicy, FakeService, h2_request_line

CANCEL, INTERNAL_ERROR = 8, 2


class Tap:
    """A hub with one session on the rig's context; the events decoded with the generated classes."""

    def __init__(self, rig, match=None, limit=100):
        self.hub = TapHub()
        self.hub.attach(rig.ctx)
        self.session = self.hub.open(match or MatchAll([]), limit, True, 1 << 20)

    def events(self):
        tap_pb2 = tapclient.modules()[0]
        data = self.session.take()
        out = []
        while data:
            assert data[0] == 0
            size = int.from_bytes(data[1:5], "big")
            out.append(tap_pb2.TapEvent.FromString(data[5:5 + size]))
            data = data[5 + size:]
        return out


def kinds(events):
    return [tapclient.kind(e) for e in events]


def _complete(up, status=200, body=b"ok", fields=None):
    up.attach()
    up.head(status, fields=fields, length=len(body))
    up.data(body, end=True)


def test_no_tap_open_means_no_hub_and_no_record(make_rig):
    rig = make_rig()
    hub = TapHub()
    hub.attach(rig.ctx)
    assert rig.ctx.tap is None
    ex, _ = rig.start_h1()
    assert ex.tap is None
    _complete(rig.disp.last)
    assert hub.events == 0


def test_a_request_is_reported_start_to_end_with_its_body_bytes(make_rig):
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    assert rig.ctx.tap is tap.hub
    ex, down = rig.start_h1(path=b"/books?id=1", host=b"books.ns")
    up = rig.disp.last
    up.attach()
    up.head(200, length=10)
    rig.loop.advance(0.25)
    up.data(b"12345")
    up.data(b"67890", end=True)
    events = tap.events()
    assert kinds(events) == ["request_init", "response_init", "response_end"]
    init, rsp, end = (getattr(e.http, k) for e, k in zip(events, kinds(events), strict=True))
    assert (init.authority, init.path, init.method.registered) == ("books.ns", "/books", 0)
    assert [h.name for h in init.headers.headers] == ["host"]
    assert rsp.http_status == 200
    assert end.response_bytes == 10 and end.since_response_init.ToMilliseconds() == 250
    assert not end.eos.HasField("grpc_status_code") and not end.eos.HasField("reset_error_code")
    assert events[0].destination_meta.labels["pod"] == "pod-10.0.0.1"
    assert events[0].destination.port == 8080 and events[0].source.port == 40000
    assert ex.tap is None and tap.session.open == 0
    assert rig.check_books() == []


def test_a_retried_request_is_one_request_in_the_tap(make_rig):
    rig = make_rig(service=FakeService(), policy=FakePolicy(limit=2))
    tap = Tap(rig)
    rig.start_h1()
    first = rig.disp.last
    first.attach(request_sent=True)
    first.head(503, length=0, end=True)  # retried: never forwarded
    second = rig.disp.last
    assert second is not first
    _complete(second, body=b"fine")
    events = tap.events()
    assert kinds(events) == ["request_init", "response_init", "response_end"]
    assert events[1].http.response_init.http_status == 200 and events[2].http.response_end.response_bytes == 4
    assert dict(events[0].route_meta.labels) == {"route": "route"}


def test_client_gone_is_a_cancel_reset(make_rig):
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    ex, _ = rig.start_h2()
    up = rig.disp.last
    up.attach()
    up.head(200, length=-1)
    up.data(b"abc")
    ex.client_gone()
    events = tap.events()
    assert kinds(events) == ["request_init", "response_init", "response_end"]
    end = events[2].http.response_end
    assert end.eos.reset_error_code == CANCEL and end.response_bytes == 3


def test_a_cut_response_reports_the_reset_code(make_rig):
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    rig.start_h2()
    up = rig.disp.last
    up.attach()
    up.head(200, length=-1)
    up.reset(errors.UpstreamReset("gone"))
    events = tap.events()
    assert kinds(events) == ["request_init", "response_init", "response_end"]
    assert events[2].http.response_end.eos.reset_error_code == errors.UpstreamReset().reset_code


def test_a_request_the_proxy_answers_itself_is_reported_without_a_destination(make_rig):
    rig = make_rig(max_in_flight=1)
    tap = Tap(rig)
    rig.start_h1()  # in flight
    ex, down = rig.start_h1(path=b"/shed")  # over the limit: 503 before any routing
    by = tapclient.by_stream(tap.events())
    (stream,) = [s for s, evs in by.items() if evs[0].http.request_init.path == "/shed"]
    assert kinds(by[stream]) == ["request_init", "response_init", "response_end"]
    assert not by[stream][0].HasField("destination") and by[stream][1].http.response_init.http_status == 503


def test_grpc_status_from_trailers_and_from_a_trailers_only_head(make_rig):
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    rig.start_h2(extra=(GRPC,))
    up = rig.disp.last
    up.attach()
    up.head(200, fields=[(b":status", b"200"), GRPC], length=-1)
    up.data(b"\x00\x00\x00\x00\x00")
    up.finish([(b"grpc-status", b"7")])
    rig.start_h2(sid=3, extra=(GRPC,))
    up = rig.disp.last
    up.attach()
    up.head(200, fields=[(b":status", b"200"), GRPC, (b"grpc-status", b"14")], length=0, end=True)
    ends = [e.http.response_end for e in tap.events() if tapclient.kind(e) == "response_end"]
    assert [e.eos.grpc_status_code for e in ends] == [7, 14]
    assert [h.name for h in ends[0].trailers.headers] == ["grpc-status"]


def test_limit_stops_matching_and_completes_the_session(make_rig):
    rig = make_rig(service=FakeService())
    tap = Tap(rig, limit=1)
    rig.start_h1()
    assert rig.ctx.tap is None  # at its limit: nothing else is matched against it
    ex2, _ = rig.start_h1()
    assert ex2.tap is None
    assert not tap.session.complete
    _complete(rig.ups()[0])
    assert tap.session.complete  # the server's next drain ends the stream
    assert kinds(tap.events()) == ["request_init", "response_init", "response_end"]


def test_only_matching_requests_are_recorded_and_two_taps_both_see_one(make_rig):
    rig = make_rig(service=FakeService())
    books = Tap(rig, MatchString(1, None, "/books"))
    other = books.hub.open(MatchAll([]), 10, False, 1 << 20)
    rig.start_h1(path=b"/books/1")
    _complete(rig.disp.last)
    rig.start_h1(path=b"/authors")
    _complete(rig.disp.last)
    assert len(books.events()) == 3 and other.events == 6


@pytest.mark.parametrize("status", [101])
def test_an_upgrade_ends_the_tapped_exchange(make_rig, status):
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    ex, down = rig.start_h1(headers=[(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")])
    up = rig.disp.last
    up.attach(request_sent=True)

    class Transport:
        def abort(self):
            pass

    ex.upgraded(status, None, Transport(), b"")
    assert kinds(tap.events()) == ["request_init", "response_init", "response_end"]


def test_a_full_buffer_drops_and_counts(make_rig):
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    tap.session.buffer_bytes = 300
    for _ in range(5):
        rig.start_h1()
        _complete(rig.disp.last)
    assert tap.session.dropped > 0 and tap.hub.dropped == tap.session.dropped
    assert tap.session.used <= 300 and len(tap.session.buf) <= 300
    assert tap.session.events + tap.session.dropped == 15


def test_inbound_requests_carry_the_proxys_own_workload_as_destination(make_rig):
    from proxy.telemetry.tap import MatchLabel

    rig = make_rig(direction="inbound")
    hub = TapHub((("namespace", "demo"), ("pod", "web-1"), ("deployment", "web")))
    hub.attach(rig.ctx)
    mine = hub.open(MatchLabel(False, "deployment", "web"), 10, False, 1 << 20)
    other = hub.open(MatchLabel(False, "deployment", "api"), 10, False, 1 << 20)
    rig.start_h1()
    _complete(rig.disp.last)
    assert mine.events == 3 and other.events == 0
    tap_pb2 = tapclient.modules()[0]
    data = mine.take()
    event = tap_pb2.TapEvent.FromString(data[5:5 + int.from_bytes(data[1:5], "big")])
    assert dict(event.destination_meta.labels) == {"namespace": "demo", "pod": "web-1", "deployment": "web",
                                                   "tls": "loopback"}


@pytest.mark.parametrize("scheme, registered, named", [(b"http", 0, ""), (b"https", 1, ""), (b"HTTPS", 1, ""),
                                                       (b"ws", None, "ws")])
def test_the_scheme_an_http2_request_names_is_reported(make_rig, scheme, registered, named):
    """http and https as Linkerd's registered values (their fields are encoded once), any other by name."""
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    fields = [(b":method", b"GET"), (b":scheme", scheme), (b":path", b"/"), (b":authority", b"svc.ns")]
    ex, _ = rig.exchange(sid=1)
    ex.down.starts += 1
    ex.start(h2_request_line(fields), fields, 0, True)
    _complete(rig.disp.last)
    init = tap.events()[0].http.request_init
    if registered is not None:
        assert init.scheme.registered == registered and not init.scheme.unregistered
    else:
        assert init.scheme.unregistered == named


def test_an_absolute_form_http1_request_names_its_scheme(make_rig):
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    rig.start_h1(path=b"http://svc.ns/a?b=1")
    _complete(rig.disp.last)
    init = tap.events()[0].http.request_init
    assert init.HasField("scheme") and init.scheme.registered == 0 and init.path == "/a"


def test_http2_streams_of_both_directions_alternating_keep_their_own_addresses(make_rig):
    """Each stream is a new exchange, so the encoded source and destination come from the hub: found again by
    the identity of the connection, endpoint and direction of the stream before, never another's."""
    out, inb = make_rig(service=FakeService()), make_rig(direction="inbound")
    hub = TapHub()
    hub.attach(out.ctx)
    hub.attach(inb.ctx)
    session = hub.open(MatchAll([]), 10, False, 1 << 20)
    for sid in (1, 3):
        for rig in (out, inb, out):
            rig.start_h2(sid=sid)
            _complete(rig.disp.last)
    tap_pb2 = tapclient.modules()[0]
    data = session.take()
    directions = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        event = tap_pb2.TapEvent.FromString(data[5:5 + size])
        if tapclient.kind(event) == "request_init":
            directions.append((event.proxy_direction, event.destination.port))
        data = data[5 + size:]
    outbound = (2, 8080)
    assert directions[0] == directions[2] == directions[3] == directions[5] == outbound
    assert directions[1][0] == directions[4][0] == 1 and directions[1] == directions[4] != outbound


# A request's request_init and response_init wait on its record: written with its response_end when it ends
# before the session's next take (one reservation), else by that take. The bytes must be the same either way.


def _one_request(make_rig, takes_at, limit=100):
    """One request with a response of two DATA frames, the session taken at the steps named in ``takes_at``
    (after "start", "head", "data") and at the end: each take's bytes."""
    rig = make_rig(service=FakeService())
    hub = TapHub()
    hub.next_base = 77  # the same stream ids in every run
    hub.attach(rig.ctx)
    session = hub.open(MatchAll([]), limit, True, 1 << 20)
    takes = []
    rig.start_h1(path=b"/books?id=1", host=b"books.ns")
    if "start" in takes_at:
        takes.append(session.take())
    up = rig.disp.last
    up.attach()
    rig.loop.advance(0.125)
    up.head(200, length=6)
    if "head" in takes_at:
        takes.append(session.take())
    rig.loop.advance(0.25)
    up.data(b"abc")
    if "data" in takes_at:
        takes.append(session.take_chunks(16384))
        takes[-1] = b"".join(takes[-1])
    up.data(b"def", end=True)
    takes.append(session.take())
    assert session.open == 0 and session.pending is None and session.dropped == 0
    return takes, session


def _decode(data):
    tap_pb2 = tapclient.modules()[0]
    out = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        out.append(tap_pb2.TapEvent.FromString(data[5:5 + size]))
        data = data[5 + size:]
    return out


@pytest.mark.parametrize("takes_at, split", [(("start",), [["request_init"], ["response_init", "response_end"]]),
                                             (("head",), [["request_init", "response_init"], ["response_end"]]),
                                             (("start", "head", "data"),
                                              [["request_init"], ["response_init"], [], ["response_end"]])])
def test_events_held_until_the_end_are_the_bytes_a_take_under_way_writes(make_rig, takes_at, split):
    (whole,), merged = _one_request(make_rig, ())
    takes, session = _one_request(make_rig, takes_at)
    assert [kinds(_decode(t)) for t in takes] == split
    assert b"".join(takes) == whole  # byte for byte: the same events, the same order
    assert merged.events == session.events == 3
    init, rsp, end = (getattr(e.http, k) for e, k in zip(_decode(whole), ["request_init", "response_init",
                                                                          "response_end"], strict=True))
    assert (init.id.base, init.id.stream, init.authority, init.path) == (77, 0, "books.ns", "/books")
    assert (rsp.id.stream, rsp.http_status, rsp.since_request_init.ToMilliseconds()) == (0, 200, 125)
    assert (end.id.stream, end.response_bytes, end.since_response_init.ToMilliseconds()) == (0, 6, 250)


def test_a_slow_reader_overflows_the_buffer_with_held_events_counted_as_dropped(make_rig):
    """Requests under way when a take comes: their held events are written then, each reserved on its own, and
    what the bound refuses is counted; their ends, later, too."""
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    for _ in range(6):
        rig.start_h1()
        rig.disp.last.attach()
        rig.disp.last.head(200, length=2)
    tap.session.buffer_bytes = 700  # room for some of the twelve held events, not all
    first = tap.events()
    assert 0 < len(first) < 12 and tap.session.dropped == 12 - len(first)
    for up in rig.ups():
        up.data(b"ok", end=True)
    assert tap.session.events + tap.session.dropped == 18 and tap.hub.dropped == tap.session.dropped
    assert kinds(tap.events()).count("response_end") + tap.session.dropped - (12 - len(first)) == 6
    assert tap.session.open == 0


def test_a_full_buffer_takes_of_one_request_the_events_that_fit(make_rig):
    """Three held events that do not fit together: written one by one, the first ones kept, the others
    counted as dropped (never a partial event)."""
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    rig.start_h1()
    _complete(rig.disp.last)
    size = len(tap.session.take())  # the three events' bytes
    tap.session.buffer_bytes = size - 1
    rig.start_h1()
    _complete(rig.disp.last)
    whole = _decode(tap.session.take())
    assert kinds(whole) == ["request_init", "response_init"] and tap.session.dropped == 1


def test_the_limit_reached_among_requests_of_one_batch(make_rig):
    """Three requests before one take, a limit of two: the third is not tapped, the two end whole in the batch,
    and the session completes."""
    rig = make_rig(service=FakeService())
    tap = Tap(rig, limit=2)
    exchanges = [rig.start_h1()[0] for _ in range(3)]
    ups = rig.ups()
    assert [ex.tap is not None for ex in exchanges] == [True, True, False]
    _complete(ups[0])
    assert not tap.session.complete
    _complete(ups[1])
    _complete(ups[2])
    assert tap.session.complete
    by = tapclient.by_stream(tap.events())
    assert sorted(by) == [0, 1] and all(kinds(e) == ["request_init", "response_init", "response_end"]
                                        for e in by.values())


def test_a_closed_session_lets_go_of_the_events_held(make_rig):
    """Closed with requests under way: what they held is let go, and what they do after holds nothing (a closed
    session has no take to write it, and its records must not stay referenced from it)."""
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    rig.start_h1()
    rig.start_h1()
    assert tap.session.pending is not None
    tap.session.close()
    assert tap.session.pending is None
    for up in rig.ups():
        up.attach()
        up.head(200, length=2)
    assert tap.session.pending is None
    for up in rig.ups():
        up.data(b"ok", end=True)
    assert tap.session.pending is None and tap.session.spare is None
    assert tap.session.take() == b"" and tap.session.events == 0 and tap.session.dropped == 0


def test_requests_that_end_leave_the_held_list_whatever_their_place_in_it(make_rig):
    """A reader away for long (no take): the session holds the records of the requests under way only, and the
    ended ones' events are in its buffer already."""
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    for sid in (1, 3, 5, 7):
        rig.start_h2(sid=sid)
    ups = rig.ups()
    for up in ups:
        up.attach()
        up.head(200, length=2)
    for up in (ups[1], ups[3], ups[0]):  # the middle, the head, the tail of the list
        up.data(b"ok", end=True)

    def held():
        rec, out = tap.session.pending, []
        while rec is not None:
            assert rec.pending_prev is (out[-1] if out else None)
            out.append(rec)
            rec = rec.pending_next
        return out

    assert [rec.stream for rec in held()] == [2] and tap.session.events == 9
    ups[2].data(b"ok", end=True)
    assert held() == [] and tap.session.open == 0
    by = tapclient.by_stream(tap.events())
    assert sorted(by) == [0, 1, 2, 3] and all(kinds(e) == ["request_init", "response_init", "response_end"]
                                              for e in by.values())


def test_ended_records_are_the_next_requests_records(make_rig):
    """Concurrent streams end several records before the next ones start: each new request takes one of them
    (nothing else holds them), and its events are its own."""
    rig = make_rig(service=FakeService())
    tap = Tap(rig)
    first = [rig.start_h2(sid=sid, path=b"/first")[0].tap for sid in (1, 3, 5)]
    for up in rig.ups():
        _complete(up)
    assert tap.session.spares == 3
    tap.events()
    ids = {id(rec) for rec in first}
    del first
    again = [rig.start_h2(sid=sid, path=b"/again")[0] for sid in (7, 9, 11)]
    assert {id(ex.tap) for ex in again} == ids and tap.session.spares == 0
    for up in rig.ups()[3:]:
        _complete(up, body=b"fine")
    by = tapclient.by_stream(tap.events())
    assert sorted(by) == [3, 4, 5] and all(kinds(e) == ["request_init", "response_init", "response_end"]
                                           for e in by.values())
    assert {e[0].http.request_init.path for e in by.values()} == {"/again"}
    assert {e[2].http.response_end.response_bytes for e in by.values()} == {4}
