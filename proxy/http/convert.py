"""Heads between protocols: an exchange's request as HTTP/1 bytes or HTTP/2 fields for its upstream, responses back.

An HTTP/1 request for an HTTP/1 upstream is forwarded byte for byte unless
something must change (hop-by-hop fields, absolute form, identity headers,
the route's header edits). Between proxies HTTP/1 travels as HTTP/2 with
``l5d-orig-proto``; the receiving proxy restores HTTP/1 for its app, and a
restored head is then parsed by the same strict parser as HTTP/1 ingress:
anything the HTTP/2 side allowed that would be ambiguous as HTTP/1 (a space
in the path, a bare CR in a value, a body without a length for HTTP/1.0, a
``host`` that differs from ``:authority``) is refused with 400.
"""

from http import HTTPStatus

from proxy import errors
from proxy.protocol import l5d
from proxy.protocol.http1 import NEED_MORE, ParseError, RequestHead, lower_fields, parse_request_head, rewrite_head
from proxy.protocol.l5d import CLIENT_ID, ORIG_PROTO

# Connection-specific fields (RFC 9113 8.2.2), and Host (it becomes :authority).
H1_ONLY = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
                     b"upgrade", b"host", b"trailer", b"http2-settings"))
# Fields that must not be copied from one HTTP/2 hop to the next.
H2_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
# What an HTTP/1 request crossing the hop leaves behind: a client's own l5d-orig-proto too (the proxy adds its own).
H1_ONLY_REQUEST = H1_ONLY | frozenset((ORIG_PROTO,))

_ORIG_11 = b"HTTP/1.1"
_ORIG_10 = b"HTTP/1.0"
_ABSOLUTE = b"; absolute-form"
_MAX_RESTORED_HEAD = 1 << 20


def _known_phrases():
    return {int(s): s.phrase.encode() for s in HTTPStatus}


_PHRASES = _known_phrases()  # enum lookups cost more than the rest of the response head


def phrase(status):
    return _PHRASES.get(status, b"Status")


def origin_form(target):
    """``http://host:port/p?q`` -> ``/p?q`` (RFC 9112 3.2.2: origin servers get origin-form)."""
    start = target.find(b"://")
    if start < 0:
        return target
    slash = target.find(b"/", start + 3)
    query = target.find(b"?", start + 3)
    if slash < 0 or (0 <= query < slash):
        return b"/" + target[query:] if query >= 0 else b"/"
    return target[slash:]


def uri_authority(target):
    """The authority of an absolute-form URI (``http://a:1/x`` -> ``a:1``)."""
    rest = target[target.find(b"://") + 3:]
    for sep in (b"/", b"?"):
        cut = rest.find(sep)
        if cut >= 0:
            rest = rest[:cut]
    return rest


# ---------------------------------------------------------------- requests


def h1_request(ex):
    """The request head for an HTTP/1 upstream, whether its body must be chunked there, and whether
    it is HTTP/1.1 (an HTTP/1.0 request goes upstream as 1.0, and the upstream closes after it)."""
    if ex.headers is None:
        head: RequestHead = ex.head
        return _h1_from_h1(ex), head.chunked, head.version >= 11
    return _h1_from_h2(ex)


def _h1_from_h1(ex):
    head: RequestHead = ex.head
    target = head.target
    absolute = len(target) > 0 and target[0] != 47 and target[0] != 42 and head.method != b"CONNECT"
    # Inbound, only this proxy speaks for the client's identity: a client's
    # own l5d-client-id goes, the verified one (if any) is added.
    meta = ex.meta
    inbound = ex.ctx.inbound
    strip_id = inbound and head.has_client_id
    client_id = meta.client_id.encode("ascii") if inbound and meta.client_id else None
    rp = ex.rp
    edit = rp.headers if rp is not None else None  # the route's RequestHeaderModifier
    rewrite = rp.rewrite if rp is not None else None  # the route's URLRewrite
    if (not head.hop_by_hop and not absolute and not strip_id and client_id is None and edit is None
            and rewrite is None):
        return head.raw
    first_line = None
    keep_upgrade = head.upgrade is not None
    drop = head.connection_tokens
    if keep_upgrade:
        drop = tuple([t for t in drop if t != b"upgrade"])
    extra = []
    host = None
    if absolute:
        target = origin_form(target)
        first_line = b"%s %s HTTP/1.%d" % (head.method, target, head.version - 10)
        # RFC 9112 3.2.2: the URI's authority replaces whatever Host said, so
        # the upstream sees the destination the request was routed by.
        host = head.authority
    if rewrite is not None and head.method != b"CONNECT":
        new = rewrite.target(target)
        if new is not target:
            first_line = b"%s %s HTTP/1.%d" % (head.method, new, head.version - 10)
        if rewrite.host is not None:
            host = rewrite.host
    if host is not None:
        drop = drop + (b"host",)
        extra.append((b"Host", host))
    if strip_id:
        drop = drop + (CLIENT_ID,)
    if client_id is not None:
        extra.append((CLIENT_ID, client_id))
    if edit is not None:
        drop = drop + edit.drop
        extra.extend(edit.extra)
    return rewrite_head(head.raw, first_line, drop, keep_upgrade, extra)


