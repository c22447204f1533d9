"""Raw byte relaying between two transports: opaque TCP, upgraded HTTP connections, CONNECT tunnels.

Each side is a ``TunnelEnd`` protocol whose peer is the other side. Bytes are
written straight through; backpressure pauses reading on one side while the
other side's write buffer is above its high-water mark; a FIN from one side
becomes a write-EOF on the other (half-close), and the pair closes once both
directions ended or either side is lost.
"""

import cython

from proxy import errors
from proxy.exchange.clock import now
from proxy.exchange.ends import UpEnd
from proxy.protocol import transport_header
from proxy.telemetry.counters import errno_of


class TunnelEnd:
    def __init__(self, stats, pending=b""):
        self.transport = None
        self.peer = None
        self.stats = stats
        self.opened_at = 0.0  # now() when its socket was counted open (tcp_connection_duration_ms)
        self.on_close = None
        self.eof = False
        self.closed = False
        self.pending = pending

    # -- wiring ------------------------------------------------------------
    def link(self, peer):
        """Join two ends; queued bytes of each side go out now."""
        self.peer = peer
        peer.peer = self
        for end in (self, peer):
            data = end.pending
            if data:
                end.pending = b""
                end.peer._send(data)
            if end.eof:
                end.peer._send_eof()

    def adopt(self, transport, counted=True, opened_at=0.0):
        """Take over an already connected transport (after a protocol switch); ``counted``: its
        opening was counted (at ``opened_at``, 0: unknown, counted from now) by its previous owner."""
        self.transport = transport
        transport.set_protocol(self)
        self.opened_at = opened_at if opened_at > 0.0 else now()
        if not counted:
            self.stats.opened += 1

    # -- asyncio protocol --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.opened_at = now()
        self.stats.opened += 1

    def data_received(self, data):
        n: cython.Py_ssize_t = len(data)
        self.stats.read_bytes += n
        if self.peer is None:
            self.pending += data
            return
        self.peer._send(data)

    def eof_received(self):
        self.eof = True
        if self.peer is not None:
            self.peer._send_eof()
            if self.peer.eof:
                self.close()
        return True  # keep our write side open: the peer may still answer

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        self.stats.close(self.opened_at, errno_of(exc))
        if self.on_close is not None:
            callback, self.on_close = self.on_close, None
            callback(self)
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    # -- helpers -----------------------------------------------------------
    def _send(self, data):
        if self.transport is None or self.closed:
            return
        self.stats.write_bytes += len(data)
        self.transport.write(data)

    def _send_eof(self):
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:
            self.close()

    def close(self):
        """Close after flushing what is buffered (asyncio's close flushes)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def splice(a_transport, b_transport, a_stats, b_stats, a_to_b=b"", b_to_a=b"", a_opened_at=0.0):
    """Turn two connected transports into a tunnel; returns the two ends.

    ``a_opened_at``: when ``a`` was accepted (its lifetime is counted from
    then; ``b``'s from now).

    ``a_to_b`` are bytes already read from ``a`` that belong to ``b`` (for
    example a client's first WebSocket frame that arrived with its upgrade
    request), likewise ``b_to_a``.
    """
    a = TunnelEnd(a_stats, a_to_b)
    b = TunnelEnd(b_stats, b_to_a)
    a.adopt(a_transport, True, a_opened_at)
    b.adopt(b_transport)
    a.link(b)
    a_transport.resume_reading()
    b_transport.resume_reading()
    return a, b


class ConnectTunnel(UpEnd):
    """The up end of a ``CONNECT host:port`` this proxy tunnels itself: a raw connection to the target.

    A meshed target (a peer proxy's inbound port) is told the app port with
    an opaque transport header, so the peer relays the bytes without
    detection. Once connected, the exchange hands both sides to ``splice``.
    """

    def __init__(self, ex, target, stats):
        self.ex = ex
        self.target = target
        self.stats = stats
        self.transport = None

    def connection_made(self, transport):
        self.stats.opened += 1
        ex = self.ex
        self.ex = None
        if ex is None:
            self.stats.close(0.0, 0)  # the exchange gave up while we connected: no tunnel will count it
            transport.close()
            return
        self.transport = transport
        transport.pause_reading()  # nothing is read until the tunnel is spliced
        target = self.target
        if target.needs_header:
            transport.write(transport_header.encode(target.mesh_port, transport_header.PROTO_OPAQUE))
        ex.upgraded(200, None, transport, b"")

    def connect_failed(self, exc):
        ex = self.ex
        self.ex = None
        if ex is not None:
            ex.upstream_failed(errors.connect_error(exc))

    def data_received(self, data):
        pass  # reading is paused until the splice replaces this protocol

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        pass

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    # -- up end: a CONNECT has no body, and its answer is the tunnel itself
    def send(self, ex, data):
        return 0

    def end_request(self, ex, trailers):
        pass

    def release(self, ex, credit):
        pass

    def cancel(self, ex):
        if self.ex is ex:
            self.ex = None
