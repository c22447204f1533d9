"""The proxy's spans: one per sampled, traced request and direction, attributed per OpenTelemetry's HTTP conventions.

As in Linkerd, the proxy never starts a trace. A request whose head carries a
valid, sampled trace context (``proxy.telemetry.tracecontext``) gets a span:
inbound a SERVER span, outbound a CLIENT span, whose parent is the caller's
span; the request leaves with the proxy's span id in the same format, so the
next hop (the peer proxy or the app) becomes its child. An unsampled or
malformed context, or none, is forwarded untouched and costs the exchange
core one check (``Tracer.begin`` is not even called without a context field).

The exchange core calls ``Tracer.begin`` when a request starts and
``Span.end`` when the exchange ends; the dispatcher calls ``Span.attempt``
when it builds the head an attempt sends. Finished spans go to the
exporter's bounded buffer (``proxy.telemetry.trace_export``).
"""

import random
import time

from proxy.telemetry.otlp import (
    FLAG_HAS_IS_REMOTE,
    FLAG_IS_REMOTE,
    KIND_CLIENT,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    SpanRecord,
)
from proxy.telemetry.tracecontext import extract, replace_h1_fields, replace_h2_fields

# RFC 9110 methods and PATCH (OpenTelemetry's known methods); others are "_OTHER".
KNOWN_METHODS = frozenset((b"CONNECT", b"DELETE", b"GET", b"HEAD", b"OPTIONS", b"PATCH", b"POST", b"PUT",
                           b"TRACE"))
_VERSIONS = {10: "1.0", 11: "1.1", 20: "2"}


def new_span_id():
    """Eight random bytes, never all zero (an invalid id)."""
    while True:
        value = random.getrandbits(64)
        if value:
            return value.to_bytes(8, "big")


def split_authority(authority):
    """``host[:port]`` (IPv6 in brackets) -> (host, port or None); bytes in, str out."""
    text = authority.decode("latin-1")
    if text.startswith("["):
        end = text.find("]")
        host = text[1:end] if end > 0 else text
        rest = text[end + 1:] if end > 0 else ""
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
    return host, (int(port_text) if port_text.isascii() and port_text.isdigit() else None)


class Tracer:
    """One direction's span maker: inbound spans are SERVER spans, outbound ones CLIENT spans."""

    def __init__(self, direction, exporter, mtls=False):
        self.direction = direction
        self.inbound = direction == "inbound"
        self.kind = KIND_SERVER if self.inbound else KIND_CLIENT
        self.exporter = exporter
        self.mtls = mtls  # outbound: whether meshed hops are mutual TLS (server_id is then proven)
        self.malformed = 0  # requests whose context fields held no valid context (forwarded untouched)

    def begin(self, ex):
        """A request with a trace context field started: its Span when the context is valid and sampled."""
        headers = ex.headers
        if headers is None:
            headers = [(name.lower(), value) for name, value in ex.head.header_list()]
        ctx = extract(headers)
        if ctx is None:
            self.malformed += 1
            return None
        if not ctx.sampled:
            return None
        return Span(self, ctx, ex)


