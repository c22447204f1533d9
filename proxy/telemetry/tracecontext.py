"""Trace context propagation, sans-IO: read a request's trace context and write it back with the proxy's span id.

Formats, in the order Linkerd tries them: W3C ``traceparent`` (with
``tracestate`` carried along), B3 binary ``grpc-trace-bin``, B3 multi-header
(``x-b3-traceid``, ``x-b3-spanid``, ``x-b3-sampled``, ``x-b3-flags``,
``x-b3-parentspanid``), then the single ``b3`` header (which Linkerd does
not read). The first format present and valid wins; a malformed one is
skipped as if absent, so a request whose context is all malformed is
forwarded untouched and gets no span.

``extract`` takes the request's fields as ``(lower-case name, value)``
pairs; ``TraceContext.forward`` gives the fields to replace so that the next
hop sees the proxy's span as its parent, in the format the request came in.
``replace_h1_fields`` and ``replace_h2_fields`` apply them to a head.
"""

import binascii

W3C = 1
B3_GRPC = 2
B3_MULTI = 3
B3_SINGLE = 4

FORMAT_NAMES = {W3C: "w3c", B3_GRPC: "b3-grpc", B3_MULTI: "b3-multi", B3_SINGLE: "b3-single"}

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
GRPC_TRACE_BIN = b"grpc-trace-bin"
B3_TRACEID = b"x-b3-traceid"
B3_SPANID = b"x-b3-spanid"
B3_PARENTSPANID = b"x-b3-parentspanid"
B3_SAMPLED = b"x-b3-sampled"
B3_FLAGS = b"x-b3-flags"
B3 = b"b3"

# Fields whose presence means a request may carry a context (what the parsers
# flag); x-b3-traceid alone is not one: B3 needs the span id too.
CONTEXT_FIELDS = frozenset((TRACEPARENT, GRPC_TRACE_BIN, B3_SPANID, B3))
_WANTED = frozenset((TRACEPARENT, TRACESTATE, GRPC_TRACE_BIN, B3_TRACEID, B3_SPANID, B3_PARENTSPANID,
                     B3_SAMPLED, B3_FLAGS, B3))

_HEX_LOWER = frozenset(b"0123456789abcdef")
_HEX_ANY = frozenset(b"0123456789abcdefABCDEF")
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


class TraceContext:
    """A parsed context: ``trace_id`` (16 bytes; a 64-bit B3 id left-padded), ``parent_id`` (the caller's span,
    8 bytes), ``flags`` (W3C trace flags; bit 0: sampled), ``trace_state`` (W3C only, else b"")."""

    __slots__ = ("format", "trace_id", "parent_id", "flags", "trace_state", "_raw")

    def __init__(self, fmt, trace_id, parent_id, flags, trace_state=b"", raw=None):
        self.format = fmt
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.flags = flags
        self.trace_state = trace_state
        self._raw = raw  # what the format needs to write itself back (the original text or padding)

    @property
    def sampled(self):
        return bool(self.flags & 1)

    def forward(self, span_id):
        """The fields that make ``span_id`` the next hop's parent, as ``[(name, value)]`` to replace in place."""
        fmt = self.format
        if fmt == W3C:
            value = b"00-%s-%s-%02x" % (self.trace_id.hex().encode(), span_id.hex().encode(), self.flags & 0xFF)
            return [(TRACEPARENT, value)]
        if fmt == B3_GRPC:
            blob = b"\x00\x00" + self.trace_id + b"\x01" + span_id + b"\x02" + bytes((self.flags & 0xFF,))
            value = binascii.b2a_base64(blob, newline=False)
            if not self._raw:  # the request's value had no padding: neither does ours
                value = value.rstrip(b"=")
            return [(GRPC_TRACE_BIN, value)]
        span_hex = span_id.hex().encode()
        if fmt == B3_MULTI:
            out = [(B3_SPANID, span_hex)]
            if self._raw:  # x-b3-parentspanid was sent: it now names the caller's span
                out.append((B3_PARENTSPANID, self.parent_id.hex().encode()))
            return out
        trace_text, sampling, had_parent = self._raw
        value = trace_text + b"-" + span_hex
        if sampling:
            value += b"-" + sampling
            if had_parent:
                value += b"-" + self.parent_id.hex().encode()
        return [(B3, value)]

    def __repr__(self):
        return (f"<TraceContext {FORMAT_NAMES[self.format]} trace={self.trace_id.hex()} "
                f"parent={self.parent_id.hex()} flags={self.flags:02x}>")


def extract(fields):
    """The request's trace context, or None when it has none that is valid. ``fields``: ``(lower-case name,
    value)`` pairs. A field that should appear once and appears twice invalidates its format."""
    seen = {}
    dup = set()
    for name, value in fields:
        if name in _WANTED:
            if name in seen:
                if name == TRACESTATE:  # W3C: several tracestate fields are one list
                    seen[name] = seen[name] + b"," + value.strip()
                    continue
                dup.add(name)
            seen[name] = value.strip()
    if not seen:
        return None
    value = seen.get(TRACEPARENT)
    if value is not None and TRACEPARENT not in dup:
        ctx = parse_traceparent(value)
        if ctx is not None:
            state = seen.get(TRACESTATE)
            if state is not None and TRACESTATE not in dup:
                ctx.trace_state = state
            return ctx
    value = seen.get(GRPC_TRACE_BIN)
    if value is not None and GRPC_TRACE_BIN not in dup:
        ctx = parse_grpc_trace_bin(value)
        if ctx is not None:
            return ctx
    if B3_SPANID in seen and B3_TRACEID in seen and not dup.intersection((B3_SPANID, B3_TRACEID, B3_SAMPLED)):
        ctx = parse_b3_multi(seen[B3_TRACEID], seen[B3_SPANID], seen.get(B3_SAMPLED), seen.get(B3_FLAGS),
                             B3_PARENTSPANID in seen)
        if ctx is not None:
            return ctx
    value = seen.get(B3)
    if value is not None and B3 not in dup:
        return parse_b3_single(value)
    return None


