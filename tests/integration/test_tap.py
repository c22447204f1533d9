"""The tap server against the real process, with a gRPC client generated from Linkerd's tap.proto:
events for HTTP/1, HTTP/2 and gRPC on both directions, matches, limits, extracted headers, who may
tap (loopback, the tap identity over mesh TLS, nobody else), bad requests, slow and vanishing tap
clients, and the bounds that keep a tap from ever slowing or growing the proxy."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from typing import Any

import grpc
import pytest

from helpers import tapclient
from helpers.clients import clean_env
from helpers.tapclient import TapStream, by_stream, kind, match_all, observe_request

pytestmark = pytest.mark.timeout(120)

OUTBOUND, INBOUND = 2, 1


def _curl(url: str, *args: str) -> bytes:
    done = subprocess.run(["curl", "-sS", "--max-time", "10", *args, url], capture_output=True, timeout=30,
                          env=clean_env(), check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def channel_to():
    channels = []

    def make(mp):
        channel = grpc.insecure_channel(mp.tap_hostport)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        channel.close()


def _http(tap_pb2, **kw):
    return tap_pb2.ObserveRequest.Match(http=tap_pb2.ObserveRequest.Match.Http(**kw))


def _ip(event_addr) -> str:
    import ipaddress

    which = event_addr.ip.WhichOneof("ip")
    if which == "ipv4":
        return str(ipaddress.IPv4Address(event_addr.ip.ipv4))
    six = event_addr.ip.ipv6
    return str(ipaddress.IPv6Address((six.first << 64) | six.last))


def test_outbound_http1_events_are_linkerds_three_with_real_bytes(make_proxy, fresh_upstream, channel_to):
    mp = make_proxy()
    tap_pb2, _, _, http_types = tapclient.modules()
    stream = TapStream(channel_to(mp), observe_request(2))
    stream.wait_open()
    body = _curl(f"http://{mp.outbound_hostport}/bytes/1234?q=1", "-H", f"Host: {fresh_upstream.hostport}")
    _curl(f"http://{mp.outbound_hostport}/echo", "-H", f"Host: {fresh_upstream.hostport}", "-X", "POST", "-d", "xyz")
    assert stream.wait() == grpc.StatusCode.OK  # the limit reached and both requests ended: the stream ends
    streams = by_stream(stream.events)
    assert sorted(streams) == [0, 1] and len(stream.events) == 6
    first = streams[0]
    assert [kind(e) for e in first] == ["request_init", "response_init", "response_end"]
    init = first[0].http.request_init
    assert init.method.registered == http_types.HttpMethod.GET and init.authority == fresh_upstream.hostport
    assert init.path == "/bytes/1234"  # as Linkerd: the path without its query
    assert not init.HasField("scheme")  # origin-form HTTP/1 names no scheme
    for event in first:
        assert event.proxy_direction == OUTBOUND
        assert _ip(event.source) == "127.0.0.1" and event.source.port > 0
        assert (_ip(event.destination), event.destination.port) == ("127.0.0.1", fresh_upstream.port)
        assert event.source_meta.labels["tls"] == "loopback"
        assert event.destination_meta.labels["tls"] == "disabled"  # this proxy has no identity
    rsp = first[1].http.response_init
    assert rsp.http_status == 200 and rsp.since_request_init.ToNanoseconds() > 0
    end = first[2].http.response_end
    assert end.response_bytes == len(body) == 1234  # the real count (Linkerd's proxy reports 0)
    assert end.since_request_init.ToNanoseconds() >= rsp.since_request_init.ToNanoseconds()
    assert not end.eos.HasField("grpc_status_code") and not end.eos.HasField("reset_error_code")
    assert streams[1][0].http.request_init.method.registered == http_types.HttpMethod.POST
    assert len({e.http.request_init.id.base for e in stream.events if kind(e) == "request_init"}) == 1


def test_inbound_http2_and_grpc_status_with_headers_extracted(make_proxy, channel_to):
    from helpers.grpc_service import EchoStub, GrpcServer

    server = GrpcServer()
    try:
        mp = make_proxy({"MESHPROXY_INBOUND_DEFAULT_TARGET": server.hostport})
        stream = TapStream(channel_to(mp), observe_request(2, headers=True))
        stream.wait_open()
        with grpc.insecure_channel(mp.inbound_hostport) as app_channel:
            stub = EchoStub(app_channel)
            assert stub.unary(b"echo:hi", timeout=10) == b"hi"
            with pytest.raises(grpc.RpcError) as failed:
                stub.unary(b"fail:NOT_FOUND:nope", timeout=10)
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert stream.wait() == grpc.StatusCode.OK
    finally:
        server.stop()
    streams = by_stream(stream.events)
    ok, bad = streams[0], streams[1]
    init = ok[0].http.request_init
    assert ok[0].proxy_direction == INBOUND and init.scheme.registered == 0  # http
    names = [h.name for h in init.headers.headers]
    assert names[:4] == [":method", ":scheme", ":authority", ":path"] and "content-type" in names
    assert ok[0].source_meta.labels["tls"] == "disabled"
    assert [h.name for h in ok[1].http.response_init.headers.headers][0] == ":status"
    assert ok[2].http.response_end.eos.grpc_status_code == 0
    assert any(h.name == "grpc-status" for h in ok[2].http.response_end.trailers.headers)
    assert bad[2].http.response_end.eos.grpc_status_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_matches_select_requests(make_proxy, make_upstream, channel_to):
    tap_pb2 = tapclient.modules()[0]
    a, b = make_upstream(name="a"), make_upstream(name="b")
    mp = make_proxy()
    Match = tap_pb2.ObserveRequest.Match
    string = Match.Http.StringMatch
    cases = {
        "path prefix": _http(tap_pb2, path=string(prefix="/echo/keep")),
        "authority exact": _http(tap_pb2, authority=string(exact=a.hostport)),
        "method": _http(tap_pb2, method={"unregistered": "PATCH"}),
        "destination port": Match(destination=Match.Tcp(ports=Match.Tcp.PortRange(min=b.port))),
        "not b, any of two paths": match_all(
            Match(**{"not": Match(destination=Match.Tcp(ports=Match.Tcp.PortRange(min=b.port, max=b.port)))}),
            Match(any=Match.Seq(matches=[_http(tap_pb2, path=string(exact="/echo/keep")),
                                         _http(tap_pb2, path=string(exact="/echo/other"))]))),
        "source net": Match(source=Match.Tcp(netmask=Match.Tcp.Netmask(ip={"ipv4": 0x7F000000}, mask=8))),
        "no such net": Match(source=Match.Tcp(netmask=Match.Tcp.Netmask(ip={"ipv4": 0x0A000000}, mask=8))),
    }
    streams = {name: TapStream(channel_to(mp), observe_request(100, match)) for name, match in cases.items()}
    for stream in streams.values():
        stream.wait_open()
    sent = [(a, "GET", "/echo/keep"), (a, "GET", "/echo/other"), (b, "PATCH", "/echo/keep"), (b, "GET", "/x")]
    for upstream, method, path in sent:
        _curl(f"http://{mp.outbound_hostport}{path}", "-X", method, "-H", f"Host: {upstream.hostport}", "-o",
              "/dev/null")
    time.sleep(0.5)
    seen = {}
    for name, stream in streams.items():
        stream.cancel()
        seen[name] = sorted((e.http.request_init.authority, e.http.request_init.path)
                            for e in stream.events if kind(e) == "request_init")
    assert seen["path prefix"] == sorted([(a.hostport, "/echo/keep"), (b.hostport, "/echo/keep")])
    assert seen["authority exact"] == sorted([(a.hostport, "/echo/keep"), (a.hostport, "/echo/other")])
    assert seen["method"] == [(b.hostport, "/echo/keep")]
    assert seen["destination port"] == sorted([(b.hostport, "/echo/keep"), (b.hostport, "/x")])
    assert seen["not b, any of two paths"] == sorted([(a.hostport, "/echo/keep"), (a.hostport, "/echo/other")])
    assert len(seen["source net"]) == 4 and seen["no such net"] == []


def test_refused_requests_are_tapped_too(make_proxy, channel_to):
    """A request the proxy answers itself (no route: 502/503...) still shows, with its status."""
    mp = make_proxy()
    stream = TapStream(channel_to(mp), observe_request(1))
    stream.wait_open()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "10", "-H", "Host: 127.0.0.1:1",
                    f"http://{mp.outbound_hostport}/nowhere"], capture_output=True, timeout=30, env=clean_env())
    assert stream.wait() == grpc.StatusCode.OK
    kinds = [kind(e) for e in stream.events]
    assert kinds == ["request_init", "response_init", "response_end"]
    assert stream.events[1].http.response_init.http_status >= 400


@pytest.mark.parametrize("request_bytes,code,text", [
    (None, grpc.StatusCode.INVALID_ARGUMENT, "limit must be positive"),
    ("no match", grpc.StatusCode.INVALID_ARGUMENT, "missing required field"),
    ("bad port", grpc.StatusCode.INVALID_ARGUMENT, "invalid port number"),
    ("deep", grpc.StatusCode.INVALID_ARGUMENT, "nested deeper"),
])
def test_invalid_tap_requests_get_invalid_argument(make_proxy, channel_to, request_bytes, code, text):
    tap_pb2 = tapclient.modules()[0]
    Match = tap_pb2.ObserveRequest.Match
    if request_bytes is None:
        req = tap_pb2.ObserveRequest(limit=0, match=match_all())
    elif request_bytes == "no match":
        req = tap_pb2.ObserveRequest(limit=5)
    elif request_bytes == "bad port":
        req = tap_pb2.ObserveRequest(limit=5, match=Match(source=Match.Tcp(ports=Match.Tcp.PortRange(min=70000))))
    else:
        match = match_all()
        for _ in range(40):
            match = Match(**{"not": match})
        req = tap_pb2.ObserveRequest(limit=5, match=match)
    mp = make_proxy()
    stream = TapStream(channel_to(mp), req)
    assert stream.wait() == code and text in stream.details
    assert mp.running
    assert mp.metrics().get("tap_refused_total") == 1


def test_unknown_methods_are_unimplemented(make_proxy, channel_to):
    tap_pb2 = tapclient.modules()[0]
    mp = make_proxy()
    channel = channel_to(mp)
    trace = channel.stream_unary("/io.linkerd.proxy.tap.Tap/ObserveTrace",
                                 request_serializer=tap_pb2.ObserveTraceRequest.SerializeToString,
                                 response_deserializer=tap_pb2.ObserveTraceResponse.FromString)
    with pytest.raises(grpc.RpcError) as err:
        trace(iter([tap_pb2.ObserveTraceRequest()]), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_too_many_taps_are_refused_and_cancelled_ones_free_their_place(make_proxy, fresh_upstream, channel_to):
    mp = make_proxy({"MESHPROXY_TAP_MAX_SESSIONS": "2"})
    channel = channel_to(mp)
    first, second = TapStream(channel, observe_request(10)), TapStream(channel, observe_request(10))
    first.wait_open()
    second.wait_open()
    third = TapStream(channel, observe_request(10))
    assert third.wait() == grpc.StatusCode.RESOURCE_EXHAUSTED and "MESHPROXY_TAP_MAX_SESSIONS" in third.details
    assert mp.metrics().get("tap_sessions_open") == 2
    first.cancel()
    deadline = time.monotonic() + 5
    while mp.metrics().get("tap_sessions_open") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    fourth = TapStream(channel, observe_request(1))
    fourth.wait_open()
    _curl(f"http://{mp.outbound_hostport}/echo", "-H", f"Host: {fresh_upstream.hostport}", "-o", "/dev/null")
    assert fourth.wait() == grpc.StatusCode.OK and len(fourth.events) == 3
    second.cancel()
    metrics = mp.metrics()
    assert metrics.get("tap_sessions_total") == 3 and metrics.get("tap_events_total") >= 3


def _raw_h2_observe(port: int, request: bytes, window: int) -> tuple[socket.socket, Any]:
    """A raw tap client: the Observe call sent with a tiny stream window; its socket and h2 connection."""
    import h2.config
    import h2.connection
    import h2.settings

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", "/io.linkerd.proxy.tap.Tap/Observe"),
                            (":authority", "tap"), ("content-type", "application/grpc"), ("te", "trailers")])
    conn.send_data(sid, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)
    sock.sendall(conn.data_to_send())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock, conn


def test_a_tap_client_that_does_not_read_never_slows_or_grows_the_proxy(make_proxy, fresh_upstream):
    """Its events fill the bounded buffer, then are dropped and counted; requests go on at full speed."""
    mp = make_proxy({"MESHPROXY_TAP_BUFFER_BYTES": "16KiB"})
    request = observe_request(1_000_000, headers=True).SerializeToString()
    sock, _ = _raw_h2_observe(mp.tap[1], request, window=0)  # and never read
    try:
        deadline = time.monotonic() + 5
        while mp.metrics().get("tap_sessions_open") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        rss_before = _rss_kib(mp.pid)
        started = time.monotonic()
        load = ["h2load", "-n", "3000", "-c", "4", "--h1", "-H", f":authority: {fresh_upstream.hostport}",
                f"http://{mp.outbound_hostport}/echo"]
        done = subprocess.run(load, capture_output=True, text=True, timeout=60, env=clean_env())
        elapsed = time.monotonic() - started
        assert "3000 succeeded" in done.stdout, done.stdout[-800:]
        metrics = mp.metrics()
        assert metrics.get("tap_events_dropped_total") > 8000  # 9000 events, 16 KiB of them kept
        assert metrics.get("tap_events_total") < 1000
        assert _rss_kib(mp.pid) - rss_before < 20 * 1024, "RSS grew with the dropped events"
        assert elapsed < 30
    finally:
        sock.close()
    deadline = time.monotonic() + 5
    while mp.metrics().get("tap_sessions_open") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mp.metrics().get("tap_sessions_open") == 0  # the vanished client's tap is closed


def test_a_tap_client_with_a_tiny_window_gets_every_event_whole(make_proxy, fresh_upstream):
    """A stream window smaller than one event: the sender stops mid-event, keeps the rest and goes on as the
    window reopens, so the client still decodes every event, in order, and the stream ends OK."""
    import h2.events

    mp = make_proxy()
    tap_pb2 = tapclient.modules()[0]
    sock, conn = _raw_h2_observe(mp.tap[1], observe_request(4).SerializeToString(), window=100)
    try:
        deadline = time.monotonic() + 5
        while mp.metrics().get("tap_sessions_open") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(4):
            _curl(f"http://{mp.outbound_hostport}/bytes/{10 + i}", "-H", f"Host: {fresh_upstream.hostport}")
        data = bytearray()
        status = None
        frames = 0
        deadline = time.monotonic() + 20
        while status is None and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    assert event.flow_controlled_length <= 100  # the window held
                    frames += 1
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    status = dict(event.headers).get(b"grpc-status")
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    assert status == b"0"
    events = []
    while data:
        assert data[0] == 0
        size = int.from_bytes(data[1:5], "big")
        events.append(tap_pb2.TapEvent.FromString(bytes(data[5:5 + size])))
        del data[:5 + size]
    streams = by_stream(events)
    assert sorted(streams) == [0, 1, 2, 3] and frames > len(events)  # events were cut across frames
    for i, one in streams.items():
        assert [kind(e) for e in one] == ["request_init", "response_init", "response_end"]
        assert one[2].http.response_end.response_bytes == 10 + i


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_hostile_bytes_and_silence_on_the_tap_port(make_proxy, fresh_upstream):
    mp = make_proxy({"MESHPROXY_HEADER_TIMEOUT": "1s"})
    # Not HTTP/2 at all: the connection is closed (a GOAWAY first), the proxy goes on.
    with socket.create_connection(mp.tap, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 4)
        sock.settimeout(5)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    # Silence: closed after the header timeout.
    with socket.create_connection(mp.tap, timeout=5) as sock:
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 4
    # A TLS ClientHello to a proxy without an identity: closed.
    with socket.create_connection(mp.tap, timeout=5) as raw:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, OSError)):
            with context.wrap_socket(raw, server_hostname="x"):
                pass
    assert mp.running
    _curl(f"http://{mp.outbound_hostport}/echo", "-H", f"Host: {fresh_upstream.hostport}", "-o", "/dev/null")


def test_oversized_request_message_is_refused(make_proxy):
    mp = make_proxy()
    channel = grpc.insecure_channel(mp.tap_hostport)
    try:
        call = channel.unary_stream("/io.linkerd.proxy.tap.Tap/Observe", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            list(call(b"\x08\x01" + b"\x12\x00" + b"\x22" + b"\xff\xff\x04" + b"x" * 80000, timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        channel.close()
    assert mp.running


def test_tap_disabled_binds_nothing(make_proxy):
    mp = make_proxy({"MESHPROXY_TAP_DISABLED": "true"})
    with pytest.raises(OSError):
        socket.create_connection(mp.tap, timeout=2).close()
    assert "tap_sessions_open" not in mp.admin_request("GET", "/metrics")[2].decode()


# ---- who may tap: mesh TLS ------------------------------------------------------------------

PROXY_ID = "web.default.serviceaccount.identity.cluster.local"
TAP_ID = "tap.linkerd-viz.serviceaccount.identity.cluster.local"
OTHER_ID = "intruder.default.serviceaccount.identity.cluster.local"


@pytest.fixture
def certs(tmp_path):
    from benchmarks.lib import meshtls

    return meshtls.make(tmp_path / "certs", (PROXY_ID, TAP_ID, OTHER_ID))


def _tls_channel(mp, certs, client_id):
    kwargs = {"root_certificates": certs.ca.read_bytes()}
    if client_id is not None:
        kwargs.update(private_key=certs[client_id].key.read_bytes(),
                      certificate_chain=certs[client_id].chain.read_bytes())
    creds = grpc.ssl_channel_credentials(**kwargs)
    return grpc.secure_channel(mp.tap_hostport, creds, options=[("grpc.ssl_target_name_override", PROXY_ID)])


@pytest.mark.parametrize("client_id,allowed", [(TAP_ID, True), (OTHER_ID, False), (None, False)])
def test_over_mesh_tls_only_the_tap_identity_may_tap(make_proxy, fresh_upstream, certs, client_id, allowed):
    mp = make_proxy({"MESHPROXY_IDENTITY_NAME": PROXY_ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(certs.ca),
                     "MESHPROXY_IDENTITY_CERT_FILE": str(certs[PROXY_ID].chain),
                     "MESHPROXY_IDENTITY_KEY_FILE": str(certs[PROXY_ID].key),
                     "MESHPROXY_TAP_IDENTITY": TAP_ID})
    channel = _tls_channel(mp, certs, client_id)
    try:
        stream = TapStream(channel, observe_request(1))
        if allowed:
            stream.wait_open()
            _curl(f"http://{mp.outbound_hostport}/echo", "-H", f"Host: {fresh_upstream.hostport}", "-o", "/dev/null")
            assert stream.wait() == grpc.StatusCode.OK and len(stream.events) == 3
        else:
            assert stream.wait() == grpc.StatusCode.UNAUTHENTICATED
            assert ("Unauthorized peer" in stream.details) if client_id else ("no client identity" in stream.details)
    finally:
        channel.close()


def test_plaintext_tap_from_off_loopback_is_unauthenticated(tmp_path):
    """A client that is not on loopback and has no mesh TLS may not tap: a namespace whose proxy is
    reached at a non-loopback address (10.99.0.1 on its lo) by a gRPC client in the same namespace."""
    import sys

    from helpers.netns import NetNs, NsMeshProxy
    from helpers.ports import free_port

    ns = NetNs("mptap").create()
    try:
        ns.run("ip", "addr", "add", "10.99.0.1/32", "dev", "lo")
        port = free_port()
        with NsMeshProxy(ns, env={"MESHPROXY_TAP_LISTEN": f"0.0.0.0:{port}"}, name="ns-proxy",
                         log_path=tmp_path / "proxy.log") as proxy:
            proxy.start()
            script = (
                "import grpc\n"
                f"ch = grpc.insecure_channel('10.99.0.1:{port}')\n"
                "call = ch.unary_stream('/io.linkerd.proxy.tap.Tap/Observe', request_serializer=lambda b: b,"
                " response_deserializer=lambda b: b)\n"
                "try:\n"
                "    list(call(b'\\x08\\x01\\x12\\x02\\x0a\\x00', timeout=10))\n"
                "    print('OK')\n"
                "except grpc.RpcError as err:\n"
                "    print(err.code().name, err.details())\n"
            )
            done = ns.run(sys.executable, "-c", script, timeout=30)
            assert done.stdout.startswith("UNAUTHENTICATED") and "loopback" in done.stdout, done
    finally:
        ns.delete()