class Span:
    """A span in progress: its ids and start, the request's attributes; finished by ``end``."""

    __slots__ = ("tracer", "ctx", "span_id", "start_ns", "attributes", "name", "forwarded", "target", "route",
                 "scheme", "path", "query", "host", "port")

    def __init__(self, tracer, ctx, ex):
        self.tracer = tracer
        self.ctx = ctx
        self.span_id = new_span_id()
        self.start_ns = time.time_ns()
        self.forwarded = None
        self.target = None
        self.route = None
        head = ex.head
        method = head.method
        known = method in KNOWN_METHODS
        self.name = method.decode("latin-1") if known else "HTTP"
        attrs = [("http.request.method", method.decode("latin-1") if known else "_OTHER")]
        if not known:
            attrs.append(("http.request.method_original", method.decode("latin-1")))
        target = head.target
        self.scheme = "http"
        if method == b"CONNECT":
            path, query = b"", b""
            authority = target
        else:
            authority = head.host
            if target[:1] not in (b"/", b"*"):  # absolute form: the URI names scheme and authority
                scheme, _, rest = target.partition(b"://")
                self.scheme = scheme.decode("latin-1").lower()
                slash = rest.find(b"/")
                authority = rest if slash < 0 else rest[:slash]
                target = b"/" if slash < 0 else rest[slash:]
            path, _, query = target.partition(b"?")
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.host, self.port = split_authority(authority) if authority else ("", None)
        if self.port is None and self.host:
            self.port = 443 if self.scheme == "https" else 80
        if tracer.inbound:
            attrs.append(("url.scheme", self.scheme))
            if self.path:
                attrs.append(("url.path", self.path))
            if self.query:
                attrs.append(("url.query", self.query))
            client = ex.meta.client if ex.meta is not None else None
            if client:
                attrs.append(("client.address", client[0]))
                attrs.append(("network.peer.address", client[0]))
                attrs.append(("network.peer.port", client[1]))
            client_id = ex.meta.client_id if ex.meta is not None else None
            if client_id:
                attrs.append(("client_id", client_id))
        elif self.host:
            full = f"{self.scheme}://{self.host if ':' not in self.host else '[' + self.host + ']'}"
            if self.port is not None and self.port != (443 if self.scheme == "https" else 80):
                full += f":{self.port}"
            full += self.path + ("?" + self.query if self.query else "")
            attrs.append(("url.full", full))
        if self.host:
            attrs.append(("server.address", self.host))
        if self.port is not None:
            attrs.append(("server.port", self.port))
        attrs.append(("network.protocol.name", "http"))
        attrs.append(("network.protocol.version", _VERSIONS.get(head.version, str(head.version))))
        attrs.append(("direction", tracer.direction))
        self.attributes = attrs

    def attempt(self, ex, target):
        """An attempt goes to ``target`` (the last one is the one the span reports); the route is known now."""
        self.target = target
        if self.route is None and ex.rp is not None:
            self.route = ex.rp.route.name

    def forward_h1(self, raw):
        """The HTTP/1 head an attempt sends, with the proxy's span as the next hop's parent."""
        if self.forwarded is None:
            self.forwarded = self.ctx.forward(self.span_id)
        return replace_h1_fields(raw, self.forwarded)

    def forward_h2(self, fields):
        """The HTTP/2 fields an attempt sends, with the proxy's span as the next hop's parent."""
        if self.forwarded is None:
            self.forwarded = self.ctx.forward(self.span_id)
        return replace_h2_fields(fields, self.forwarded)

    def end(self, ex):
        """The exchange ended (``ex.status``: the status the client got, 0 if none): hand the span to the exporter."""
        tracer = self.tracer
        attrs = self.attributes
        status = ex.status
        code = STATUS_UNSET
        message = ""
        if status:
            attrs.append(("http.response.status_code", status))
            # OpenTelemetry: a server span fails on 5xx; a client span on 4xx as well.
            if status >= 500 or (status >= 400 and not tracer.inbound):
                code = STATUS_ERROR
                attrs.append(("error.type", str(status)))
        else:
            code = STATUS_ERROR
            message = "the client went away before a response"
            attrs.append(("error.type", "cancelled"))
        target = self.target
        if target is not None and not tracer.inbound:
            attrs.append(("network.peer.address", target.host))
            attrs.append(("network.peer.port", target.port))
            if target.identity and target.mesh_port and tracer.mtls:
                attrs.append(("server_id", target.identity))
        if ex.attempts:
            attrs.append(("http.request.resend_count", ex.attempts))
        if self.route is not None:
            attrs.append(("route", self.route))
        ctx = self.ctx
        flags = (ctx.flags & 0xFF) | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        tracer.exporter.offer(SpanRecord(ctx.trace_id, self.span_id, ctx.parent_id, ctx.trace_state, flags,
                                         self.name, tracer.kind, self.start_ns, time.time_ns(), attrs, code,
                                         message))
