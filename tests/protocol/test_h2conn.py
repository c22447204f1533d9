"""Tests for proxy.protocol.h2conn: the sans-IO HTTP/2 connection, both roles.

Three kinds of peer, all in memory: the reference ``h2`` package (our server
against its client, our client against its server), our own other role
(where ``h2`` cannot follow, e.g. streams finishing after a GOAWAY), and a
raw peer writing frames by hand with h2frame's writers, for every rule
violation and abuse case. Our output is always parsed back with a
FrameReader, so the error code and its scope (RST_STREAM or GOAWAY) are
asserted on the wire.
"""

from __future__ import annotations

import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proxy.protocol.h2conn as C
import proxy.protocol.h2frame as F
import proxy.protocol.h2state as S
import proxy.protocol.hpack as HP

assert C.__file__.endswith(".so"), f"compiled h2conn not in use: {C.__file__}"
assert S.__file__.endswith(".so"), f"compiled h2state not in use: {S.__file__}"

REQ = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"example.com")]
POST = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/upload"), (b":authority", b"example.com")]
RESP = [(b":status", b"200")]
MAX = (1 << 31) - 1


def post(length=None):
    extra = [(b"content-length", str(length).encode())] if length is not None else []
    return POST + extra


# ---------------------------------------------------------------- helpers


def parse(data: bytes) -> list:
    """Our output as frames (no preface: the client's is stripped by the caller)."""
    reader = F.FrameReader(max_frame_size=(1 << 24) - 1, max_header_block_size=1 << 30)
    reader.feed(data)
    frames = []
    while True:
        frame = reader.next_frame()
        if frame is F.NEED_MORE:
            assert reader.buffered == 0
            return frames
        frames.append(frame)


def of_type(frames, ftype):
    return [f for f in frames if f.type == ftype]


def kinds(events):
    return [type(e) for e in events]


def ref_client(**kw):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None, **kw))
    conn.initiate_connection()
    return conn


def ref_server(**kw):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None, **kw))
    conn.initiate_connection()
    return conn


class Pair:
    """One of our connections against a peer (``h2`` or ours), bytes moved in memory."""

    def __init__(self, ours, peer, peer_is_ours=False):
        self.ours = ours
        self.peer = peer
        self.peer_is_ours = peer_is_ours
        self.now = 0
        self.events = []  # ours
        self.peer_events = []
        ours.initiate()
        if peer_is_ours:
            peer.initiate()
        self.pump()
        self.setup_events = self.take()  # the handshake's
        self.take_peer()

    def pump(self):
        for _ in range(1000):
            a = self.peer.data_to_send()
            if a:
                self.events += self.ours.receive_data(a, self.now)
            b = self.ours.data_to_send()
            if b:
                if self.peer_is_ours:
                    self.peer_events += self.peer.receive_data(b, self.now)
                else:
                    self.peer_events += self.peer.receive_data(b)
            if not a and not b:
                return
        raise AssertionError("no quiescence")

    def take(self):
        events, self.events = self.events, []
        return events

    def take_peer(self):
        events, self.peer_events = self.peer_events, []
        return events


def server_pair(settings=None, **kw):
    return Pair(C.H2Connection(False, settings or C.H2Settings()), ref_client(**kw))


def client_pair(settings=None, **kw):
    return Pair(C.H2Connection(True, settings or C.H2Settings()), ref_server(**kw))


def own_pair(server_settings=None, client_settings=None):
    """Our client (peer) against our server (ours)."""
    return Pair(C.H2Connection(False, server_settings or C.H2Settings()),
                C.H2Connection(True, client_settings or C.H2Settings()), peer_is_ours=True)


class Raw:
    """A hand-writing peer: frames built with h2frame's writers, fed to one of our connections."""

    def __init__(self, client_side_ours=False, settings=None, ack=True, peer_settings=()):
        self.conn = C.H2Connection(client_side_ours, settings or C.H2Settings())
        self.conn.initiate()
        self.enc = HP.Encoder()
        self.now = 0
        hello = b"" if client_side_ours else F.PREFACE
        hello += F.settings_frame(list(peer_settings))
        if ack:
            hello += F.settings_frame(ack=True)
        self.first = self.conn.data_to_send()
        self.events = self.feed(hello)
        self.frames()

    def feed(self, data):
        return self.conn.receive_data(data, self.now)

    def block(self, headers):
        return self.enc.encode(headers)

    def headers(self, sid, headers, end_stream=True):
        return F.headers_frames(sid, self.block(headers), end_stream)

    def open(self, sid, headers=REQ, end_stream=True):
        events = self.feed(self.headers(sid, headers, end_stream))
        assert kinds(events) == [C.RequestReceived], events
        return events

    def frames(self):
        return parse(self.conn.data_to_send())


def assert_stream_error(raw_or_frames, sid, code, events=None):
    frames = raw_or_frames.frames() if isinstance(raw_or_frames, Raw) else raw_or_frames
    rst = of_type(frames, F.RST_STREAM)
    assert [(f.stream_id, f.error_code) for f in rst] == [(sid, code)], frames
    assert not of_type(frames, F.GOAWAY), frames
    if events is not None:
        resets = [e for e in events if type(e) is C.StreamReset]
        assert [(e.stream_id, e.error_code, e.remote) for e in resets] == [(sid, code, False)], events


def assert_conn_error(raw, code, events=None):
    frames = raw.frames()
    goaways = of_type(frames, F.GOAWAY)
    assert len(goaways) == 1 and frames[-1] is goaways[0], frames
    assert goaways[0].error_code == code, (F.ERROR_CODE_NAMES.get(goaways[0].error_code), goaways[0].data)
    assert raw.conn.dead and raw.conn.closing
    if events is not None:
        terminated = [e for e in events if type(e) is C.ConnectionTerminated]
        assert len(terminated) == 1 and terminated[0].error_code == code and not terminated[0].remote
    # Dead: nothing more is processed.
    assert raw.feed(F.ping(b"12345678")) == []
    assert raw.conn.data_to_send() == b""
    return goaways[0]


# ---------------------------------------------------------------- settings and events


def test_settings_defaults_and_validation():
    s = C.H2Settings()
    assert (s.max_concurrent_streams, s.initial_window_size, s.max_frame_size, s.max_header_list_size,
            s.header_table_size) == (100, 65535 * 16, 16384, 65536, 4096)
    assert (s.max_resets_per_window, s.max_pings_per_window, s.max_settings_per_window,
            s.max_empty_data_per_window, s.max_window_updates_per_window, s.window_ms,
            s.max_header_block_size, s.max_pending_outbound) == (200, 100, 100, 100, 2000, 1000, 131072, 1 << 20)
    with pytest.raises(AttributeError):
        s.window_ms = 5  # read-only
    for bad in ({"max_frame_size": 100}, {"initial_window_size": 1 << 31}, {"window_ms": 0},
                {"max_resets_per_window": -1}):
        with pytest.raises(ValueError):
            C.H2Settings(**bad)
    assert "max_concurrent_streams=100" in repr(s)


def test_initiate_sends_preface_settings_and_connection_window():
    client = C.H2Connection(True, C.H2Settings())
    client.initiate()
    client.initiate()  # once only
    out = client.data_to_send()
    assert out.startswith(F.PREFACE)
    frames = parse(out[len(F.PREFACE):])
    assert [f.type for f in frames] == [F.SETTINGS, F.WINDOW_UPDATE]
    assert dict(frames[0].settings) == {
        F.SETTINGS_ENABLE_PUSH: 0, F.SETTINGS_MAX_CONCURRENT_STREAMS: 100,
        F.SETTINGS_INITIAL_WINDOW_SIZE: 65535 * 16, F.SETTINGS_MAX_FRAME_SIZE: 16384,
        F.SETTINGS_MAX_HEADER_LIST_SIZE: 65536,
    }
    assert frames[1].stream_id == 0 and frames[1].increment == 65535 * 16 - 65535
    server = C.H2Connection(False, C.H2Settings(initial_window_size=65535, header_table_size=0))
    server.initiate()
    frames = parse(server.data_to_send())
    assert [f.type for f in frames] == [F.SETTINGS]  # no window raise needed
    assert dict(frames[0].settings)[F.SETTINGS_HEADER_TABLE_SIZE] == 0
    assert server.data_to_send() == b""


def test_events_are_typed_with_readonly_fields():
    ev = C.DataReceived(1, b"x", 10, True)
    assert (ev.stream_id, ev.data, ev.flow_controlled_length, ev.end_stream) == (1, b"x", 10, True)
    assert isinstance(ev, C.Event)
    with pytest.raises(AttributeError):
        ev.data = b"y"
    assert repr(C.StreamReset(3, 8, True)) == "StreamReset(stream_id=3, error_code=8, remote=True)"