def _hex_id(text, size, table):
    """``text`` as ``size`` bytes when it is exactly 2*size hex digits of ``table`` and not all zero; else None."""
    if len(text) != 2 * size or not table.issuperset(text):
        return None
    value = bytes.fromhex(text.decode("ascii"))
    return None if value == bytes(size) else value


def parse_traceparent(value):
    """``version-traceid-parentid-flags`` (W3C Trace Context); None when invalid. A version above 00 is read as
    00 when its first four fields are well formed, as the specification asks."""
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if not _HEX_LOWER.issuperset(version) or version == b"ff":
        return None
    if version == b"00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55:56] != b"-":
        return None
    trace_id = _hex_id(value[3:35], 16, _HEX_LOWER)
    parent_id = _hex_id(value[36:52], 8, _HEX_LOWER)
    flags_text = value[53:55]
    if trace_id is None or parent_id is None or not _HEX_LOWER.issuperset(flags_text):
        return None
    return TraceContext(W3C, trace_id, parent_id, int(flags_text, 16))


def parse_grpc_trace_bin(value):
    """OpenCensus binary format in base64 (padded or not): version 0, then fields 0 (trace id, 16 bytes),
    1 (span id, 8 bytes), 2 (options, 1 byte); an unknown field ends the parse. Both ids are required."""
    padded = value.endswith(b"=")
    text = value if padded else value + b"=" * ((4 - len(value) % 4) % 4)
    try:
        blob = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if not blob or blob[0] != 0:
        return None
    trace_id = span_id = None
    options = 0
    i = 1
    n = len(blob)
    while i < n:
        field = blob[i]
        if field == 0 and i + 17 <= n:
            trace_id = blob[i + 1:i + 17]
            i += 17
        elif field == 1 and i + 9 <= n:
            span_id = blob[i + 1:i + 9]
            i += 9
        elif field == 2 and i + 2 <= n:
            options = blob[i + 1]
            i += 2
        elif field > 2:
            break  # a later version's field: what came before still counts
        else:
            return None  # truncated
    if trace_id is None or span_id is None or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(B3_GRPC, trace_id, span_id, options, b"", padded)


def _b3_trace_id(text):
    """A B3 trace id: 16 or 32 hex digits (a 64-bit id is left-padded to 128 bits for OTLP)."""
    if len(text) == 16:
        value = _hex_id(text, 8, _HEX_ANY)
        return None if value is None else _ZERO_SPAN + value
    return _hex_id(text, 16, _HEX_ANY)


def parse_b3_multi(trace_text, span_text, sampled, flags, has_parent=False):
    """B3 multi-header: sampled when ``x-b3-sampled`` is ``1`` (or the legacy ``true``) or ``x-b3-flags`` is
    ``1`` (debug); absent, the decision is deferred, which the proxy treats as not sampled."""
    trace_id = _b3_trace_id(trace_text)
    span_id = _hex_id(span_text, 8, _HEX_ANY)
    if trace_id is None or span_id is None:
        return None
    if sampled is not None and sampled not in (b"0", b"1", b"true", b"false"):
        return None
    on = sampled in (b"1", b"true") or flags == b"1"
    return TraceContext(B3_MULTI, trace_id, span_id, 1 if on else 0, b"", has_parent)


def parse_b3_single(value):
    """``b3: traceid-spanid[-sampling[-parentspanid]]``, sampling ``0``, ``1`` or ``d`` (debug: sampled).
    A bare sampling decision (``b3: 0``) carries no context: None."""
    parts = value.split(b"-")
    if len(parts) < 2 or len(parts) > 4:
        return None
    trace_id = _b3_trace_id(parts[0])
    span_id = _hex_id(parts[1], 8, _HEX_ANY)
    if trace_id is None or span_id is None:
        return None
    sampling = parts[2] if len(parts) > 2 else b""
    if sampling not in (b"", b"0", b"1", b"d"):
        return None
    if len(parts) == 4 and _hex_id(parts[3], 8, _HEX_ANY) is None:
        return None
    flags = 1 if sampling in (b"1", b"d") else 0
    return TraceContext(B3_SINGLE, trace_id, span_id, flags, b"", (parts[0], sampling, len(parts) == 4))


# ---------------------------------------------------------------- writing back


def replace_h2_fields(fields, replacements):
    """HTTP/2 fields with the first field of each replaced name given its new value; order kept."""
    todo = dict(replacements)
    out = []
    for name, value in fields:
        new = todo.pop(name, None)
        out.append((name, value) if new is None else (name, new))
    return out


def replace_h1_fields(raw, replacements):
    """An HTTP/1 head (request line .. CRLFCRLF) with the value of the first field of each replaced name
    (case-insensitive) swapped; every other byte, the field's own name spelling included, stays as it was."""
    todo = dict(replacements)
    lines = raw.split(b"\r\n")
    for k in range(1, len(lines)):
        line = lines[k]
        colon = line.find(b":")
        if colon <= 0:
            continue
        new = todo.pop(line[:colon].lower(), None)
        if new is not None:
            lines[k] = line[:colon] + b": " + new
            if not todo:
                break
    return b"\r\n".join(lines)
