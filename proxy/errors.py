"""Errors typed by who caused them, each carrying the HTTP status it maps to.

Each direction has one ``rescue`` function that turns any of these into the
synthesized response (with an ``l5d-proxy-error`` header naming ``reason``) and
one log line at ``level``. ``closes`` says the client connection cannot be
reused afterwards (its framing can no longer be trusted).
"""

from __future__ import annotations

import ssl


class ProxyError(Exception):
    status: int = 502
    reason: str = "proxy error"
    level: str = "warning"
    closes: bool = False
    failure: bool = True  # counts against success rates (a route's redirect does not)
    fields: tuple[tuple[str, str], ...] = ()  # extra response header fields
    # HTTP/2: the RST_STREAM code when the response had started and can only be cut.
    reset_code: int = 0x2  # INTERNAL_ERROR
    # A gRPC request is answered trailers-only with this grpc-status instead of the HTTP status (as
    # Linkerd does: gRPC clients read errors from grpc-status, and map a bare 502 to UNAVAILABLE without
    # the reason). Codes follow Linkerd's: unavailable for what a retry elsewhere may cure, deadline
    # exceeded for timeouts, permission denied for policy. A cut response ends with it in trailers.
    grpc_status: int = 14  # UNAVAILABLE

    def __init__(self, reason: str | None = None, *, status: int | None = None) -> None:
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status
        super().__init__(self.reason)


# ---- caused by the client that sent the request (the downstream peer) --------


class ClientError(ProxyError):
    """The request was malformed or ambiguous; nothing of it is forwarded."""

    status = 400
    reason = "malformed request"
    level = "info"
    closes = True
    grpc_status = 13  # INTERNAL: gRPC's own mapping of HTTP 400


class HeaderTimeout(ClientError):
    """The request head did not arrive whole within MESHPROXY_HEADER_TIMEOUT (a slow or stalled client)."""

    status = 408
    reason = "request head timed out"


# ---- caused by routing: the request names no usable destination -------------


class RoutingError(ProxyError):
    status = 400
    reason = "no destination"
    level = "info"
    grpc_status = 5  # NOT_FOUND, as Linkerd answers a request no route matches


class NoDestination(RoutingError):
    reason = "request has no destination (no host)"


class LoopDetected(RoutingError):
    status = 502
    reason = "request addressed to the proxy itself"
    level = "warning"
    grpc_status = 10  # ABORTED, Linkerd's code for a loop


class OwnAddress(LoopDetected):
    """The destination is one of this proxy's own listeners (admin, outbound, inbound, tap), under any
    spelling or name: relaying there would loop, or hand the admin endpoints to the client.

    403, not a 5xx: the request is refused as addressed, and must not be retried.
    """

    status = 403
    reason = "destination is this proxy's own listener"
    grpc_status = 7  # PERMISSION_DENIED: refused as addressed, not to be retried


# ---- caused by the upstream (the app or remote server we forward to) ---------


class UpstreamError(ProxyError):
    status = 502
    reason = "upstream error"


class ConnectRefused(UpstreamError):
    reason = "connection refused"


class ConnectFailed(UpstreamError):
    reason = "connect failed"


class ConnectTimeout(UpstreamError):
    status = 504
    reason = "connect timed out"
    grpc_status = 4  # DEADLINE_EXCEEDED


class ResponseTimeout(UpstreamError):
    status = 504
    reason = "response timed out"
    closes = True
    grpc_status = 4  # DEADLINE_EXCEEDED


class RouteTimeout(UpstreamError):
    """A route's whole-request timeout (policy) passed before any response head, retries included.

    The upstream was too slow; the request was complete, so the client
    connection stays usable (``fail`` still closes it if the body was not).
    """

    status = 504
    reason = "request timed out"
    reset_code = 0x8  # CANCEL: the proxy gave up on the stream, nothing broke
    grpc_status = 4  # DEADLINE_EXCEEDED


class RouteIdleTimeout(RouteTimeout):
    """A route's idle timeout: no byte either way for its duration (Linkerd's IDLE_TIMEOUT apart from the
    whole-request REQUEST_TIMEOUT in the route metrics' ``error`` label)."""


class UpstreamReset(UpstreamError):
    reason = "connection closed before response"
    closes = True