# ---------------------------------------------------------------- our server against h2's client


def test_get_without_body():
    p = server_pair()
    p.take()
    p.peer.send_headers(1, REQ, end_stream=True)
    p.pump()
    (req,) = [e for e in p.take() if type(e) is C.RequestReceived]
    assert (req.stream_id, req.headers, req.end_stream) == (1, REQ, True)
    assert p.ours.stream_state(1) == S.HALF_CLOSED_REMOTE
    assert p.ours.last_stream_id_processed == 1
    p.ours.send_headers(1, [(b":status", b"200"), (b"content-length", b"5")], False)
    assert p.ours.send_data(1, b"hello", True) == 5
    p.pump()
    got = p.take_peer()
    assert [type(e) for e in got if type(e) is not h2.events.SettingsAcknowledged] == [
        h2.events.ResponseReceived, h2.events.DataReceived, h2.events.StreamEnded]
    assert got[-2].data == b"hello"
    assert p.ours.stream_state(1) == S.CLOSED and p.ours.open_streams == 0


def _data_frames(raw):
    return [(f.stream_id, f.data, bool(f.flags & F.FLAG_END_STREAM)) for f in of_type(raw.frames(), F.DATA)]


def test_end_of_stream_goes_on_the_last_data_frame_still_queued():
    # A body and its end produced together: two frames for the peer to parse (HEADERS, DATA with END_STREAM),
    # not an empty DATA frame after the body.
    raw = Raw()
    raw.open(1)
    raw.conn.send_headers(1, RESP, False)
    raw.conn.send_data(1, b"ok", False)
    raw.conn.end_stream(1)
    frames = raw.frames()
    assert [(f.type, f.flags & F.FLAG_END_STREAM) for f in frames] == [(F.HEADERS, 0), (F.DATA, F.FLAG_END_STREAM)]
    assert frames[1].data == b"ok" and raw.conn.stream_state(1) == S.CLOSED
    # A body larger than one frame: the end goes on its last frame.
    raw.open(3)
    raw.conn.send_headers(3, RESP, False)
    raw.conn.send_data(3, b"x" * 20000, False)
    raw.conn.end_stream(3)
    assert [(len(d), end) for _, d, end in _data_frames(raw)] == [(16384, False), (3616, True)]


def test_end_of_stream_alone_when_the_data_frame_left_or_another_frame_followed():
    raw = Raw()
    for sid in (1, 3, 5):
        raw.open(sid)
        raw.conn.send_headers(sid, RESP, False)
    raw.conn.send_data(1, b"a", False)
    assert _data_frames(raw) == [(1, b"a", False)]  # written out: the end cannot join it any more
    raw.conn.end_stream(1)
    raw.conn.send_data(3, b"b", False)
    raw.conn.send_data(5, b"c", False)  # another stream's frame after stream 3's
    raw.conn.end_stream(3)
    raw.conn.end_stream(5)  # stream 5's frame is not the newest any more either: stream 3's end came after it
    assert _data_frames(raw) == [(1, b"", True), (3, b"b", False), (5, b"c", False), (3, b"", True), (5, b"", True)]
    for sid in (1, 3, 5):
        assert raw.conn.stream_state(sid) == S.CLOSED


def test_post_with_body_and_acknowledgement():
    p = server_pair()
    p.take()
    p.peer.send_headers(1, post(11), end_stream=False)
    p.peer.send_data(1, b"hello ", end_stream=False)
    p.peer.send_data(1, b"world", end_stream=True)
    p.pump()
    events = p.take()
    assert kinds(events) == [C.RequestReceived, C.DataReceived, C.DataReceived]
    assert not events[0].end_stream
    assert b"".join(e.data for e in events[1:]) == b"hello world" and events[2].end_stream
    for e in events[1:]:
        p.ours.acknowledge_received(e.stream_id, e.flow_controlled_length)
    p.ours.send_headers(1, RESP, True)
    p.pump()
    assert h2.events.StreamEnded in kinds(p.take_peer())
    assert p.ours.open_streams == 0