def _h1_from_h2(ex):
    """An HTTP/2 request (restored from the meshed hop, or from an HTTP/2 client) as an HTTP/1 head, validated."""
    method = path = authority = None
    orig = None
    host = None
    lines = []
    has_length = False
    fields = ex.headers
    rp = ex.rp  # outbound, an HTTP/2 client to an HTTP/1 upstream: the route's edits apply here
    if rp is not None:
        if rp.rewrite is not None:
            fields = rp.rewrite.apply(fields)
        if rp.headers is not None:
            fields = rp.headers.apply(fields)
    for field in fields:
        name = field[0]
        value = field[1]
        if len(name) > 0 and name[0] == 58:  # b":"
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
        elif name == ORIG_PROTO:
            if orig is not None:
                raise errors.ClientError("two l5d-orig-proto fields")
            orig = value
        elif name == b"host":
            if host is not None:
                raise errors.ClientError("two host fields")
            host = value
        elif name not in H1_ONLY:
            if name == b"content-length":
                has_length = True
            lines.append(name)
            lines.append(b": ")
            lines.append(value)
            lines.append(b"\r\n")
    if method is None or path is None:
        raise errors.ClientError("request without :method or :path")
    if authority is None:
        authority = host
    elif host is not None and host != authority:
        # RFC 9113 8.3.1: a Host that names another authority is malformed;
        # as HTTP/1 it would route the request somewhere else.
        raise errors.ClientError("host differs from :authority")
    if authority is None:
        raise errors.ClientError("request without :authority or host")
    version = _ORIG_11
    absolute = False
    if orig is not None:
        if orig in (_ORIG_11, _ORIG_10):
            version = orig
        elif orig in (_ORIG_11 + _ABSOLUTE, _ORIG_10 + _ABSOLUTE):
            version = orig[:8]
            absolute = True
        else:
            raise errors.ClientError("invalid l5d-orig-proto")
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        raise errors.ClientError("invalid :path")
    # One join of the parts: a concatenation or a %-format per line costs more than the line.
    if absolute:
        head = [method, b" http://", authority, path, b" ", version, b"\r\nhost: ", authority, b"\r\n"]
    else:
        head = [method, b" ", path, b" ", version, b"\r\nhost: ", authority, b"\r\n"]
    head.extend(lines)
    chunked = False
    if ex.req_length < 0 and not has_length:
        # A body of unknown length follows.
        if version == _ORIG_10:
            raise errors.ClientError("HTTP/1.0 request with a body and no content-length")
        head.append(b"transfer-encoding: chunked\r\n")
        chunked = True
    elif ex.req_length > 0 and not has_length:
        head.append(b"content-length: %d\r\n" % ex.req_length)
    head.append(b"\r\n")
    raw = b"".join(head)
    # The same rules as HTTP/1 ingress: what the app gets must parse strictly, as one request.
    try:
        parsed = parse_request_head(raw, _MAX_RESTORED_HEAD)
    except ParseError as err:
        raise errors.ClientError(f"request not valid as HTTP/1: {err.reason}") from None
    if parsed is NEED_MORE or parsed.consumed != len(raw) or parsed.upgrade is not None:
        raise errors.ClientError("request not valid as HTTP/1")
    if parsed.content_length >= 0 and ex.req_length >= 0 and parsed.content_length != ex.req_length:
        raise errors.ClientError("content-length does not match the body")
    return raw, chunked, version == _ORIG_11


def h2_request(ex, orig_proto):
    """The request as HTTP/2 fields; ``orig_proto``: ask the peer proxy to restore HTTP/1 for its app
    (an HTTP/1 request crossing the meshed hop, or any request for an app discovery says speaks HTTP/1)."""
    if ex.headers is not None:
        # Only a proxy carrying HTTP/1 across the hop says l5d-orig-proto; a client's own goes.
        # Each field goes on as the object it came in as: a never-indexed one
        # stays never-indexed (RFC 7541 7.1.3), and the next hop's encoder
        # finds a field it indexed before without building a new key.
        fields = []
        for field in ex.headers:
            name = field[0]
            if name not in H2_HOP and name != ORIG_PROTO:
                fields.append(field)
        if orig_proto:
            fields.append((ORIG_PROTO, _ORIG_11))
    else:
        fields = _h2_from_h1(ex.head, orig_proto)
    rp = ex.rp
    if rp is not None:
        if rp.rewrite is not None:
            fields = rp.rewrite.apply(fields)  # the route's URLRewrite
        if rp.headers is not None:
            fields = rp.headers.apply(fields)  # the route's RequestHeaderModifier
    return fields


