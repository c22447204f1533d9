"""The accept stage hands an HTTP connection to its relay without replacing the transport's protocol
(proxy/core/accept.py: uvloop's ``set_protocol`` would re-register the descriptor with epoll)."""

from types import SimpleNamespace

from proxy.config import PortSet
from proxy.core.accept import Accepted, AcceptStage
from proxy.http.h1server import H1Server
from tests.exchange.fakes import Rig

REQUEST = b"GET / HTTP/1.1\r\nHost: svc.ns\r\n\r\n"


class _Transport:
    """A plain socket's transport, as the accept stage sees it: records what the protocols ask of it."""

    def __init__(self):
        self.protocols = []
        self.written = []
        self.closing = False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 4140)}.get(name, default)

    def set_protocol(self, protocol):
        self.protocols.append(protocol)

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        self.written.append(data)

    def is_closing(self):
        return self.closing

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        self.closing = True

    abort = close


def _accepted():
    rig = Rig()
    limits = SimpleNamespace(detect_timeout=10.0, server_first_probe=0.0)
    stage = AcceptStage(direction="outbound", ctx=rig.ctx, connector=None, limits=limits, opaque_ports=PortSet(()),
                        max_connections=10, connection_target=lambda meta: None, tunnel_target=lambda meta: None,
                        refuse_without_target=False)
    return rig, stage, Accepted(stage)


def test_an_http1_connection_gets_its_events_through_the_accept_stage():
    rig, stage, accepted = _accepted()
    transport = _Transport()
    accepted.connection_made(transport)
    accepted.data_received(REQUEST)
    assert transport.protocols == []  # the transport's protocol was never replaced
    [relay] = rig.ctx.connections
    assert isinstance(relay, H1Server) and accepted.relay is relay and stage.open_connections == 0
    assert relay.tcp.read_bytes == len(REQUEST)
    assert accepted.detector.buffered == b""  # the first bytes are the relay's: not kept here as well

    accepted.data_received(b"GET /next HTTP/1.1\r\n")  # what the client sends next reaches the relay
    assert relay.tcp.read_bytes == len(REQUEST) + 20
    accepted.pause_writing()
    assert relay.writing_paused
    accepted.resume_writing()
    assert not relay.writing_paused
    accepted.connection_lost(None)
    assert relay.closed and relay not in rig.ctx.connections
    assert accepted.relay is None and accepted.relay_data is None  # nothing outlives the connection


def test_a_client_half_close_after_the_hand_off_is_the_relays_to_answer():
    rig, _stage, accepted = _accepted()
    accepted.connection_made(_Transport())
    accepted.data_received(REQUEST)
    # The request is in flight: the relay keeps the half-closed connection open for its response
    # (before the hand-off, an EOF with nothing buffered closes: False).
    assert accepted.eof_received() is True


def test_connections_to_the_listener_itself_share_one_tcp_label_set():
    rig, stage, _ = _accepted()
    stage.listener = ("127.0.0.1", 4140)
    calls = []

    class _Labels:
        def tcp_src(self, meta):
            calls.append(meta)
            return rig.ctx.tcp_src

    def closed_without_a_byte():  # counted open and closed in its label set by the accept stage
        accepted = Accepted(stage)
        accepted.connection_made(_Transport())
        accepted.connection_lost(None)

    rig.ctx.labels = _Labels()
    for _ in range(3):
        closed_without_a_byte()
    assert len(calls) == 1 and rig.ctx.tcp_src.opened == 3
    rig.ctx.labels = _Labels()  # a new registry: looked up again
    closed_without_a_byte()
    assert len(calls) == 2
    stage.listener = None  # a wildcard listener: each connection's local address may differ
    closed_without_a_byte()
    assert len(calls) == 3