def test_grpc_style_trailers_both_ways():
    p = server_pair()
    p.take()
    grpc = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Call"), (b":authority", b"svc"),
            (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    p.peer.send_headers(1, grpc, end_stream=False)
    p.peer.send_data(1, b"\x00\x00\x00\x00\x02hi")
    p.peer.send_headers(1, [(b"grpc-timeout", b"1S")], end_stream=True)
    p.pump()
    events = p.take()
    assert kinds(events) == [C.RequestReceived, C.DataReceived, C.TrailersReceived]
    assert events[2].headers == [(b"grpc-timeout", b"1S")]
    assert p.ours.stream_state(1) == S.HALF_CLOSED_REMOTE
    p.ours.send_headers(1, [(b":status", b"200"), (b"content-type", b"application/grpc")], False)
    p.ours.send_data(1, b"\x00\x00\x00\x00\x02ok", False)
    p.ours.send_headers(1, [(b"grpc-status", b"0"), (b"grpc-message", b"OK")], True)
    p.pump()
    got = [e for e in p.take_peer() if type(e) is not h2.events.SettingsAcknowledged]
    assert [type(e) for e in got] == [h2.events.ResponseReceived, h2.events.DataReceived,
                                      h2.events.TrailersReceived, h2.events.StreamEnded]
    assert got[2].headers == [(b"grpc-status", b"0"), (b"grpc-message", b"OK")]
    assert p.ours.open_streams == 0


def test_large_upload_crosses_windows_with_batched_updates():
    p = server_pair()
    p.take()
    total = 5 * 1024 * 1024
    p.peer.send_headers(1, post(total), end_stream=False)
    sent = received = 0
    updates = 0
    while received < total:
        room = min(p.peer.local_flow_control_window(1), total - sent, 16384)
        while room > 0:
            p.peer.send_data(1, b"u" * room, end_stream=sent + room == total)
            sent += room
            room = min(p.peer.local_flow_control_window(1), total - sent, 16384)
        p.pump()
        for e in p.take():
            if type(e) is C.DataReceived:
                received += len(e.data)
                p.ours.acknowledge_received(1, e.flow_controlled_length)  # the consumer took it
        p.pump()
        updates += sum(type(e) is h2.events.WindowUpdated for e in p.take_peer())
        assert sent <= received + 2 * 65535 * 16  # never beyond what the windows allow
    assert received == total
    # Batched: one update per half window (stream and connection), not one per frame.
    assert updates <= 2 * total // (65535 * 8) + 4, updates


def test_large_download_crosses_windows_and_window_updated_events():
    p = server_pair()
    p.take()
    p.peer.send_headers(1, REQ, end_stream=True)
    p.pump()
    p.take()
    body = bytes(range(256)) * 12000  # ~3 MB against a 65535 window
    p.ours.send_headers(1, [(b":status", b"200"), (b"content-length", str(len(body)).encode())], False)
    pos = 0
    got = bytearray()
    retries = 0
    while pos < len(body) or p.ours.stream_state(1) != S.CLOSED:
        n = p.ours.send_data(1, body[pos:], True)
        assert n <= 65535
        pos += n
        p.pump()
        for e in p.take_peer():
            if type(e) is h2.events.DataReceived:
                got += e.data
                p.peer.acknowledge_received_data(e.flow_controlled_length, 1)
        p.pump()
        updated = [e for e in p.take() if type(e) is C.WindowUpdated]
        if pos < len(body):
            assert updated, "a short send_data must be followed by WindowUpdated once the window grows"
            retries += 1
    assert bytes(got) == body and retries > 10


def test_window_updated_is_only_emitted_after_a_short_send():
    raw = Raw()
    raw.open(1)
    raw.conn.send_headers(1, RESP, False)
    assert raw.conn.send_data(1, b"x" * 100, False) == 100
    assert raw.feed(F.window_update(1, 100) + F.window_update(0, 100_000)) == []
    assert raw.conn.send_data(1, b"y" * 70000, False) == 65535  # the stream window (connection has more)
    assert kinds(raw.feed(F.window_update(0, 10))) == []  # the connection was not the limit
    assert kinds(raw.feed(F.window_update(1, 10))) == [C.WindowUpdated]
    assert raw.conn.window_available(1) == 10


def test_initial_window_shrink_makes_windows_negative_and_growth_reports_window_updated():
    raw = Raw()
    raw.open(1)
    raw.conn.send_headers(1, RESP, False)
    assert raw.conn.send_data(1, b"x" * 60000, False) == 60000
    assert raw.conn.window_available(1) == 5535
    events = raw.feed(F.settings_frame([(F.SETTINGS_INITIAL_WINDOW_SIZE, 1000)]))
    assert kinds(events) == [C.SettingsChanged]
    assert events[0].changed == {F.SETTINGS_INITIAL_WINDOW_SIZE: 1000}
    frames = raw.frames()
    assert [(f.type, f.flags) for f in frames][-1] == (F.SETTINGS, F.FLAG_ACK)
    # 5535 + (1000 - 65535) = -59000
    assert raw.conn.window_available(1) == 0
    assert raw.conn.send_data(1, b"y", False) == 0
    raw.feed(F.window_update(1, 59000))
    assert raw.conn.window_available(1) == 0  # exactly back to zero
    assert kinds(raw.feed(F.window_update(1, 10))) == [C.WindowUpdated]
    assert raw.conn.window_available(1) == 10
    # Growth applies to open streams too, and says so on stream 0.
    events = raw.feed(F.settings_frame([(F.SETTINGS_INITIAL_WINDOW_SIZE, 2000)]))
    assert kinds(events) == [C.SettingsChanged, C.WindowUpdated] and events[1].stream_id == 0
    assert raw.conn.window_available(1) == 1010
    assert raw.conn.peer_settings[F.SETTINGS_INITIAL_WINDOW_SIZE] == 2000


def test_settings_change_mid_stream_with_reference_client():
    p = server_pair()
    p.take()
    p.peer.send_headers(1, REQ, end_stream=True)
    p.pump()
    p.take()
    p.ours.send_headers(1, RESP, False)
    assert p.ours.send_data(1, b"a" * 65535, False) == 65535
    p.pump()
    p.take_peer()
    p.peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    p.pump()
    assert C.SettingsChanged in kinds(p.take())
    assert p.ours.window_available(1) == 0  # 0 + (100 - 65535) < 0
    p.peer.acknowledge_received_data(65535, 1)
    p.peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    p.pump()
    assert C.WindowUpdated in kinds(p.take())
    assert p.ours.send_data(1, b"b" * 1000, True) == 1000
    p.pump()
    assert h2.events.StreamEnded in kinds(p.take_peer())


def test_ping_both_ways_with_reference_client():
    p = server_pair()
    p.take()
    p.ours.ping(b"ourping!")
    p.peer.ping(b"refping!")
    p.pump()
    events = p.take()
    assert [(type(e), e.opaque) for e in events if type(e) is C.PingAcked] == [(C.PingAcked, b"ourping!")]
    peer_events = p.take_peer()
    assert any(type(e) is h2.events.PingAckReceived and e.ping_data == b"refping!" for e in peer_events)
    assert any(type(e) is h2.events.PingReceived and e.ping_data == b"ourping!" for e in peer_events)
    with pytest.raises(ValueError):
        p.ours.ping(b"short")


def test_reset_both_ways_with_reference_client():
    p = server_pair()
    p.take()
    p.peer.send_headers(1, post(), end_stream=False)
    p.peer.send_headers(3, post(), end_stream=False)
    p.pump()
    p.take()
    p.peer.reset_stream(1, 8)
    p.pump()
    assert [(type(e), e.stream_id, e.error_code, e.remote) for e in p.take()] == [(C.StreamReset, 1, 8, True)]
    assert p.ours.stream_state(1) == S.CLOSED
    with pytest.raises(C.StreamClosed):
        p.ours.send_headers(1, RESP, True)
    p.ours.reset_stream(3, 2)
    p.ours.reset_stream(3, 2)  # already closed: a no-op
    p.pump()
    resets = [e for e in p.take_peer() if type(e) is h2.events.StreamReset]
    assert [(e.stream_id, e.error_code) for e in resets] == [(3, 2)]
    assert p.ours.open_streams == 0


def test_server_side_connect_tunnel():
    p = server_pair()
    p.take()
    p.peer.send_headers(1, [(b":method", b"CONNECT"), (b":authority", b"db.internal:5432")], end_stream=False)
    p.peer.send_data(1, b"\x00\x01binary")
    p.pump()
    events = p.take()
    assert kinds(events) == [C.RequestReceived, C.DataReceived]
    p.ours.send_headers(1, RESP, False)
    p.ours.send_data(1, b"pong", False)
    p.pump()
    assert h2.events.DataReceived in kinds(p.take_peer())


# ---------------------------------------------------------------- our client against h2's server


def test_client_request_response_with_body_and_trailers():
    p = client_pair()
    p.take()
    sid = p.ours.send_request(post(4), False)
    assert sid == 1 and p.ours.stream_state(1) == S.OPEN
    assert p.ours.send_data(1, b"ping", False) == 4
    p.ours.send_headers(1, [(b"x-checksum", b"abc")], True)
    p.pump()
    got = [e for e in p.take_peer() if type(e) not in (h2.events.RemoteSettingsChanged,
                                                        h2.events.SettingsAcknowledged)]
    assert [type(e) for e in got] == [h2.events.RequestReceived, h2.events.DataReceived,
                                      h2.events.TrailersReceived, h2.events.StreamEnded]
    p.peer.send_headers(1, [(b":status", b"100")])
    p.peer.send_headers(1, [(b":status", b"200"), (b"content-length", b"4")])
    p.peer.send_data(1, b"pong")
    p.peer.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    p.pump()
    events = p.take()
    assert kinds(events) == [C.InformationalResponseReceived, C.ResponseReceived, C.DataReceived,
                             C.TrailersReceived]
    assert events[1].headers[0] == (b":status", b"200") and not events[1].end_stream
    assert p.ours.open_streams == 0 and p.ours.stream_state(1) == S.CLOSED


def test_client_head_request_ignores_content_length():
    p = client_pair()
    p.take()
    p.ours.send_request([(b":method", b"HEAD")] + REQ[1:], True)
    p.pump()
    p.peer.send_headers(1, [(b":status", b"200"), (b"content-length", b"1234")], end_stream=True)
    p.pump()
    (resp,) = [e for e in p.take() if type(e) is C.ResponseReceived]
    assert resp.end_stream


def test_client_large_download_and_upload():
    p = client_pair()
    p.take()
    total = 3 * 1024 * 1024
    sid = p.ours.send_request(post(total), False)
    pos = 0
    body = b"q" * total
    p.pump()
    while pos < total:
        n = p.ours.send_data(sid, body[pos:], True)
        pos += n
        p.pump()
        for e in p.take_peer():
            if type(e) is h2.events.DataReceived:
                p.peer.acknowledge_received_data(e.flow_controlled_length, sid)
        p.pump()
        if pos < total:
            assert C.WindowUpdated in kinds(p.take())
    # Response: 3 MB through our 1 MiB windows, acknowledged as consumed.
    p.peer.send_headers(sid, [(b":status", b"200")])
    got = 0
    sent = 0
    while got < total:
        while sent < total and p.peer.local_flow_control_window(sid) > 0:
            n = min(p.peer.local_flow_control_window(sid), total - sent, 16384)
            p.peer.send_data(sid, b"r" * n, end_stream=sent + n == total)
            sent += n
        p.pump()
        for e in p.take():
            if type(e) is C.DataReceived:
                got += len(e.data)
                p.ours.acknowledge_received(sid, e.flow_controlled_length)
        p.pump()
    assert got == total and p.ours.open_streams == 0


def test_client_connect_tunnel():
    p = client_pair()
    sid = p.ours.send_request([(b":method", b"CONNECT"), (b":authority", b"db.internal:5432")], False)
    p.ours.send_data(sid, b"client bytes", False)
    p.pump()
    got = [e for e in p.take_peer() if type(e) in (h2.events.RequestReceived, h2.events.DataReceived)]
    assert [type(e) for e in got] == [h2.events.RequestReceived, h2.events.DataReceived]
    p.peer.send_headers(sid, [(b":status", b"200")])
    p.peer.send_data(sid, b"server bytes")
    p.pump()
    events = p.take()
    assert kinds(events) == [C.ResponseReceived, C.DataReceived] and events[1].data == b"server bytes"


def test_client_max_concurrent_streams_from_peer():
    p = client_pair()
    p.peer.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    p.pump()
    changed = [e for e in p.take() if type(e) is C.SettingsChanged]
    assert changed[-1].changed == {F.SETTINGS_MAX_CONCURRENT_STREAMS: 2}
    assert p.ours.send_request(REQ, True) == 1
    assert p.ours.send_request(REQ, True) == 3
    with pytest.raises(C.StreamLimitReached):
        p.ours.send_request(REQ, True)
    p.pump()
    p.peer.send_headers(1, RESP, end_stream=True)
    p.pump()
    assert p.ours.send_request(REQ, True) == 5


def test_client_goaway_reports_unprocessed_streams_refused():
    p = client_pair()
    p.take()
    for _ in range(3):
        p.ours.send_request(REQ, True)
    p.pump()
    p.peer.send_headers(1, RESP, end_stream=True)
    p.peer.send_headers(3, RESP, end_stream=False)
    p.peer.close_connection(error_code=0, last_stream_id=3)
    p.pump()
    events = p.take()
    assert kinds(events) == [C.ResponseReceived, C.ResponseReceived, C.ConnectionTerminated, C.StreamReset]
    term, reset = events[2], events[3]
    assert (term.error_code, term.last_stream_id, term.remote) == (0, 3, True)
    assert (reset.stream_id, reset.error_code, reset.remote) == (5, F.REFUSED_STREAM, True)
    assert p.ours.closing and p.ours.open_streams == 1  # stream 3 may still finish
    with pytest.raises(C.ConnectionClosing):
        p.ours.send_request(REQ, True)


def test_client_rst_from_server_refused_is_remote():
    p = client_pair()
    p.take()
    p.ours.send_request(REQ, True)
    p.pump()
    p.peer.reset_stream(1, F.REFUSED_STREAM)
    p.pump()
    assert [(type(e), e.error_code, e.remote) for e in p.take()] == [(C.StreamReset, F.REFUSED_STREAM, True)]


def test_client_only_api():
    server = C.H2Connection(False, C.H2Settings())
    with pytest.raises(C.H2UsageError):
        server.send_request(REQ, True)
    client = C.H2Connection(True, C.H2Settings())
    with pytest.raises(C.StreamClosed):
        client.send_data(1, b"x", False)
    sid = client.send_request(REQ, False)
    with pytest.raises(C.H2UsageError):
        client.send_headers(sid, [(b"x", b"y")], False)  # trailers must end the stream
    client.send_data(sid, b"", True)
    with pytest.raises(C.StreamClosed):
        client.send_data(sid, b"more", False)
    assert client.send_data(client.send_request(REQ, False), b"", False) == 0  # empty, no END_STREAM: nothing


def test_server_send_rules():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    with pytest.raises(C.H2UsageError):
        raw.conn.send_data(1, b"early", False)  # no response head yet
    with pytest.raises(C.H2UsageError):
        raw.conn.send_headers(1, [(b":status", b"103")], True)
    raw.conn.send_headers(1, [(b":status", b"103"), (b"link", b"</a>")], False)
    raw.conn.send_headers(1, RESP, False)
    with pytest.raises(C.H2UsageError):
        raw.conn.send_headers(1, [(b"x", b"1")], False)
    raw.conn.end_stream(1)
    frames = raw.frames()
    assert [(f.type, f.flags & F.FLAG_END_STREAM) for f in frames] == [
        (F.HEADERS, 0), (F.HEADERS, 0), (F.DATA, F.FLAG_END_STREAM)]
    assert raw.conn.stream_state(1) == S.HALF_CLOSED_LOCAL


# ---------------------------------------------------------------- ours against ours: graceful shutdown


def test_graceful_shutdown_two_step_with_in_flight_streams():
    p = own_pair()
    client, server = p.peer, p.ours
    p.take()
    s1 = client.send_request(post(), False)
    p.pump()
    assert kinds(p.take()) == [C.RequestReceived]
    server.graceful_shutdown()
    first = parse(server.data_to_send())
    assert [(f.type, f.last_stream_id) for f in first] == [(F.GOAWAY, MAX), (F.PING, 0)]
    assert server.closing and not server.drained
    # A request the client sent before it saw the first GOAWAY is still served.
    s3 = client.send_request(REQ, True)
    events = server.receive_data(client.data_to_send(), 0)
    assert kinds(events) == [C.RequestReceived] and events[0].stream_id == s3
    # The client sees GOAWAY(2**31-1) and answers the PING: the final GOAWAY names stream 3.
    goaway_first = b"".join(F.goaway(f.last_stream_id, f.error_code) if f.type == F.GOAWAY else F.ping(f.data)
                            for f in first)
    cevents = client.receive_data(goaway_first, 0)
    assert [(type(e), e.last_stream_id) for e in cevents] == [(C.ConnectionTerminated, MAX)]
    assert server.receive_data(client.data_to_send(), 0) == []
    final = parse(server.data_to_send())
    assert [(f.type, f.last_stream_id, f.error_code) for f in final] == [(F.GOAWAY, s3, 0)]
    cevents = client.receive_data(F.goaway(s3, 0), 0)
    assert [(type(e), e.last_stream_id) for e in cevents] == [(C.ConnectionTerminated, s3)]
    # Both in-flight streams finish.
    client.send_data(s1, b"body", True)
    p.pump()
    assert kinds(p.take()) == [C.DataReceived]
    for sid in (s1, s3):
        server.send_headers(sid, RESP, True)
    p.pump()
    assert [type(e) for e in p.take_peer()].count(C.ResponseReceived) == 2
    assert server.drained and client.drained


def test_streams_above_our_goaway_are_ignored():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    raw.conn.close()
    frames = raw.frames()
    assert [(f.type, f.last_stream_id, f.error_code) for f in frames] == [(F.GOAWAY, 1, 0)]
    assert raw.feed(raw.headers(3, REQ)) == []  # ignored, HPACK still in step
    assert raw.feed(F.data_frame(3, b"zz")) == []
    assert kinds(raw.feed(F.data_frame(1, b"ok", True))) == [C.DataReceived]  # stream 1 still served
    assert raw.frames() == []
    assert not raw.conn.dead


def test_graceful_shutdown_second_call_sends_final_goaway_at_once():
    raw = Raw()
    raw.open(1)
    raw.conn.graceful_shutdown()
    raw.conn.graceful_shutdown()
    raw.conn.graceful_shutdown()
    frames = raw.frames()
    assert [(f.type, f.last_stream_id) for f in frames] == [(F.GOAWAY, MAX), (F.PING, 0), (F.GOAWAY, 1)]


def test_client_graceful_shutdown_and_close_with_error():
    client = C.H2Connection(True, C.H2Settings())
    client.graceful_shutdown()
    frames = parse(client.data_to_send()[len(F.PREFACE):])
    assert [(f.type, f.last_stream_id) for f in frames][-1] == (F.GOAWAY, 0)
    with pytest.raises(C.ConnectionClosing):
        client.send_request(REQ, True)
    raw = Raw()
    raw.conn.close(F.INTERNAL_ERROR, b"bye")
    (g,) = raw.frames()
    assert (g.type, g.error_code, g.data) == (F.GOAWAY, F.INTERNAL_ERROR, b"bye")
    assert raw.conn.dead and raw.feed(F.ping(b"12345678")) == []


# ---------------------------------------------------------------- stream rules (stream errors)


def test_data_on_half_closed_remote_is_stream_closed():
    raw = Raw()
    raw.open(1)  # END_STREAM: half-closed (remote)
    events = raw.feed(F.data_frame(1, b"late"))
    assert_stream_error(raw, 1, F.STREAM_CLOSED, events)
    assert not raw.conn.dead
    assert raw.feed(F.data_frame(1, b"again")) == []  # after our RST: ignored, no second RST
    assert raw.frames() == []


def test_headers_on_closed_stream_is_stream_closed():
    raw = Raw()
    raw.open(1)
    raw.conn.send_headers(1, RESP, True)
    raw.frames()
    assert raw.conn.stream_state(1) == S.CLOSED
    events = raw.feed(raw.headers(1, [(b"x", b"y")]))
    assert_stream_error(raw, 1, F.STREAM_CLOSED, events)
    # WINDOW_UPDATE, RST_STREAM and PRIORITY on a closed stream are fine.
    assert raw.feed(F.priority(1, 0)) == []
    raw.open(3)
    raw.conn.send_headers(3, RESP, True)
    assert raw.feed(F.window_update(3, 5) + F.rst_stream(3, 0) + F.priority(3, 0)) == []
    assert not of_type(raw.frames(), F.RST_STREAM)


def test_refused_stream_over_max_concurrent():
    raw = Raw(settings=C.H2Settings(max_concurrent_streams=2))
    raw.open(1, post(), end_stream=False)
    raw.open(3, post(), end_stream=False)
    events = raw.feed(raw.headers(5, REQ))
    assert_stream_error(raw, 5, F.REFUSED_STREAM, events)
    assert raw.feed(F.data_frame(5, b"x", True)) == []  # refused: in-flight frames ignored
    raw.conn.reset_stream(1, F.CANCEL)
    raw.frames()
    raw.open(7)  # a slot is free again
    assert raw.conn.open_streams == 2


@pytest.mark.parametrize("headers", [
    [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x")],  # no :path
    REQ + [(b"Upper", b"x")],
    REQ + [(b"connection", b"keep-alive")],
    REQ + [(b"te", b"gzip")],
    [(b":method", b"GET"), (b"x", b"y"), (b":scheme", b"https"), (b":path", b"/")],  # pseudo after regular
    REQ + [(b":status", b"200")],
    [(b":method", b"CONNECT"), (b":authority", b"x:1"), (b":path", b"/")],  # CONNECT with :path
    [(b":method", b"CONNECT")],  # CONNECT without :authority
    REQ + [(b"content-length", b"12x")],
    REQ + [(b"content-length", b"1"), (b"content-length", b"2")],
    [],
])
def test_malformed_request_is_stream_protocol_error(headers):
    raw = Raw()
    events = raw.feed(raw.headers(1, headers, end_stream=False))
    assert_stream_error(raw, 1, F.PROTOCOL_ERROR, events)
    assert kinds(events) == [C.StreamReset]
    raw.open(3)  # HPACK still in step: the connection goes on


def test_request_end_stream_with_positive_content_length():
    raw = Raw()
    events = raw.feed(raw.headers(1, post(5), end_stream=True))
    assert_stream_error(raw, 1, F.PROTOCOL_ERROR, events)


@pytest.mark.parametrize("frames", [
    [F.data_frame(1, b"123456")],  # more than content-length
    [F.data_frame(1, b"1234", True)],  # ends short
    [F.data_frame(1, b"1234")],  # then trailers, still short
])
def test_content_length_mismatch_is_stream_protocol_error(frames):
    raw = Raw()
    raw.open(1, post(5), end_stream=False)
    events = []
    for frame in frames:
        events += raw.feed(frame)
    if len(frames) == 1 and not frames[0].endswith(b"123456") and frames[0][4] == 0:
        events += raw.feed(raw.headers(1, [(b"x", b"y")], True))
    assert_stream_error(raw, 1, F.PROTOCOL_ERROR, events)


def test_content_length_exact_is_fine_with_padding_and_empty_end():
    raw = Raw()
    raw.open(1, post(5), end_stream=False)
    padded = F.raw_frame(F.DATA, F.FLAG_PADDED, 1, b"\x0a" + b"hello" + b"\x00" * 10)
    events = raw.feed(padded)
    assert [(type(e), e.data, e.flow_controlled_length) for e in events] == [(C.DataReceived, b"hello", 16)]
    events = raw.feed(F.data_frame(1, b"", True))
    assert [(type(e), e.data, e.end_stream) for e in events] == [(C.DataReceived, b"", True)]


def test_trailers_must_end_stream_and_carry_no_pseudo_headers():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    events = raw.feed(raw.headers(1, [(b"x", b"y")], end_stream=False))
    assert_stream_error(raw, 1, F.PROTOCOL_ERROR, events)
    raw.open(3, post(), end_stream=False)
    events = raw.feed(raw.headers(3, [(b":path", b"/")], end_stream=True))
    assert_stream_error(raw, 3, F.PROTOCOL_ERROR, events)


def test_stream_window_overflow_and_data_beyond_stream_window():
    raw = Raw(settings=C.H2Settings(initial_window_size=16384))
    raw.open(1, post(), end_stream=False)
    raw.conn.send_headers(1, RESP, False)
    raw.frames()
    events = raw.feed(F.window_update(1, MAX))
    assert_stream_error(raw, 1, F.FLOW_CONTROL_ERROR, events)
    raw.open(3, post(), end_stream=False)
    assert kinds(raw.feed(F.data_frame(3, b"a" * 16384))) == [C.DataReceived]
    events = raw.feed(F.data_frame(3, b"b"))  # the stream window is spent; the connection's is not
    assert_stream_error(raw, 3, F.FLOW_CONTROL_ERROR, events)


def test_priority_frames_are_accepted_and_ignored():
    raw = Raw()
    assert raw.feed(F.priority(9, 0) + F.priority(11, 9, 200, True)) == []  # idle streams stay idle
    raw.open(1, post(), end_stream=False)
    assert raw.feed(F.priority(1, 0, 32)) == []
    hdr = F.frame_header  # HEADERS with the PRIORITY flag
    block = raw.block(REQ)
    frame = hdr(5 + len(block), F.HEADERS, F.FLAG_PRIORITY | F.FLAG_END_HEADERS | F.FLAG_END_STREAM, 13)
    events = raw.feed(frame + b"\x00\x00\x00\x01\x0f" + block)
    assert kinds(events) == [C.RequestReceived]
    assert raw.frames() == []


def test_bad_priority_length_is_a_stream_error():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    events = raw.feed(F.raw_frame(F.PRIORITY, 0, 1, b"\x00" * 4))
    assert_stream_error(raw, 1, F.FRAME_SIZE_ERROR, events)


def test_zero_window_increment_on_a_stream_is_a_stream_error():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    events = raw.feed(F.raw_frame(F.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00"))
    assert_stream_error(raw, 1, F.PROTOCOL_ERROR, events)


def test_unknown_frame_types_are_ignored():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    assert raw.feed(F.raw_frame(0xFA, 0xFF, 1, b"whatever") + F.raw_frame(0x20, 0, 0, b"")) == []
    assert raw.frames() == []


def test_implicitly_closed_lower_streams():
    raw = Raw()
    raw.open(7, post(), end_stream=False)
    assert raw.conn.stream_state(3) == S.CLOSED  # skipped ids are implicitly closed
    assert raw.conn.stream_state(9) == S.IDLE
    events = raw.feed(F.data_frame(3, b"x"))
    assert_stream_error(raw, 3, F.STREAM_CLOSED, events)


def test_late_headers_on_a_long_closed_stream_is_a_stream_error():
    raw = Raw()
    for sid in range(1, 1200, 2):  # more closed streams than the closed-stream memory holds
        raw.open(sid)
        raw.conn.send_headers(sid, RESP, True)
    raw.frames()
    events = raw.feed(raw.headers(1, [(b"x", b"y")]))
    assert_stream_error(raw, 1, F.STREAM_CLOSED, events)
    # A skipped id, by contrast, would be a new stream with a lower id.
    raw.open(1205)
    assert_conn_error(raw, F.PROTOCOL_ERROR, raw.feed(raw.headers(1201, REQ)))


def test_closed_stream_memory_keeps_the_newest_ids_across_wraps():
    # Streams we reset are remembered (frames the peer had in flight are then
    # ignored) for the last 256 closed ids; older ones read as plainly closed.
    raw = Raw()
    last = 0
    for sid in range(1, 1600, 2):  # 800 closes: the memory wraps three times
        raw.open(sid, end_stream=False)
        raw.conn.reset_stream(sid, F.CANCEL)
        last = sid
    raw.frames()
    raw.conn.reset_stream(last, F.CANCEL)  # a second close of a remembered id takes no second slot
    for sid in range(last - 2 * 255, last + 1, 2):  # the newest 256: still known as reset by us
        assert raw.feed(F.data_frame(sid, b"late")) == [], sid
    assert raw.frames() == []
    events = raw.feed(F.data_frame(last - 2 * 256, b"late"))  # the 257th newest: forgotten
    assert_stream_error(raw, last - 2 * 256, F.STREAM_CLOSED, events)


def test_client_role_ping_and_reset_with_reference_server():
    p = client_pair()
    sid = p.ours.send_request(post(), False)
    p.ours.ping(b"\x01" * 8)
    p.pump()
    p.take_peer()
    p.ours.reset_stream(sid, F.CANCEL)
    p.peer.ping(b"\x02" * 8)
    p.pump()
    assert [(type(e), e.opaque) for e in p.take()] == [(C.PingAcked, b"\x01" * 8)]
    got = p.take_peer()
    assert any(type(e) is h2.events.StreamReset and e.error_code == F.CANCEL for e in got)
    assert any(type(e) is h2.events.PingAckReceived for e in got)
    assert p.ours.open_streams == 0


# ---------------------------------------------------------------- connection rules (GOAWAY)


@pytest.mark.parametrize("frame,code", [
    (F.data_frame(1, b"x"), F.PROTOCOL_ERROR),  # DATA on an idle stream
    (F.rst_stream(1, 8), F.PROTOCOL_ERROR),  # RST_STREAM on an idle stream
    (F.window_update(1, 5), F.PROTOCOL_ERROR),  # WINDOW_UPDATE on an idle stream
    (F.raw_frame(F.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00"), F.PROTOCOL_ERROR),  # zero increment, idle
    (F.push_promise_frames(1, 2, b""), F.PROTOCOL_ERROR),
    (F.window_update(0, MAX), F.FLOW_CONTROL_ERROR),  # connection window overflow
    (F.raw_frame(F.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), F.PROTOCOL_ERROR),
    (F.frame_header(16385, F.DATA, 0, 1) + b"\x00" * 16385, F.FRAME_SIZE_ERROR),
    (F.raw_frame(F.CONTINUATION, 0, 1, b""), F.PROTOCOL_ERROR),
    (F.raw_frame(F.PING, 0, 0, b"1234"), F.FRAME_SIZE_ERROR),
    (F.settings_frame([(F.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)]), F.FLOW_CONTROL_ERROR),
    (F.settings_frame([(F.SETTINGS_MAX_FRAME_SIZE, 100)]), F.PROTOCOL_ERROR),
    (F.raw_frame(F.HEADERS, F.FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff"), F.COMPRESSION_ERROR),
])
def test_connection_errors(frame, code):
    raw = Raw()
    events = raw.feed(frame)
    assert_conn_error(raw, code, events)


def test_headers_on_even_or_lower_id_is_a_connection_error():
    raw = Raw()
    assert_conn_error(raw, F.PROTOCOL_ERROR, raw.feed(raw.headers(2, REQ)))
    raw = Raw()
    raw.open(5)
    g = assert_conn_error(raw, F.PROTOCOL_ERROR, raw.feed(raw.headers(3, REQ)))
    assert g.last_stream_id == 5


def test_data_beyond_connection_window_is_a_connection_error():
    raw = Raw(settings=C.H2Settings(initial_window_size=65535, max_frame_size=1 << 17, connection_buffer=0))
    raw.open(1, post(), end_stream=False)
    assert kinds(raw.feed(F.data_frame(1, b"a" * 65535))) == [C.DataReceived]
    assert_conn_error(raw, F.FLOW_CONTROL_ERROR, raw.feed(F.data_frame(1, b"b")))


def test_settings_window_change_overflowing_a_stream_is_a_connection_error():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    raw.feed(F.window_update(1, MAX - 65535))
    assert_conn_error(raw, F.FLOW_CONTROL_ERROR,
                      raw.feed(F.settings_frame([(F.SETTINGS_INITIAL_WINDOW_SIZE, 65536)])))


def test_bad_preface_and_missing_settings():
    conn = C.H2Connection(False, C.H2Settings())
    conn.initiate()
    conn.data_to_send()
    events = conn.receive_data(b"GET / HTTP/1.1\r\n\r\n" + b"\x00" * 20, 0)
    assert [(type(e), e.error_code) for e in events] == [(C.ConnectionTerminated, F.PROTOCOL_ERROR)]
    conn = C.H2Connection(False, C.H2Settings())
    events = conn.receive_data(F.PREFACE + F.ping(b"12345678"), 0)
    assert [(type(e), e.error_code) for e in events] == [(C.ConnectionTerminated, F.PROTOCOL_ERROR)]


def test_client_rejects_push_and_server_initiated_streams():
    raw = Raw(client_side_ours=True)
    raw.conn.send_request(REQ, True)
    assert_conn_error(raw, F.PROTOCOL_ERROR, raw.feed(F.push_promise_frames(1, 2, raw.block(RESP))))
    raw = Raw(client_side_ours=True)
    assert_conn_error(raw, F.PROTOCOL_ERROR, raw.feed(raw.headers(2, RESP)))
    raw = Raw(client_side_ours=True, ack=False, peer_settings=[(F.SETTINGS_ENABLE_PUSH, 1)])
    assert raw.conn.dead


def test_client_response_rules():
    raw = Raw(client_side_ours=True)
    sids = [raw.conn.send_request(REQ, True) for _ in range(5)]
    raw.frames()
    # DATA before the response head.
    assert_stream_error(raw, sids[0], F.PROTOCOL_ERROR, raw.feed(F.data_frame(sids[0], b"x")))
    # A 1xx cannot end the stream; 101 does not exist in HTTP/2.
    assert_stream_error(raw, sids[1], F.PROTOCOL_ERROR, raw.feed(raw.headers(sids[1], [(b":status", b"100")])))
    assert_stream_error(raw, sids[2], F.PROTOCOL_ERROR,
                        raw.feed(raw.headers(sids[2], [(b":status", b"101")], False)))
    # A response head without :status.
    assert_stream_error(raw, sids[3], F.PROTOCOL_ERROR, raw.feed(raw.headers(sids[3], [(b"x", b"y")])))
    # A good one still works (HPACK in step).
    events = raw.feed(raw.headers(sids[4], [(b":status", b"204")]))
    assert kinds(events) == [C.ResponseReceived]


# ---------------------------------------------------------------- header list limits


def test_request_header_list_too_large_is_answered_431_and_hpack_stays_in_step():
    raw = Raw(settings=C.H2Settings(max_header_list_size=1000))
    big = REQ + [(b"x-big", b"v" * 2000)]
    events = raw.feed(raw.headers(1, big, end_stream=False))
    assert [(type(e), e.stream_id) for e in events] == [(C.HeaderListTooLarge, 1)]
    frames = raw.frames()
    assert [f.type for f in frames] == [F.HEADERS, F.RST_STREAM]
    assert HP.Decoder().decode(frames[0].data)[0] == (b":status", b"431")
    assert frames[0].flags & F.FLAG_END_STREAM and frames[1].error_code == F.NO_ERROR
    assert raw.feed(F.data_frame(1, b"ignored")) == []
    # The encoder indexed x-big; the next request refers to it and decodes fine.
    events = raw.feed(raw.headers(3, REQ + [(b"x-big", b"v" * 10)]))
    assert kinds(events) == [C.RequestReceived]
    # Ended request: 431 and no RST.
    events = raw.feed(raw.headers(5, big, end_stream=True))
    assert kinds(events) == [C.HeaderListTooLarge]
    assert [f.type for f in raw.frames()] == [F.HEADERS]


def test_response_or_trailers_too_large_resets_with_cancel():
    raw = Raw(client_side_ours=True, settings=C.H2Settings(max_header_list_size=500))
    sid = raw.conn.send_request(REQ, True)
    raw.frames()
    events = raw.feed(raw.headers(sid, RESP + [(b"x-big", b"v" * 1000)]))
    assert kinds(events) == [C.HeaderListTooLarge, C.StreamReset]
    assert_stream_error(raw, sid, F.CANCEL, events)


def test_hpack_bomb_is_bounded():
    raw = Raw(settings=C.H2Settings(max_header_list_size=65536))
    enc = raw.enc
    raw.feed(raw.headers(1, REQ + [(b"x-bomb", b"b" * 4000)]))
    # One indexed reference is one octet: 16k of them would decode to 64 MB.
    block = enc.encode(REQ) + b"\xbe" * 16000
    t0 = time.perf_counter()
    events = raw.feed(F.headers_frames(3, block, True))
    assert time.perf_counter() - t0 < 0.5
    assert kinds(events) == [C.HeaderListTooLarge]


# ---------------------------------------------------------------- abuse


def rapid_reset_bytes(raw, n):
    parts = []
    for i in range(n):
        sid = 1 + 2 * i
        parts.append(raw.headers(sid, REQ, end_stream=False))
        parts.append(F.rst_stream(sid, F.CANCEL))
    return b"".join(parts)


def test_rapid_reset_is_cut_off_with_enhance_your_calm():
    raw = Raw()
    data = rapid_reset_bytes(raw, 20000)
    t0 = time.perf_counter()
    events = raw.feed(data)
    elapsed = time.perf_counter() - t0
    assert_conn_error(raw, F.ENHANCE_YOUR_CALM, events)
    assert kinds(events).count(C.RequestReceived) == 201 and len(events) <= 403
    assert elapsed < 0.5, elapsed


def test_100k_rst_frames_stop_after_the_limit():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    data = F.rst_stream(1, F.CANCEL) * 100_000
    t0 = time.perf_counter()
    events = raw.feed(data)
    assert time.perf_counter() - t0 < 0.5
    assert kinds(events) == [C.StreamReset, C.ConnectionTerminated]
    assert_conn_error(raw, F.ENHANCE_YOUR_CALM, events)


def test_reset_budget_renews_each_window():
    raw = Raw(settings=C.H2Settings(max_resets_per_window=10, window_ms=1000))
    sid = 1
    for second in range(5):
        raw.now = second * 1000
        for _ in range(10):
            raw.feed(raw.headers(sid, REQ, end_stream=False) + F.rst_stream(sid, F.CANCEL))
            sid += 2
        assert not raw.conn.dead
    raw.frames()
    raw.feed(raw.headers(sid, REQ, end_stream=False) + F.rst_stream(sid, F.CANCEL))
    assert_conn_error(raw, F.ENHANCE_YOUR_CALM)


def test_refused_stream_flood_is_cut_off():
    raw = Raw(settings=C.H2Settings(max_concurrent_streams=1, max_resets_per_window=50))
    raw.open(1, post(), end_stream=False)
    data = b"".join(raw.headers(3 + 2 * i, REQ) for i in range(1000))
    events = raw.feed(data)
    assert kinds(events).count(C.StreamReset) == 51
    assert_conn_error(raw, F.ENHANCE_YOUR_CALM, events)


def test_continuation_flood_is_cut_off():
    raw = Raw(settings=C.H2Settings(max_header_block_size=16384))
    data = F.frame_header(0, F.HEADERS, 0, 1) + F.frame_header(0, F.CONTINUATION, 0, 1) * 100_000
    t0 = time.perf_counter()
    events = raw.feed(data)
    assert time.perf_counter() - t0 < 0.5
    assert_conn_error(raw, F.ENHANCE_YOUR_CALM, events)


@pytest.mark.parametrize("name,frame,limit", [
    ("settings", F.settings_frame([(F.SETTINGS_MAX_CONCURRENT_STREAMS, 10)]), "max_settings_per_window"),
    ("settings-ack", F.settings_frame(ack=True), "max_settings_per_window"),
    ("ping", F.ping(b"pingpong"), "max_pings_per_window"),
    ("ping-ack", F.ping(b"pingpong", ack=True), "max_pings_per_window"),
    ("empty-data", F.data_frame(1, b""), "max_empty_data_per_window"),
    ("window-update", F.window_update(1, 1), "max_window_updates_per_window"),
    ("window-update-0", F.window_update(0, 1), "max_window_updates_per_window"),
])
def test_control_frame_floods(name, frame, limit):
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    n = getattr(raw.conn.settings, limit)
    raw.now += 1000  # the handshake's SETTINGS counted in the first window
    raw.feed(frame * n)
    assert not raw.conn.dead
    raw.conn.data_to_send()
    raw.now += 1000  # a new window: the budget is back
    raw.feed(frame * n)
    assert not raw.conn.dead, name
    raw.frames()
    t0 = time.perf_counter()
    events = raw.feed(frame * 100_000)
    assert time.perf_counter() - t0 < 0.5
    assert_conn_error(raw, F.ENHANCE_YOUR_CALM, events)


def test_window_updates_answering_our_data_are_not_a_flood():
    raw = Raw(settings=C.H2Settings(max_window_updates_per_window=5))
    raw.open(1)
    raw.conn.send_headers(1, RESP, False)
    for _ in range(50):
        assert raw.conn.send_data(1, b"x" * 1000, False) == 1000
        raw.feed(F.window_update(1, 1000) + F.window_update(0, 1000))
    assert not raw.conn.dead


def test_unread_control_frames_are_bounded():
    raw = Raw(settings=C.H2Settings(max_pending_outbound=10_000, max_pings_per_window=1_000_000))
    events = raw.feed(F.ping(b"pingpong") * 500)  # 17 octets of ACK each, never drained
    assert not events
    events = raw.feed(F.ping(b"pingpong") * 500)
    frames = raw.frames()
    assert frames[-1].type == F.GOAWAY and frames[-1].error_code == F.ENHANCE_YOUR_CALM
    assert len(frames) < 700
    assert kinds(events) == [C.ConnectionTerminated]


def test_data_to_send_drain_resets_the_control_budget():
    raw = Raw(settings=C.H2Settings(max_pending_outbound=10_000, max_pings_per_window=1_000_000))
    for _ in range(20):
        raw.feed(F.ping(b"pingpong") * 500)
        raw.conn.data_to_send()
    assert not raw.conn.dead


# ---------------------------------------------------------------- flow-control accounting


def test_acknowledgements_are_batched_and_clamped():
    raw = Raw(settings=C.H2Settings(initial_window_size=65536, connection_buffer=0))
    raw.open(1, post(), end_stream=False)
    raw.feed(F.data_frame(1, b"a" * 16384) + F.data_frame(1, b"b" * 16384))
    raw.conn.acknowledge_received(1, 16384)
    assert raw.frames() == []  # less than half a window owed
    raw.conn.acknowledge_received(1, 16384)
    frames = raw.frames()
    # Half the stream window (65536) is owed; the connection's (65536 too) as well.
    assert [(f.stream_id, f.increment) for f in frames] == [(1, 32768), (0, 32768)]
    raw.conn.acknowledge_received(1, 10**9)  # more than was ever received: ignored
    assert raw.frames() == []


def test_data_never_delivered_is_returned_to_the_connection_window():
    raw = Raw(settings=C.H2Settings(initial_window_size=65535, max_concurrent_streams=1))
    raw.open(1, post(), end_stream=False)
    # Refused streams' DATA still counts against the connection window, and comes back by itself.
    raw.feed(raw.headers(3, post(), end_stream=False))
    raw.frames()
    raw.feed(F.data_frame(3, b"z" * 16384) * 3)
    frames = raw.frames()
    assert [(f.type, f.stream_id, f.increment) for f in frames] == [(F.WINDOW_UPDATE, 0, 16384 * 2)]


def test_reset_gives_back_unacknowledged_data():
    raw = Raw(settings=C.H2Settings(initial_window_size=65535, connection_buffer=0))
    raw.open(1, post(), end_stream=False)
    raw.feed(F.data_frame(1, b"a" * 16384) * 2)
    assert raw.frames() == []  # delivered, not acknowledged
    events = raw.feed(F.rst_stream(1, F.CANCEL))
    assert [(type(e), e.remote) for e in events] == [(C.StreamReset, True)]
    assert [(f.stream_id, f.increment) for f in raw.frames()] == [(0, 32768)]
    raw.conn.acknowledge_received(1, 32768)  # late acknowledgement: allowed, ignored
    assert raw.frames() == []
    # Our own reset does the same.
    raw.open(3, post(), end_stream=False)
    raw.feed(F.data_frame(3, b"b" * 16384) * 2)
    raw.conn.reset_stream(3, F.CANCEL)
    assert [(f.type, f.stream_id) for f in raw.frames()] == [(F.RST_STREAM, 3), (F.WINDOW_UPDATE, 0)]


def test_ended_stream_is_acknowledged_after_it_closed_or_released_by_reset_stream():
    raw = Raw(settings=C.H2Settings(initial_window_size=65535, connection_buffer=0))
    raw.open(1, post(), end_stream=False)
    raw.feed(F.data_frame(1, b"a" * 16384) + F.data_frame(1, b"a" * 16384, True))
    raw.conn.send_headers(1, RESP, True)
    raw.frames()
    assert raw.conn.stream_state(1) == S.CLOSED
    raw.conn.acknowledge_received(1, 32768)  # the stream is gone; its data still counts
    assert [(f.stream_id, f.increment) for f in raw.frames()] == [(0, 32768)]
    raw.conn.acknowledge_received(1, 32768)  # nothing left to acknowledge
    assert raw.frames() == []
    raw.open(3, post(), end_stream=False)
    raw.feed(F.data_frame(3, b"c" * 16384) + F.data_frame(3, b"c" * 16384, True))
    raw.conn.send_headers(3, RESP, True)
    raw.conn.reset_stream(3, F.CANCEL)  # ended: no RST, but the buffered data is given back
    assert [(f.type, f.stream_id, f.increment) for f in raw.frames()][-1] == (F.WINDOW_UPDATE, 0, 32768)


@pytest.mark.parametrize("buffer, after_data, after_ack", [
    (1 << 20, [(0, 32768)], []),  # under the buffer: back on arrival, nothing left for the ack
    (16384, [], [(0, 32768)]),  # 16 KiB back on arrival, 16 KiB held until acknowledged
    (0, [], []),  # no buffer: every byte waits for its acknowledgement (16 KiB owed: batched)
])
def test_connection_window_comes_back_on_arrival_under_the_connection_buffer(buffer, after_data, after_ack):
    # The invariant: held == max(0, buffered - connection_buffer). WINDOW_UPDATEs
    # are batched: one goes out once half the connection window (32 KiB) is owed.
    raw = Raw(settings=C.H2Settings(initial_window_size=65535, connection_buffer=buffer))
    raw.open(1, post(), end_stream=False)
    raw.feed(F.data_frame(1, b"a" * 16384) * 2)
    updates = lambda: [(f.stream_id, f.increment) for f in raw.frames()  # noqa: E731
                       if f.type == F.WINDOW_UPDATE and f.stream_id == 0]
    assert updates() == after_data
    raw.conn.acknowledge_received(1, 16384)
    assert updates() == after_ack


def test_a_stalled_stream_never_holds_the_connection_window():
    # Stream 1's reader stopped (nothing acknowledged): it still holds only its
    # own stream window, and stream 3 can use the whole connection window.
    raw = Raw(settings=C.H2Settings(initial_window_size=65535, connection_buffer=1 << 20))
    raw.open(1, post(), end_stream=False)
    raw.feed(F.data_frame(1, b"a" * 16384) * 3 + F.data_frame(1, b"a" * 16383))
    raw.frames()
    raw.open(3, post(), end_stream=False)
    for _ in range(8):  # eight stream windows' worth through the same connection
        events = raw.feed(F.data_frame(3, b"b" * 16384) * 3 + F.data_frame(3, b"b" * 16383))
        assert kinds(events) == [C.DataReceived] * 4
        raw.conn.acknowledge_received(3, 65535)
        raw.frames()


def test_connection_window_is_shared_by_streams():
    raw = Raw()
    raw.open(1, post(), end_stream=False)
    raw.open(3, post(), end_stream=False)
    raw.conn.send_headers(1, RESP, False)
    raw.conn.send_headers(3, RESP, False)
    assert raw.conn.send_data(1, b"a" * 40000, False) == 40000
    assert raw.conn.send_data(3, b"b" * 40000, False) == 25535
    assert raw.conn.window_available(3) == 0 and raw.conn.window_available(1) == 0
    events = raw.feed(F.window_update(0, 1000))
    assert [(type(e), e.stream_id) for e in events] == [(C.WindowUpdated, 0)]
    assert raw.conn.window_available(1) == 1000


def test_frames_split_at_peer_max_frame_size():
    raw = Raw(peer_settings=[(F.SETTINGS_MAX_FRAME_SIZE, 20000), (F.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)])
    raw.feed(F.window_update(0, 1 << 20))
    raw.open(1)
    raw.conn.send_headers(1, RESP + [(b"x-long", b"h" * 30000)], False)
    assert raw.conn.send_data(1, b"d" * 50000, True) == 50000
    frames = raw.frames()
    assert [(f.type, f.length) for f in frames][0][0] == F.HEADERS  # CONTINUATION joined by the reader
    data = of_type(frames, F.DATA)
    assert [f.length for f in data] == [20000, 20000, 10000]
    assert [bool(f.flags & F.FLAG_END_STREAM) for f in data] == [False, False, True]


def test_peer_header_table_size_is_followed():
    p = client_pair()
    p.peer.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    p.pump()
    for _ in range(3):
        p.ours.send_request(REQ + [(b"x-custom", b"value")], True)
    p.pump()
    got = [e for e in p.take_peer() if type(e) is h2.events.RequestReceived]
    assert len(got) == 3 and all(e.headers[-1] == (b"x-custom", b"value") for e in got)


# ---------------------------------------------------------------- fuzz


FRAME_TYPES = st.sampled_from([F.DATA, F.HEADERS, F.PRIORITY, F.RST_STREAM, F.SETTINGS, F.PUSH_PROMISE, F.PING,
                               F.GOAWAY, F.WINDOW_UPDATE, F.CONTINUATION, 0x0B, 0x42])
STREAM_IDS = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 101, MAX])
HEADER_SETS = st.sampled_from([REQ, post(3), RESP, [(b"x", b"y")], [(b"grpc-status", b"0")], [], REQ + [
    (b"content-length", b"0")], [(b":method", b"CONNECT"), (b":authority", b"a:1")]])


@st.composite
def frames(draw, enc):
    ftype = draw(FRAME_TYPES)
    sid = draw(STREAM_IDS)
    kind = draw(st.integers(0, 3))
    if ftype in (F.HEADERS, F.CONTINUATION) and kind < 3:
        block = enc.encode(draw(HEADER_SETS))
        return F.headers_frames(sid or 1, block, draw(st.booleans()))
    if ftype == F.DATA and kind < 3:
        return F.data_frame(sid or 1, draw(st.binary(max_size=40)), draw(st.booleans()))
    if ftype == F.WINDOW_UPDATE and kind < 3:
        return F.window_update(sid, draw(st.integers(1, MAX)))
    if ftype == F.SETTINGS and kind < 2:
        ident = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 0x77]))
        return F.settings_frame([(ident, draw(st.sampled_from([0, 1, 100, 16384, 65535, MAX])))],
                                ack=False)
    if ftype == F.RST_STREAM and kind < 3:
        return F.rst_stream(sid or 1, draw(st.integers(0, 20)))
    if ftype == F.PING and kind < 3:
        return F.ping(draw(st.binary(min_size=8, max_size=8)), draw(st.booleans()))
    flags = draw(st.integers(0, 255))
    return F.raw_frame(ftype, flags, sid, draw(st.binary(max_size=24)))


def check_healthy_or_goaway(conn, events, out):
    parsed = parse(out[len(F.PREFACE):] if out.startswith(F.PREFACE) else out)
    goaways = of_type(parsed, F.GOAWAY)
    terminated = [e for e in events if type(e) is C.ConnectionTerminated and not e.remote]
    if conn.dead:
        assert len(goaways) == 1 and parsed[-1].type == F.GOAWAY
        assert len(terminated) == 1 and terminated[0].error_code == goaways[0].error_code
        assert goaways[0].error_code != F.INTERNAL_ERROR, goaways[0].data
    else:
        assert not goaways and not terminated


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans(), st.booleans())
def test_random_frame_sequences_never_raise(data, client_side, split):
    conn = C.H2Connection(client_side, C.H2Settings(max_concurrent_streams=3))
    conn.initiate()
    if client_side:
        conn.send_request(REQ, False)
        conn.send_request(post(), True)
    out = conn.data_to_send()
    enc = HP.Encoder()
    wire = b"" if client_side else F.PREFACE
    wire += F.settings_frame([])
    for _ in range(data.draw(st.integers(0, 25))):
        wire += data.draw(frames(enc))
    events = []
    if split:
        cut = data.draw(st.integers(0, len(wire)))
        events += conn.receive_data(wire[:cut], 0)
        events += conn.receive_data(wire[cut:], 1)
    else:
        events += conn.receive_data(wire, 0)
    out += conn.data_to_send()
    check_healthy_or_goaway(conn, events, out)
    # Whatever state it is in, the API stays usable (or refuses cleanly).
    for sid in (1, 3):
        try:
            conn.send_data(sid, b"x", True)
        except C.H2UsageError:
            pass
        conn.acknowledge_received(sid, 10)
        conn.reset_stream(sid, 8)
    conn.data_to_send()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(blob, client_side):
    conn = C.H2Connection(client_side, C.H2Settings())
    conn.initiate()
    prefix = b"" if client_side else F.PREFACE
    events = conn.receive_data(prefix + F.settings_frame([]) + blob, 0)
    check_healthy_or_goaway(conn, events, conn.data_to_send())


def _load_pure():
    import importlib.util
    from pathlib import Path

    source = Path(C.__file__).with_name("h2conn.py")
    spec = importlib.util.spec_from_file_location("meshproxy_h2conn_pure", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pure_source_behaves_the_same():
    """The uncompiled source produces the same bytes and events (one source for both builds)."""
    pure = _load_pure()
    assert not pure.__file__.endswith(".so")

    def script(mod):
        conn = mod.H2Connection(False, mod.H2Settings(max_concurrent_streams=2, initial_window_size=65535))
        conn.initiate()
        enc = HP.Encoder()
        log = []
        wire = [
            F.PREFACE + F.settings_frame([(F.SETTINGS_INITIAL_WINDOW_SIZE, 1000)]) + F.settings_frame(ack=True),
            F.headers_frames(1, enc.encode(post(10)), False),
            F.data_frame(1, b"0123456789"),
            F.headers_frames(3, enc.encode(REQ), True) + F.headers_frames(5, enc.encode(REQ), True),
            F.headers_frames(1, enc.encode([(b"t", b"1")]), True),
            F.ping(b"abcdefgh") + F.window_update(1, 5000) + F.data_frame(3, b"late"),
            F.headers_frames(7, enc.encode(REQ + [(b"Bad", b"x")]), True),
            F.window_update(0, MAX),
        ]
        for i, chunk in enumerate(wire):
            events = conn.receive_data(chunk, i)
            log.append([repr(e).replace("meshproxy_h2conn_pure", "") for e in events])
            if i == 2:
                conn.acknowledge_received(1, 10)
                conn.send_headers(1, RESP, False)
                log.append(conn.send_data(1, b"x" * 3000, False))
            if i == 3:  # a body and its end together: END_STREAM on the body's frame
                conn.send_headers(3, RESP, False)
                log.append(conn.send_data(3, b"ok", False))
                conn.end_stream(3)
            log.append(conn.data_to_send())
        return log

    assert script(pure) == script(C)


def test_byte_at_a_time_equals_whole():
    raw = Raw()
    data = raw.headers(1, post(5), False) + F.data_frame(1, b"hel") + F.ping(b"abcdefgh") + \
        F.data_frame(1, b"lo") + raw.headers(1, [(b"x", b"y")], True)
    other = Raw()
    whole = other.feed(data)
    one = []
    for i in range(len(data)):
        one += raw.feed(data[i:i + 1])
    assert [repr(e) for e in one] == [repr(e) for e in whole]
    assert raw.conn.data_to_send() == other.conn.data_to_send()
