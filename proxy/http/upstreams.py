"""Which relay carries an attempt: the one place that maps (client protocol, target, request) to an up end.

- ``CONNECT`` from an HTTP/1 client: a raw tunnel to the target (through
  its proxy with an opaque transport header when meshed). Over HTTP/2 it is
  refused (501): extended CONNECT is not supported.
- An HTTP/1 ``Upgrade`` (WebSocket and the like): a fresh HTTP/1 connection,
  never pooled, so that a 101 can take it over; to a meshed peer it starts
  with a transport header saying HTTP/1 follows.
- Otherwise HTTP/1 to a meshed peer, or to an endpoint hinted ``h2``,
  travels as a stream of a multiplexed HTTP/2 connection (with
  ``l5d-orig-proto`` to a peer, which restores HTTP/1 for its app, unless
  the endpoint's app speaks HTTP/2 itself).
- HTTP/2 that a peer carried for an HTTP/1 app (``l5d-orig-proto``) is
  restored and goes over a pooled HTTP/1 connection, as does HTTP/1 to
  anything else; other HTTP/2 stays HTTP/2.

The HTTP/2 modules load on first use: a proxy that never sees HTTP/2 does
not pay their memory.
"""

from proxy import errors
from proxy.exchange.ends import Dispatcher
from proxy.http.convert import h1_request, h2_request
from proxy.http.h1client import H1Pool
from proxy.http.tunnel import ConnectTunnel
from proxy.protocol.l5d import ORIG_PROTO


def h2_settings(limits):
    """The HTTP/2 settings both directions advertise, from the proxy's limits."""
    from proxy.protocol.h2conn import H2Settings

    return H2Settings(max_header_list_size=limits.max_header_bytes,
                      max_concurrent_streams=limits.h2_max_concurrent_streams,
                      initial_window_size=limits.h2_initial_window,
                      connection_buffer=limits.h2_connection_buffer)


class Upstreams(Dispatcher):
    def __init__(self, loop, inbound, connector, tcp_dst, limits, labels=None):
        self.loop = loop
        self.inbound = inbound
        self.connector = connector
        self.tcp = tcp_dst
        self.labels = labels  # each upstream connection's TCP label set, by target (None: all on tcp_dst)
        self.limits = limits
        self.h1 = H1Pool(loop, connector, tcp_dst, limits.max_header_bytes, limits.write_buffer_high,
                         limits.pool_max_idle_per_target, limits.pool_idle_timeout)
        self.h1.labels = labels
        self._h2 = None

    def h2(self):
        if self._h2 is None:
            from proxy.http.h2client import H2Pool

            self._h2 = H2Pool(self.loop, self.connector, self.tcp, h2_settings(self.limits),
                              self.limits.h2_connections_per_target)
            self._h2.labels = self.labels
            self._h2.fallback = self._fallback
            self._h2.probe_timeout = self.limits.connect_timeout
            self._h2.idle_timeout = self.limits.pool_idle_timeout
        return self._h2

    def open(self, ex, target):
        """Start ``ex``'s next attempt on ``target``; raises ProxyError when the request cannot go there."""
        self._open(ex, target)

    def _open(self, ex, target):
        head = ex.head
        span = ex.span
        if span is not None:
            span.attempt(ex, target)
        if ex.headers is None:
            if head.method == b"CONNECT":
                tunnel = ConnectTunnel(ex, target, self.tcp if self.labels is None else self.labels.tcp_dst(target))
                ex.connecting(tunnel)
                self.connector(target, tunnel)
                return
            if not ex.upgrade and (target.mesh_port != 0 or target.protocol == "h2"):
                if ex.up_fields is None:
                    # l5d-orig-proto asks the peer to restore HTTP/1 for its app;
                    # an app discovery says speaks HTTP/2 gets the request as is.
                    ex.up_fields = h2_request(ex, target.mesh_port != 0 and target.protocol != "h2")
                    if span is not None:
                        ex.up_fields = span.forward_h2(ex.up_fields)
                self.h2().open(ex, target)
                return
            self._h1(ex, target, not ex.upgrade)
            return
        if head.method == b"CONNECT":
            raise errors.ClientError("CONNECT over HTTP/2 is not supported", status=501)
        if (self.inbound and _has(ex.headers, ORIG_PROTO)) or (target.mesh_port == 0 and (
                target.protocol == "http1" or (target.protocol is None and self._h2 is not None
                                               and self._h2.speaks_http1(target)))):
            # Carried by a peer proxy for an HTTP/1 app, or an HTTP/1-only endpoint (said by discovery, or
            # learned when it answered the HTTP/2 preface in HTTP/1).
            self._h1(ex, target, True)
            return
        if ex.up_fields is None:
            # An app discovery says speaks HTTP/1, behind a peer proxy: the peer restores HTTP/1 for it.
            ex.up_fields = h2_request(ex, target.mesh_port != 0 and target.protocol == "http1")
            if span is not None:
                ex.up_fields = span.forward_h2(ex.up_fields)
        self.h2().open(ex, target)

    def _fallback(self, ex, target):
        """An attempt held for an endpoint that turned out to speak only HTTP/1: it goes there over HTTP/1."""
        try:
            self._h1(ex, target, True)
        except errors.ProxyError as err:
            ex.upstream_failed(err)

    def _h1(self, ex, target, pooled):
        if ex.up_h1 is None:
            ex.up_h1, ex.up_chunked, ex.up_keeps = h1_request(ex)
            if ex.span is not None:  # the next hop's parent is the proxy's span
                ex.up_h1 = ex.span.forward_h1(ex.up_h1)
        self.h1.open(ex, target, pooled)

    def sweep(self, now):
        self.h1.sweep(now)
        if self._h2 is not None:
            self._h2.sweep(now)

    def drain(self):
        self.h1.draining = True
        self.h1.close_all()

    def close_all(self):
        self.h1.close_all()
        if self._h2 is not None:
            self._h2.close_all()

    def idle_count(self):
        return self.h1.idle_count


def _has(fields, wanted):
    for name, _ in fields:
        if name == wanted:
            return True
    return False
