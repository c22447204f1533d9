"""The one renderer per protocol: a ``ProxyError`` as the response the proxy writes itself.

Every synthesized response carries the error's status, a one-line
plain-text body and, when it is a failure, an ``l5d-proxy-error`` header
naming the reason (Linkerd's header). Redirects and other non-failures
carry their own fields instead.
"""

from http import HTTPStatus

from proxy.protocol.l5d import PROXY_ERROR


def _phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _reason(err):
    # A reason is ours, but it may quote what a peer sent: no line breaks in a header.
    return err.reason.replace("\r", " ").replace("\n", " ")


def h1_error(err, close):
    """An HTTP/1.1 response for ``err`` (``close``: the client connection ends after it)."""
    reason = _reason(err)
    body = f"{reason}\n".encode("utf-8", "replace")
    lines = [
        f"HTTP/1.1 {err.status} {_phrase(err.status)}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
    ]
    if err.failure:
        lines.append(f"{PROXY_ERROR.decode()}: {reason}")
    lines.extend(f"{name}: {value}" for name, value in err.fields)
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def h2_error(err, request_fields=None):
    """HTTP/2 response fields and body for ``err``. A gRPC request (by ``request_fields``) is answered
    trailers-only (status 200, ``grpc-status``, no body), as gRPC clients read errors; an empty body
    means the fields end the stream."""
    if is_grpc(request_fields):
        return [(b":status", b"200"), (b"content-type", b"application/grpc"), *grpc_trailers(err)], b""
    reason = _reason(err)
    body = f"{reason}\n".encode("utf-8", "replace")
    fields = [
        (b":status", str(err.status).encode()),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if err.failure:
        fields.append((PROXY_ERROR, reason.encode("latin-1", "replace")))
    fields.extend((name.encode("latin-1"), value.encode("latin-1", "replace")) for name, value in err.fields)
    return fields, body


def is_grpc(fields):
    """Whether request ``fields`` are a gRPC call's (by content-type: grpc-web clients read trailers-only
    answers the same way)."""
    for name, value in fields or ():
        if name == b"content-type":
            return value.startswith(b"application/grpc")
    return False


def grpc_trailers(err):
    """The fields that end a gRPC call with ``err``: alone in a trailers-only answer, or as the trailers of
    a response that had started (Linkerd ends a failed call's body this way rather than resetting it)."""
    reason = _reason(err)
    fields = [
        (b"grpc-status", str(err.grpc_status).encode()),
        (b"grpc-message", _percent(reason)),
    ]
    if err.failure:
        fields.append((PROXY_ERROR, reason.encode("latin-1", "replace")))
    return fields


def _percent(text):
    """gRPC's grpc-message encoding: printable ASCII except ``%`` as is, every other byte %-escaped."""
    return "".join(c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode())
                   for c in text).encode("ascii")
