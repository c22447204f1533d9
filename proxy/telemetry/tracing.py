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


# Requests' own attributes (method, URL, server, protocol) per distinct request line, per tracer: a busy
# service sees the same few again and again. Bounded: cleared when full.
REQUEST_CACHE_LIMIT = 1024


def request_attributes(inbound, direction, head):
    """(span name, the request's attributes as a tuple) from its head, per OpenTelemetry's HTTP conventions."""
    method = head.method
    known = method in KNOWN_METHODS
    name = method.decode("latin-1") if known else "HTTP"
    attrs = [("http.request.method", name if known else "_OTHER")]
    if not known:
        attrs.append(("http.request.method_original", method.decode("latin-1")))
    target = head.target
    scheme = "http"
    if method == b"CONNECT":
        path, query = b"", b""
        authority = target
    else:
        authority = head.host
        if target[:1] not in (b"/", b"*"):  # absolute form: the URI names scheme and authority
            scheme_bytes, _, rest = target.partition(b"://")
            scheme = scheme_bytes.decode("latin-1").lower()
            slash = rest.find(b"/")
            authority = rest if slash < 0 else rest[:slash]
            target = b"/" if slash < 0 else rest[slash:]
        path, _, query = target.partition(b"?")
    path_text = path.decode("latin-1")
    query_text = query.decode("latin-1")
    host, port = split_authority(authority) if authority else ("", None)
    default_port = 443 if scheme == "https" else 80
    if port is None and host:
        port = default_port
    if inbound:
        attrs.append(("url.scheme", scheme))
        if path_text:
            attrs.append(("url.path", path_text))
        if query_text:
            attrs.append(("url.query", query_text))
    elif host:
        full = f"{scheme}://{host if ':' not in host else '[' + host + ']'}"
        if port is not None and port != default_port:
            full += f":{port}"
        full += path_text + ("?" + query_text if query_text else "")
        attrs.append(("url.full", full))
    if host:
        attrs.append(("server.address", host))
    if port is not None:
        attrs.append(("server.port", port))
    attrs.append(("network.protocol.name", "http"))
    attrs.append(("network.protocol.version", _VERSIONS.get(head.version, str(head.version))))
    attrs.append(("direction", direction))
    return name, tuple(attrs)


class Tracer:
    """One direction's span maker: inbound spans are SERVER spans, outbound ones CLIENT spans."""

    def __init__(self, direction, exporter, mtls=False):
        self.direction = direction
        self.inbound = direction == "inbound"
        self.kind = KIND_SERVER if self.inbound else KIND_CLIENT
        self.exporter = exporter
        self.mtls = mtls  # outbound: whether meshed hops are mutual TLS (server_id is then proven)
        self.malformed = 0  # requests whose context fields held no valid context (forwarded untouched)
        self.requests = {}  # (method, host, target, version) -> request_attributes()

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

    def describe(self, head):
        """The span name and request attributes of ``head``, made once per distinct request line."""
        key = (head.method, head.host, head.target, head.version)
        found = self.requests.get(key)
        if found is None:
            if len(self.requests) >= REQUEST_CACHE_LIMIT:
                self.requests.clear()
            found = self.requests[key] = request_attributes(self.inbound, self.direction, head)
        return found


class Span:
    """A span in progress: its ids and start, the request's attributes; finished by ``end``."""

    __slots__ = ("tracer", "ctx", "span_id", "start_ns", "attributes", "name", "forwarded", "target", "route")

    def __init__(self, tracer, ctx, ex):
        self.tracer = tracer
        self.ctx = ctx
        self.span_id = new_span_id()
        self.start_ns = time.time_ns()
        self.forwarded = None
        self.target = None
        self.route = None
        self.name, request = tracer.describe(ex.head)
        attrs = list(request)
        meta = ex.meta
        if tracer.inbound and meta is not None:
            client = meta.client
            if client:
                attrs.append(("client.address", client[0]))
                attrs.append(("network.peer.address", client[0]))
                attrs.append(("network.peer.port", client[1]))
            if meta.client_id:
                attrs.append(("client_id", meta.client_id))
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