def _h2_from_h1(head, orig_proto):
    target = head.target
    authority = head.host or b""
    orig = _ORIG_11 if head.version >= 11 else _ORIG_10
    path = target
    if target[:1] not in (b"/", b"*"):
        # Absolute form: the URI names the authority; remember the form so the
        # far side can restore it.
        authority = uri_authority(target)
        path = origin_form(target)
        orig += _ABSOLUTE
    fields = [(b":method", head.method), (b":scheme", b"http"), (b":authority", authority), (b":path", path)]
    lower_fields(head.raw, fields, H1_ONLY_REQUEST, head.connection_tokens)
    if orig_proto:
        fields.append((ORIG_PROTO, orig))
    return fields


# ---------------------------------------------------------------- responses


# status -> b"HTTP/1.1 200 OK\r\n": formatting one costs more than the rest of a small head
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status):
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase(status))
        if len(_STATUS_LINES) < 1000:  # three digits: bounded anyway
            _STATUS_LINES[status] = line
    return line


def h1_response_from_fields(fields, chunked, close, edit):
    """HTTP/2 response fields as an HTTP/1.1 head (``chunked``/``close`` framing added here)."""
    if edit is not None:
        fields = edit.apply(fields)  # the route's ResponseHeaderModifier
    status = 0
    out = [b""]  # the status line, once known
    for field in fields:
        name = field[0]
        if len(name) > 0 and name[0] == 58:  # b":"
            if name == b":status":
                value = field[1]
                if len(value) == 3 and 48 <= value[0] <= 57 and 48 <= value[1] <= 57 and 48 <= value[2] <= 57:
                    # h2conn let only three digits through: no int() of a new string per response
                    status = (value[0] - 48) * 100 + (value[1] - 48) * 10 + (value[2] - 48)
                else:
                    status = int(value)
        elif name not in H1_ONLY:
            out.append(name)
            out.append(b": ")
            out.append(field[1])
            out.append(b"\r\n")
    out[0] = _status_line(status)
    if chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


# status -> (b":status", b"200"): a %-format per response cost more than its fields' copy, and the same
# tuple each time lets the HPACK encoder recognise the field by identity.
_STATUS_FIELDS: dict[int, tuple[bytes, bytes]] = {}


def _status_field(status):
    field = _STATUS_FIELDS.get(status)
    if field is None:
        field = (b":status", b"%d" % status)
        if len(_STATUS_FIELDS) < 1000:  # three digits: bounded anyway
            _STATUS_FIELDS[status] = field
    return field


def fields_from_h1_response(rh, edit):
    """An HTTP/1 response head as HTTP/2 fields (hop-by-hop and framing fields dropped)."""
    fields = [_status_field(rh.status)]
    lower_fields(rh.raw, fields, H1_ONLY, rh.connection_tokens)
    if edit is not None:
        fields = edit.apply(fields)
    return fields


def h2_response_fields(fields, edit):
    """Upstream HTTP/2 response fields as they go to an HTTP/2 client."""
    out = []
    for field in fields:  # as they came: see h2_request
        if field[0] not in H2_HOP:
            out.append(field)
    if edit is not None:
        out = edit.apply(out)
    return out


# Fields a trailer section may not carry (RFC 9110 6.5.1): framing, routing,
# and what a proxy adds or removes per hop; an upstream or peer sending one
# does not get it to the next hop. ``l5d-proxy-error`` may: a peer proxy that cut a gRPC call
# says why in its trailers, and the client should read that reason as Linkerd's clients do.
_NOT_IN_TRAILERS = H1_ONLY | frozenset((b"content-length", *(n for n in l5d.ALL if n != l5d.PROXY_ERROR)))


def h2_trailers(fields):
    """Trailers as HTTP/2 fields: names lower-cased (HTTP/1 trailers keep the case they were sent in),
    pseudo-fields and connection-specific fields never."""
    out = []
    for name, value in fields:
        low = name.lower()
        if low[:1] != b":" and low not in _NOT_IN_TRAILERS:
            out.append((low, value))
    return out


def trailer_lines(fields):
    """Trailers as the lines of a chunked body's trailer section (pseudo-fields and forbidden fields never)."""
    out = []
    for name, value in fields:
        if name[:1] != b":" and name.lower() not in _NOT_IN_TRAILERS:
            out.append(name + b": " + value + b"\r\n")
    return b"".join(out)


def content_length(fields):
    """The ``content-length`` of HTTP/2 fields, or -1 (h2conn checked its syntax)."""
    for name, value in fields:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1
