"""Accept -> detect -> hand off: the first stage of both directions.

A new connection's metadata (client, local address, original destination) is
read once. Then its first bytes are classified by the fast-path detector,
within ``detect_timeout``; ports in the opaque list skip detection so that
server-speaks-first protocols never wait. HTTP/1 goes to the per-request
relay; everything else (and anything undecided at the deadline) is relayed
as opaque TCP to the connection's target.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from proxy.config import Limits, PortSet
from proxy.core.addr import ConnMeta, Target, accepted_meta, authorized_meta, redirected_meta, sni_meta, tls_meta
from proxy.core.opaque import open_tunnel
from proxy.core.probe import Probe
from proxy.errors import PolicyError, tls_reason
from proxy.exchange.clock import now
from proxy.exchange.context import ExchangeContext
from proxy.http.h1server import H1Server
from proxy.protocol import detect, transport_header
from proxy.telemetry.counters import TcpStats, errno_of
from proxy.telemetry.logging import get_logger
from proxy.transport import tls
from proxy.transport.connect import Connector
from proxy.transport.orig_dst import connection_addresses

if TYPE_CHECKING:
    from proxy.identity.local import LocalIdentity
    from proxy.inbound.authz import ConnGrants, InboundAuthorizer
    from proxy.inbound.server import HeaderTrust
    from proxy.protocol.h2conn import H2Settings
    from proxy.telemetry.tls import TlsStats

log = get_logger("proxy.accept")


class AcceptStage:
    """What one listener needs to take a connection from accept to its handler; built whole by its direction.

    A plain class, not a dataclass: an idle proxy has no other, and ``dataclasses`` costs it about 340 KiB.
    """

    __slots__ = ("direction", "ctx", "connector", "limits", "opaque_ports", "max_connections", "connection_target",
                 "tunnel_target", "refuse_without_target", "connection_protocol", "probe_target",
                 "accept_transport_header", "header_trust", "identity", "tls_stats", "handshake_timeout",
                 "authorizer", "grants", "listener", "open_connections", "_h2_settings", "_early", "_early_timer",
                 "_plain_src", "_plain_labels")

    def __init__(
        self, *, direction: str, ctx: ExchangeContext, connector: Connector, limits: Limits, opaque_ports: PortSet,
        max_connections: int,
        # Where a whole connection is going (no balancer pick): decides refusal and opaque ports.
        connection_target: Callable[[ConnMeta], Target | None],
        # Where an opaque connection is relayed to: may be a balancer's pick, settled when it ends.
        # May raise PolicyError: refused, the connection closed.
        tunnel_target: Callable[[ConnMeta], Target | None],
        # Inbound refuses connections with no target at all, before reading a byte.
        refuse_without_target: bool,
        # Outbound: discovery's protocol hint for a redirected connection ("opaque": no detection).
        connection_protocol: Callable[[ConnMeta], str | None] | None = None,
        # Where the server-first probe connects (default ``tunnel_target``): outbound, decided without
        # logging or counting, since the client may still be judged otherwise once it speaks.
        probe_target: Callable[[ConnMeta], Target | None] | None = None,
        # Inbound: peer proxies start with a transport header naming the app port.
        accept_transport_header: bool = False,
        # Inbound: who may send that header, and which ports it may name. None: no header is obeyed.
        header_trust: HeaderTrust | None = None,
        # Inbound with an identity: mesh TLS (SNI = our name) is terminated here;
        # other TLS passes through to the app untouched.
        identity: LocalIdentity | None = None,
        tls_stats: TlsStats | None = None,
        handshake_timeout: float = 10.0,
        # Inbound authorization (proxy/inbound/authz.py); None: everything is allowed.
        authorizer: InboundAuthorizer | None = None,
        # Inbound: its HTTP connections' authorizations and label sets, remembered per client (or None).
        grants: ConnGrants | None = None,
    ) -> None:
        self.direction = direction
        self.ctx = ctx
        self.connector = connector
        self.limits = limits
        self.opaque_ports = opaque_ports
        self.max_connections = max_connections
        self.connection_target = connection_target
        self.tunnel_target = tunnel_target
        self.refuse_without_target = refuse_without_target
        self.connection_protocol = connection_protocol
        self.probe_target = probe_target
        self.accept_transport_header = accept_transport_header
        self.header_trust = header_trust
        self.identity = identity
        self.tls_stats = tls_stats
        self.handshake_timeout = handshake_timeout
        self.authorizer = authorizer
        self.grants = grants
        # The listening socket's own address when it is bound to one (set once listening): every
        # connection's local address, not asked of the kernel per connection. None: a wildcard.
        self.listener: tuple[str, int] | None = None
        # Connections being detected or relayed as opaque TCP; HTTP ones are in ctx.connections.
        self.open_connections = 0
        # HTTP/2 settings, made at the first HTTP/2 client (the HTTP/2 modules load on first use).
        self._h2_settings: H2Settings | None = None
        # Connections still in their first ``server_first_probe`` seconds, oldest first: every
        # connection of a listener waits the same delay, so one timer (for the oldest) serves them
        # all, instead of two timers armed and cancelled per connection. Its length is bounded by
        # the accept rate times that delay.
        self._early: deque[tuple[float, Accepted]] = deque()
        self._early_timer: asyncio.TimerHandle | None = None
        # The TCP label set of a connection addressed to the listener itself, in plaintext, without an
        # authorization (the usual outbound one), and the label registry it was found in.
        self._plain_src: TcpStats | None = None
        self._plain_labels: object = None

    def __repr__(self) -> str:
        return f"AcceptStage({self.direction}, listener={self.listener})"

    @property
    def detect_timeout(self) -> float:
        return self.limits.detect_timeout

    def h2_settings(self) -> H2Settings:
        if self._h2_settings is None:
            from proxy.http.upstreams import h2_settings

            self._h2_settings = h2_settings(self.limits)
        return self._h2_settings

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """What the listener calls per accepted connection (no Python frame of its own)."""
        return cast("Callable[[], asyncio.Protocol]", partial(Accepted, self))  # compiled: a protocol by shape

    def wait_early(self, conn, delay: float) -> None:
        """Call ``conn.early_deadline()`` ``delay`` (the listener's probe delay) from now."""
        loop = self.ctx.loop
        self._early.append((loop.time() + delay, conn))
        if self._early_timer is None:
            self._early_timer = loop.call_later(delay, self._early_due)

    def _early_due(self) -> None:
        self._early_timer = None
        early = self._early
        loop = self.ctx.loop
        # The loop's clock has millisecond steps: what is due within one is due now.
        due = loop.time() + 0.001
        try:
            while early and early[0][0] <= due:
                conn = early.popleft()[1]
                if conn.queued:
                    conn.early_deadline()
        finally:
            # Even when one connection's callback failed, the others keep their deadlines. At most
            # one firing per EARLY_STEP: under a flood of new connections one timer serves many.
            if early and self._early_timer is None:
                self._early_timer = loop.call_at(max(early[0][0], due + EARLY_STEP), self._early_due)


class Accepted:
    """The protocol of a connection until its protocol is known (compiled: a protocol by shape, as
    uvloop and asyncio's TLS layer call it; accept.pxd types its fields)."""

    def __init__(self, stage: AcceptStage) -> None:
        self.stage = stage
        self.transport: asyncio.Transport | None = None
        self.meta: ConnMeta | None = None
        self.detector = detect.Detector()
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        self.header_pending = False
        self.header_required = False
        self.raw = b""
        # When the first byte after any transport header came (the header timeout counts from it).
        self.first_byte_at = 0.0
        self.probe: Probe | None = None  # the silent client's target, connected early (proxy/core/probe.py)
        self.probe_timer: asyncio.TimerHandle | None = None
        # The connection is counted open (tcp_open_total) once its labels are known,
        # at hand-off; its lifetime counts from the accept.
        self.opened_at = 0.0
        # Waiting in the stage's queue of early deadlines (the probe delay; then ``timer`` takes over).
        self.queued = False
        # The HTTP relay this connection was handed to, when its events pass through this protocol
        # (see ``_relay_to``), and its ``data_received``, bound once.
        self.relay: asyncio.Protocol | None = None
        self.relay_data: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        stage = self.stage
        self.transport = transport
        self.opened_at = now()
        stage.open_connections += 1
        try:
            client, local, orig_dst = connection_addresses(transport, stage.listener)
        except OSError as exc:
            # uvloop already closed the handle under us (its descriptor reads EBADF: seen under a
            # handshake flood). Raised out of here, uvloop would never call connection_lost, and the
            # count above would leak until the listener refused everyone.
            log.debug("connection gone before its accept ran", direction=stage.direction, error=str(exc))
            self.done = True
            stage.open_connections -= 1
            transport.abort()
            return
        meta = accepted_meta(stage.direction, client, local, orig_dst)
        self.meta = meta
        if stage.open_connections + len(stage.ctx.connections) > stage.max_connections:
            log.warning("connection refused: too many connections", direction=stage.direction,
                        client=_fmt(meta.client), limit=stage.max_connections)
            transport.abort()
            return
        if stage.accept_transport_header and meta.orig_dst is None:
            # Possibly a peer proxy: its transport header names the target.
            self.header_pending = True
            default = stage.connection_target(meta)
            if default is not None and default.port in stage.opaque_ports:
                # A server-speaks-first app must not wait for a header that a
                # plain client will never send; a peer proxy writes its header
                # with the connect, so silence this long means "no header".
                self.timer = stage.ctx.loop.call_later(stage.detect_timeout, self._timed_out)
                stage.ctx.loop.call_later(HEADER_WAIT, self._no_header)
            else:
                self._arm_deadlines()
            return
        if self._admit():
            self._arm_deadlines()

    def pause_writing(self) -> None:
        if self.relay is not None:  # nothing is written before the hand-off
            self.relay.pause_writing()

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.resume_writing()

    def _relay_to(self, protocol) -> None:
        """From here ``protocol`` gets this connection's events.

        uvloop's ``set_protocol`` stops and restarts reading, and libuv then registers the
        descriptor with epoll again (an ADD that fails with EEXIST, then a MOD): two more
        ``io_uring_enter`` calls per connection, about as many system calls as its whole request.
        Passing the events on from here costs one call per read instead (``TlsAccepted`` replaces
        the protocol: its transport is the proxy's own TLS layer, where that costs nothing).
        """
        self.relay = protocol
        self.relay_data = protocol.data_received
        # This protocol now lives as long as the connection: the first bytes it detected are the relay's.
        self.detector = _SPENT

    def _arm_deadlines(self) -> None:
        """The detection deadline and the server-first probe, both counted from the accept."""
        stage = self.stage
        delay = stage.limits.server_first_probe
        if 0 < delay < stage.limits.detect_timeout:
            # The usual case: one shared timer until the probe's delay, then a timer of its own
            # for the rest of the detection time (only a connection still silent by then).
            self.queued = True
            stage.wait_early(self, delay)
            return
        self.timer = stage.ctx.loop.call_later(stage.detect_timeout, self._timed_out)
        if delay > 0:
            self.probe_timer = stage.ctx.loop.call_later(delay, self._probe_fire)

    def early_deadline(self) -> None:
        """The probe's delay has passed since the accept (called by the stage's shared timer)."""
        self.queued = False
        if self.done:
            return
        limits = self.stage.limits
        self.timer = self.stage.ctx.loop.call_later(limits.detect_timeout - limits.server_first_probe,
                                                    self._timed_out)
        self._probe_fire()

    def _probe_fire(self) -> None:
        """The client has been silent for the probe delay: connect to its target in case the server speaks first."""
        self.probe_timer = None
        if self.done or self.detector.buffered or self.raw:
            return
        stage, meta = self.stage, self.meta
        assert meta is not None
        if self.header_pending:
            # A peer proxy writes its header with the connect: this silence means a plain client.
            self.header_pending = False
            if not self._admit():
                return
        target = stage.connection_target(meta)
        if target is None:
            return  # the outbound listener addressed directly: nothing to connect to before a request names it
        if stage.authorizer is not None and not stage.authorizer.tcp_allowed(meta, target.port):
            return  # this client may not open the app's port; no connection on its behalf either
        target = (stage.probe_target or stage.tunnel_target)(meta)
        if target is None:
            return
        probe = Probe(target)
        probe.on_speak = self._server_spoke
        self.probe = probe
        probe.start(stage.connector)

    def _server_spoke(self, probe: Probe) -> None:
        """The server talked (or hung up) before the client: an opaque connection, relayed now."""
        if self.done or probe is not self.probe:
            probe.discard()
            return
        if not probe.buffered:
            self._drop_probe()  # hung up without a word: nothing learned, the client's bytes decide
            return
        if self.detector.buffered:
            return  # the client spoke too: its bytes decide, the server's wait in the probe
        self._hand_off(_OPAQUE, b"", False, detected=False)

    def _drop_probe(self) -> None:
        probe, self.probe = self.probe, None
        if probe is not None:
            probe.discard()

    def _no_header(self) -> None:
        if self.header_pending and not self.raw and not self.done:
            self.header_pending = False
            self._admit()

    def _admit(self, pending: bytes = b"") -> bool:
        """Refuse a connection with no target; skip detection on opaque ports (relaying ``pending``).

        False when the connection was handled here.
        """
        stage, transport, meta = self.stage, self.transport, self.meta
        assert transport is not None and meta is not None
        target = stage.connection_target(meta)
        if stage.refuse_without_target and target is None:
            log.warning("connection refused: addressed to the inbound listener itself and no default target is set "
                        "(set MESHPROXY_INBOUND_DEFAULT_TARGET)", direction=stage.direction, client=_fmt(meta.client))
            self._cancel()
            self.done = True
            stage.open_connections -= 1
            self._count_closed(0)
            transport.abort()
            return False
        # The destination's port says what protocol to expect (5432 is
        # PostgreSQL whichever address it is on).
        port = target.port if target is not None else meta.local[1]
        if port in stage.opaque_ports or (stage.connection_protocol is not None
                                          and stage.connection_protocol(meta) == "opaque"):
            # Configured opaque (here, or by discovery for the destination's
            # endpoints): relayed as is, even if it looks like HTTP.
            self._hand_off(_OPAQUE, pending, False, detected=False)
            return False
        return True

    def data_received(self, data: bytes) -> None:
        relay = self.relay_data
        if relay is not None:
            relay(data)
            return
        if self.done:
            return
        if self.header_pending:
            rest = self._read_header(data)
            if rest is None:
                return
            data = rest
        if self.first_byte_at == 0.0 and data:
            self.first_byte_at = self.stage.ctx.loop.time()
        kind = self.detector.feed(data)
        if kind != _NEED_MORE:
            self._hand_off(kind, self.detector.buffered, False)
        elif self.timer is None and not self.queued:
            # Bytes after the deadline passed on a silent connection: they get a deadline of their own.
            self.timer = self.stage.ctx.loop.call_later(self.stage.detect_timeout, self._timed_out)

    def _read_header(self, data: bytes) -> bytes | None:
        """Consume a peer proxy's transport header; the bytes after it, or None to wait/stop.

        A connection that starts with the header's magic from a client not
        trusted to send one is closed: never relayed, never detected as
        something else (the header would otherwise choose a local port).
        """
        assert self.meta is not None
        if not self.raw and data and data[0] != _MAGIC_FIRST:
            # The usual plain client: its first byte says "no header" (no decoder call).
            self.raw = data
            got: object = transport_header.NOT_HEADER
        else:
            self.raw += data
            if self.raw[:_MAGIC_LEN] == transport_header.MAGIC:
                trust = self.stage.header_trust
                refusal = "no rule admits transport headers here" if trust is None else \
                    trust.refusal(self.meta, self.header_required)
                if refusal is not None:
                    self._refuse_header(refusal)
                    return None
            try:
                got = transport_header.decode(self.raw)
            except transport_header.HeaderError as err:
                log.warning("connection closed: malformed transport header", direction=self.stage.direction,
                            client=_fmt(self.meta.client), error=str(err))
                self._close_early()
                return None
            if got is transport_header.NEED_MORE:
                return None
        if self.header_required and got is transport_header.NOT_HEADER:
            # ALPN promised a header: anything else is a broken peer.
            log.warning("connection closed: mesh TLS session without its transport header",
                        direction=self.stage.direction, client=_fmt(self.meta.client), client_id=self.meta.client_id)
            self._close_early()
            return None
        self.header_pending = False
        rest, self.raw = self.raw, b""
        if isinstance(got, transport_header.TransportHeader):
            trust = self.stage.header_trust
            assert trust is not None  # a header is decoded only after its magic was admitted above
            refusal = trust.port_refusal(got.port)
            if refusal is not None:
                self._refuse_header(refusal)
                return None
            # From here on the connection is for the app port the peer named.
            self.meta = redirected_meta(self.meta, (self.meta.local[0], got.port))
            rest = rest[got.size:]
            if not self._admit(rest):
                return None
            if got.protocol == transport_header.PROTO_OPAQUE:
                self._hand_off(_OPAQUE, rest, False)
                return None
        elif self.stage.identity is not None and rest[:1] == b"\x16":
            # TLS: mesh TLS is admitted after its handshake (the transport
            # header travels inside it); other TLS when detection ends.
            pass
        elif not self._admit(rest):
            return None
        return rest if rest else None

    def _refuse_header(self, reason: str) -> None:
        meta = self.meta
        assert meta is not None
        log.warning("connection closed: transport header refused", direction=self.stage.direction,
                    client=_fmt(meta.client), tls=meta.tls, client_id=meta.client_id, reason=reason)
        self._close_early()

    def eof_received(self) -> bool:
        if self.done:
            return bool(self.relay.eof_received()) if self.relay is not None else True
        if self.header_pending or not self.detector.buffered:
            # Closed without a byte (health checkers, port scans): nothing to relay.
            self._cancel()
            self._drop_probe()
            return False
        # The client finished sending before we could tell: what could still be
        # an HTTP request is parsed (and refused) as one, the rest relayed.
        buffered = self.detector.buffered
        self._hand_off(_HTTP1 if detect.could_be_http1(buffered) else _OPAQUE, buffered, True)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        relay = self.relay
        if relay is not None:
            # Its relay's from the hand-off on; the references go, so nothing outlives the connection.
            self.relay = self.relay_data = None
            relay.connection_lost(exc)
            return
        self._cancel()
        self._drop_probe()
        if not self.done:
            self.done = True
            self._count_closed(errno_of(exc))
            self.stage.open_connections -= 1

    def _close_early(self) -> None:
        """Close a connection nothing has been relayed for yet."""
        self._cancel()
        self._drop_probe()
        self.done = True
        self.stage.open_connections -= 1
        self._count_closed(0)
        assert self.transport is not None
        self.transport.abort()

    def _src_stats(self) -> TcpStats:
        """This connection's TCP label set, from what is known of it now."""
        stage = self.stage
        ctx, meta = stage.ctx, self.meta
        if ctx.labels is None or meta is None:
            return ctx.tcp_src
        if meta.orig_dst is None and not meta.tls and meta.authz is None and stage.listener is not None:
            # What the label set depends on is the same for every such connection of a listener bound to
            # one address: found once (its key's hashing was 3.5k instructions per connection).
            src = stage._plain_src
            if src is None or stage._plain_labels is not ctx.labels:
                src = stage._plain_src = ctx.labels.tcp_src(meta)
                stage._plain_labels = ctx.labels
            return src
        return ctx.labels.tcp_src(meta)

    def _count_closed(self, err) -> None:
        """A connection that ends before any relay took it: counted open and closed at once."""
        tcp = self._src_stats()
        tcp.opened += 1
        tcp.close(self.opened_at, err)

    def _timed_out(self) -> None:
        self.timer = None
        if self.done:
            return
        buffered = self.detector.buffered
        if not buffered:
            # Nothing to judge yet: the first bytes decide, whenever they come.
            # Committing to an opaque relay now would let a client wait out the
            # deadline and then send HTTP that nobody parses.
            return
        # Undecided bytes at the deadline: what could still be an HTTP request
        # is parsed as one (the header timeout bounds it from its first byte).
        self._hand_off(_HTTP1 if detect.could_be_http1(buffered) else _OPAQUE, buffered, False)

    def _cancel(self) -> None:
        self.queued = False  # the stage's queue drops it when its time comes
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.probe_timer is not None:
            self.probe_timer.cancel()
            self.probe_timer = None

    def _hand_off(self, kind, buffered: bytes, eof, detected=True) -> None:
        self._cancel()
        self.done = True
        stage, transport, meta = self.stage, self.transport, self.meta
        assert transport is not None and meta is not None
        probe, self.probe = self.probe, None
        if probe is not None and (kind != _OPAQUE or probe.closed):
            # HTTP, HTTP/2 and TLS open upstreams of their own.
            probe.discard()
            probe = None
        if kind == _TLS and stage.identity is not None and not meta.tls:
            hello = self.detector.client_hello
            if hello is not None and _is_mesh_name(hello.sni, stage.identity):
                self._terminate(buffered)
                return
        tcp: TcpStats | None = None
        if stage.authorizer is not None:
            # The port the client wanted: the app port behind this proxy.
            target = stage.connection_target(meta)
            port = target.port if target is not None else meta.local[1]
            if kind == _HTTP1 or kind == _H2:
                # HTTP is judged per request (routes); the relay asks meta.authz.
                if stage.grants is not None:
                    meta, tcp = stage.grants.http(meta, port)
                    self.meta = meta
                else:
                    meta = self.meta = authorized_meta(meta, stage.authorizer.http(meta, port))
            elif not stage.authorizer.tcp(meta, port, transport):
                if probe is not None:
                    probe.discard()
                self._close_early()
                return
        if kind == _HTTP1:
            # From here the relay's own set of connections counts it.
            stage.open_connections -= 1
            conn = H1Server(stage.ctx, meta, self.first_byte_at)
            conn.tcp = tcp if tcp is not None else self._src_stats()
            conn.tcp.opened += 1
            conn.opened_at = self.opened_at
            self._relay_to(conn)
            conn.connection_made(transport)
            conn.data_received(buffered)
            return
        if kind == _H2:
            from proxy.http.h2server import H2Server

            stage.open_connections -= 1
            server = H2Server(stage.ctx, meta, stage.h2_settings())
            server.tcp = tcp if tcp is not None else self._src_stats()
            server.tcp.opened += 1
            server.opened_at = self.opened_at
            self._relay_to(server)
            server.connection_made(transport)
            server.data_received(buffered)
            return
        if kind == _TLS and self.detector.client_hello is not None:
            meta = self.meta = sni_meta(meta, self.detector.client_hello.sni)
        # The probe's pick is the connection's: no second pick for the same client.
        refused: PolicyError | None = None
        try:
            target = probe.target if probe is not None else stage.tunnel_target(meta)
        except PolicyError as err:  # outbound: an EgressNetwork does not allow this destination
            target, refused = None, err
        if target is None:
            if refused is not None:
                log.info("connection closed: refused by policy", direction=stage.direction, client=_fmt(meta.client),
                         protocol=_KIND_NAMES.get(kind, "opaque"), error=refused.reason)
            else:
                log.warning("opaque connection closed: no destination to forward it to", direction=stage.direction,
                            client=_fmt(meta.client), protocol=_KIND_NAMES.get(kind, "opaque"))
            stage.open_connections -= 1
            self._count_closed(0)
            transport.abort()
            return
        tcp = self._src_stats()
        tcp.opened += 1
        open_tunnel(stage, transport, meta, target, buffered, eof, kind, probe, tcp, self.opened_at)

    def _terminate(self, buffered: bytes) -> None:
        """Mesh TLS for our identity: the handshake runs here, the decrypted
        connection starts over (transport header, detection) in a TlsAccepted."""
        stage, meta, transport = self.stage, self.meta, self.transport
        assert stage.identity is not None and meta is not None and transport is not None
        mesh = stage.identity.tls
        if mesh is None:
            log.warning("connection closed: mesh TLS arrived before this proxy has a certificate",
                        direction=stage.direction, client=_fmt(meta.client))
            self._close_early()
            return
        inner = TlsAccepted(stage, meta)
        inner.opened_at = self.opened_at

        def done(err: BaseException | None) -> None:
            if err is None:
                return
            reason = tls_reason(err) if isinstance(err, ssl.SSLError) else (str(err) or type(err).__name__)
            assert stage.tls_stats is not None  # set wherever an identity is
            stage.tls_stats.failed(reason)
            log.info("mesh TLS handshake failed", direction=stage.direction, client=_fmt(meta.client), error=reason)
            if not inner.started:
                # The connection ends before the inner protocol ever held it.
                stage.open_connections -= 1
                self._count_closed(0)

        # From here the connection's count is carried by ``inner``.
        tls.serve_handshake(stage.ctx.loop, transport, buffered, cast(asyncio.Protocol, inner), mesh.server,
                            stage.handshake_timeout, done)


class TlsAccepted(Accepted):
    """The decrypted side of a connection whose mesh TLS this proxy terminated."""

    def __init__(self, stage: AcceptStage, outer_meta: ConnMeta) -> None:
        super().__init__(stage)
        self.outer_meta = outer_meta
        self.started = False

    def _relay_to(self, protocol) -> None:
        """The TLS layer's transport takes ``protocol`` itself: no epoll registration to redo there."""
        transport = self.transport
        assert transport is not None
        transport.set_protocol(cast(asyncio.Protocol, protocol))  # compiled: a protocol by shape

    def connection_made(self, transport: asyncio.Transport) -> None:
        # Called once the handshake succeeded; the connection was counted at accept.
        self.started = True
        stage = self.stage
        self.transport = transport  # asyncio's TLS transport
        ssl_object = transport.get_extra_info("ssl_object")
        client_id = tls.peer_identity(ssl_object)
        assert stage.tls_stats is not None  # set wherever an identity is
        stage.tls_stats.connected(client_id, ssl_object is not None and ssl_object.session_reused)
        self.meta = tls_meta(self.outer_meta, client_id)
        self.timer = stage.ctx.loop.call_later(stage.detect_timeout, self._timed_out)
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == tls.TRANSPORT_ALPN:
            # The peer addressed our inbound port: the header names the app port.
            self.header_pending = True
            self.header_required = True
            return
        self._admit()


def _is_mesh_name(sni: str | None, identity) -> bool:
    """Mesh TLS is for us: our own name, or another mesh identity of our trust
    domain (a peer that expects someone else then fails verification with a
    clear "hostname mismatch", instead of reaching the app). Any other SNI is
    the app's own TLS."""
    if sni is None:
        return False
    return sni == identity.name or sni.endswith(".serviceaccount.identity." + identity.settings.trust_domain)


_MAGIC_LEN = len(transport_header.MAGIC)
_MAGIC_FIRST = transport_header.MAGIC[0]
# The step of the listener's shared early timer: the server-first probe of a silent connection
# starts up to this much after its delay (MESHPROXY_SERVER_FIRST_PROBE).
EARLY_STEP = 0.005
HEADER_WAIT = 0.1  # seconds a connection to an opaque-port default target waits for a transport header

# detect's results (C ints where compiled).
_NEED_MORE = detect.NEED_MORE
_HTTP1 = detect.HTTP1
_H2 = detect.H2
_TLS = detect.TLS
_OPAQUE = detect.OPAQUE
# An empty detector in place of a handed-off connection's own (nothing reads it after the hand-off).
_SPENT = detect.Detector()
_KIND_NAMES = {detect.HTTP1: "http/1", detect.H2: "h2", detect.TLS: "tls", detect.OPAQUE: "opaque"}




def _fmt(addr: tuple) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else ""
