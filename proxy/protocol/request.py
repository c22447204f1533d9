"""What every request head tells the layers above, whatever its protocol: the fields routing and policy read.

``RequestLine`` is the common base: the HTTP/1 parser's ``RequestHead``
extends it, and ``h2_request_line`` builds one from HTTP/2 fields, so the
exchange core reads method, target, host and the rest as C fields without
knowing which protocol the request came in on.
"""

from proxy.protocol.l5d import DST_OVERRIDE

# The fields that may carry a trace context (proxy/telemetry/tracecontext.py
# reads them); their lengths let every other field by after one comparison.
TRACE_CONTEXT_FIELDS = frozenset((b"traceparent", b"grpc-trace-bin", b"x-b3-spanid", b"b3"))


class RequestLine:
    """method, target (the path; the authority for CONNECT), host (Host or :authority), dst_override, version,
    upgrade, trace_context (a field that may carry a trace context is present: only then is tracing asked)."""

    def __repr__(self):
        return f"<{type(self).__name__} {self.method!r} {self.target!r} host={self.host!r} version={self.version}>"


def h2_request_line(headers):
    """The request line of an HTTP/2 request's fields (version 20, never an upgrade)."""
    line: RequestLine = RequestLine.__new__(RequestLine)
    method = b"GET"
    target = b"/"
    host = None
    fallback_host = None
    dst_override = None
    traced = False
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":path":
            target = value
        elif name == b":authority":
            host = value
        elif name == b"host":
            fallback_host = value
        elif name == DST_OVERRIDE:
            dst_override = value
        elif (len(name) == 11 or len(name) == 14 or len(name) == 2) and name in TRACE_CONTEXT_FIELDS:
            traced = True
    if host is None:
        host = fallback_host
    if method == b"CONNECT":
        target = host or b""
    line.method = method
    line.target = target
    line.host = host
    line.dst_override = dst_override
    line.version = 20
    line.upgrade = None
    line.trace_context = traced
    return line
