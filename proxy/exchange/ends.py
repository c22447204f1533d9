"""The two sides of an exchange as the core sees them: the client's end (down) and the upstream's end (up).

A relay implements one of these per protocol (HTTP/1 connection, HTTP/2
stream, tunnel); the core calls nothing else. Every method takes the
exchange first, so a connection can serve one exchange after another (and
an HTTP/2 connection many at once, told apart by ``ex.down_id`` or
``ex.up_id``) without an object per request.

Data moves with *credit*: whoever read bytes from a peer hands them on
with a credit and stops reading (or withholds flow-control window) until
that credit comes back through ``release``. ``send`` takes what it can
(0 when its peer is not reading) and the core keeps the rest, with its
credit, until the end says it can take more.
"""

import cython


class DownEnd:
    """The client's side: an HTTP/1 connection or an HTTP/2 stream the request came in on."""

    def send_informational(self, ex, status, h1head, fields):
        """A 1xx response (not 101) from upstream: ``h1head`` (HTTP/1) or ``fields`` (HTTP/2)."""
        raise NotImplementedError

    def send_head(self, ex, status, h1head, fields, length, end):
        """The final response head; ``length`` is its body length when known (-1 otherwise), ``end``: no body."""
        raise NotImplementedError

    def send(self, ex, data):
        """Response body bytes: how many were taken (0 while the client is not reading)."""
        raise NotImplementedError

    def end_response(self, ex, trailers):
        """The response body is complete (``trailers``: fields or None)."""
        raise NotImplementedError

    def flush_response(self, ex):
        """The upstream's read was processed: anything held back to be sent with later bytes goes now."""
        raise NotImplementedError

    def send_error(self, ex, err):
        """A response synthesized for ``err`` (the one renderer of this protocol)."""
        raise NotImplementedError

    def cut(self, ex, err):
        """The response already started and cannot finish: reset the stream or cut the connection."""
        raise NotImplementedError

    def tunnel(self, ex, status, h1head, transport, rest):
        """101 Switching Protocols or a CONNECT tunnel: hand the client connection and ``transport`` to a byte relay.

        Returns the client's end of the relay (its ``on_close`` is called once
        when the tunnel ends), or None when no tunnel was made.
        """
        raise NotImplementedError

    def release(self, ex, credit):
        """Request bytes the client sent were handed on: let it send more."""
        raise NotImplementedError

    def exchange_done(self, ex):
        """The exchange ended (answered, failed or abandoned): the end goes on with its next request."""
        raise NotImplementedError


class UpEnd:
    """The upstream's side of one attempt: a pooled HTTP/1 connection, an HTTP/2 stream, a tunnel being opened."""

    def send(self, ex, data):
        """Request body bytes: how many were taken (0 while the upstream is not reading)."""
        raise NotImplementedError

    def end_request(self, ex, trailers):
        """The request body is complete (``trailers``: fields or None)."""
        raise NotImplementedError

    def release(self, ex, credit):
        """Response bytes this end handed on were taken by the client: read more."""
        raise NotImplementedError

    def cancel(self, ex):
        """Abandon the attempt (reset the stream, close the connection); nothing more comes from it."""
        raise NotImplementedError


class Picker:
    """A balanced service as the core sees it: picks an endpoint per request and learns how each pick ended
    (implemented by ``proxy.outbound.balance.BalancedService``).

    A connection that asks the same service again (same Host, same policy generation) calls ``route`` here
    directly, without the router, until ``closed`` says the service stopped.
    """

    def route(self, conn, avoid=None):
        """The Target for one request, or QUEUED (``conn.routed`` or ``conn.fail`` come later)."""
        raise NotImplementedError

    def settle(self, target, rtt, outcome):
        """How the pick of ``target`` ended (one of the core's SETTLE_ outcomes), with its round trip ``rtt``."""
        raise NotImplementedError


class Dispatcher:
    """Chooses and starts the up end of an attempt (implemented by ``proxy.http.upstreams.Upstreams``)."""

    def open(self, ex, target):
        """Start ``ex``'s next attempt on ``target``; raises ProxyError when the request cannot go there."""
        raise NotImplementedError


if not cython.compiled:
    # The down end's route cache (C fields in ends.pxd, read and written by
    # the core) and a service's closed mark: uncompiled, their defaults are class attributes.
    for _cls, _name, _default in ((DownEnd, "route_host", None), (DownEnd, "route_target", None),
                                  (DownEnd, "route_service", None), (DownEnd, "route_gen", 0),
                                  (Picker, "closed", False)):
        setattr(_cls, _name, _default)