class StreamReset(UpstreamReset):
    """The upstream reset the HTTP/2 stream (RST_STREAM ``code``); its connection lives on."""

    def __init__(self, code: int) -> None:
        super().__init__(f"upstream reset the stream (error code {code})")
        self.code = code
        if code:
            self.reset_code = code  # a cut response passes the upstream's reason on


class StreamGoAway(UpstreamReset):
    """The upstream's GOAWAY (``code``) came before it took the stream (its id above the last one it
    processed): like a REFUSED_STREAM, the request was provably not processed; Linkerd's route metrics label
    it GO_AWAY apart from a reset."""

    def __init__(self, code: int) -> None:
        super().__init__(f"upstream went away before processing the stream (GOAWAY error code {code})")
        self.code = code


class Http1ConnectionLost(UpstreamReset):
    """The upstream's HTTP/1 connection closed or failed before the response ended. Apart from an HTTP/2
    connection's loss because the route metrics tell them apart, as Linkerd's do: hyper's HTTP/1 errors carry
    no HTTP/2 error (UNKNOWN), a lost HTTP/2 connection is an HTTP/2 I/O error (IO)."""


class PeerTlsFailed(UpstreamError):
    """Mutual TLS with a meshed peer failed: wrong identity, untrusted or expired certificate."""

    reason = "mesh TLS handshake failed"


class BadResponse(UpstreamError):
    reason = "invalid response from upstream"
    closes = True


class UpstreamBroke(BadResponse):
    """The upstream broke an HTTP/2 rule (a head over the limit or malformed, more data than its window, a
    broken header block): the proxy reset its stream, or closed its connection. The client's connection is
    not at fault and lives on."""

    closes = False


# ---- caused by policy: the request is well-formed but not allowed ------------


class PolicyError(ProxyError):
    status = 403
    reason = "forbidden by policy"
    level = "info"
    grpc_status = 7  # PERMISSION_DENIED


class Unauthorized(PolicyError):
    """Inbound authorization denied the client (identity, network or route)."""

    reason = "unauthorized request"


class RateLimited(PolicyError):
    """Inbound: the Server's HTTPLocalRateLimitPolicy refused the request before it reached the app."""

    status = 429
    reason = "too many requests"
    grpc_status = 8  # RESOURCE_EXHAUSTED


class EgressDenied(PolicyError):
    """Outbound: an EgressNetwork (or its route) does not allow traffic to this destination."""

    reason = "egress denied by policy"


class RouteRedirect(PolicyError):
    """Not a failure: the matched route answers with a redirect (HTTPRoute RequestRedirect)."""

    status = 302
    level = "debug"
    failure = False
    grpc_status = 5  # NOT_FOUND: a gRPC client cannot follow a redirect (Linkerd's code too)

    def __init__(self, location: str, status: int) -> None:
        super().__init__(f"redirected by route to {location}", status=status)
        self.fields = (("location", location),)


# ---- caused by identity: this proxy cannot prove who it is yet ----------------


class IdentityError(ProxyError):
    status = 503
    reason = "no identity certificate yet"


# ---- caused by the proxy's own state ------------------------------------------


class LoadShed(ProxyError):
    """More requests in flight than MESHPROXY_OUTBOUND_MAX_IN_FLIGHT."""

    status = 503
    reason = "load shed: too many requests in flight"


class NoEndpoints(ProxyError):
    """Discovery knows the service, but no endpoint became ready within the queue timeout."""

    status = 503
    reason = "no ready endpoints"


class Draining(ProxyError):
    status = 503
    reason = "proxy is shutting down"
    level = "info"
    closes = True


def connect_error(exc: BaseException) -> ProxyError:
    """Map an exception raised while connecting upstream to its typed error.

    Typed errors pass as they are: the connector refuses some destinations
    itself (``OwnAddress``, ``IdentityError``).
    """
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, ssl.SSLError):
        return PeerTlsFailed(f"mesh TLS handshake failed: {tls_reason(exc)}")
    if isinstance(exc, TimeoutError):
        return ConnectTimeout()
    if isinstance(exc, ConnectionRefusedError):
        return ConnectRefused()
    if isinstance(exc, OSError):
        detail = exc.strerror or type(exc).__name__
        return ConnectFailed(f"connect failed: {detail.lower()}")
    return ConnectFailed()


def tls_reason(err: ssl.SSLError) -> str:
    """A short, bounded description of a failed handshake (metric label and error text)."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return (err.verify_message or "certificate verify failed").lower()
    return (err.reason or type(err).__name__).lower().replace("_", " ")
