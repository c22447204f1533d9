"""Sans-IO HTTP/1.1 head parsing, hop-by-hop head rewriting and chunked-body validation for the proxy's hot path.

The parsers are strict on purpose (RFC 9110/9112): a proxy that reads a
message differently from the server behind it is how request smuggling
happens, so anything ambiguous is refused with a ParseError carrying the
status to answer with. The same source runs uncompiled and compiled by
Cython with ``http1.pxd`` beside it, which supplies every type.
"""

import cython

from proxy.protocol.request import RequestLine
from proxy.protocol.sentinel import NEED_MORE

# Byte values are named once; the .pxd types them as C globals so the loops
# below compare C integers, while plain Python sees ordinary ints.
_HTAB = 9
_LF = 10
_CR = 13
_SP = 32
_DQUOTE = 34
_PERCENT = 37
_STAR = 42
_COMMA = 44
_DOT = 46
_SLASH = 47
_ZERO = 48
_NINE = 57
_COLON = 58
_SEMI = 59
_EQUALS = 61
_AT = 64
_LBRACKET = 91
_BACKSLASH = 92
_RBRACKET = 93

_MAX_EMPTY_LINES = 4
_HTTP_SLASH = b"HTTP/"
_MAX_CONTENT_LENGTH = (1 << 62) - 1
_MAX_CHUNK_SIZE_BEFORE_SHIFT = 1 << 56  # one more hex digit would pass 2**60

# Kinds of header field the parser reacts to; everything else is K_OTHER.
_K_OTHER = 0
_K_CONTENT_LENGTH = 1
_K_TRANSFER_ENCODING = 2
_K_CONNECTION = 3
_K_HOST = 4
_K_KEEP_ALIVE = 5
_K_PROXY_CONNECTION = 6
_K_TE = 7
_K_UPGRADE = 8
_K_EXPECT = 9
_K_DST_OVERRIDE = 10
_K_CLIENT_ID = 11
_K_HTTP2_SETTINGS = 12
_K_TRACE = 13  # a field that may carry a trace context (traceparent, grpc-trace-bin, x-b3-spanid, b3)

# Results of _authority.
_AUTH_OK = 0
_AUTH_BAD = 1
_AUTH_USERINFO = 2

# Bits returned by _connection_tokens.
_CONN_CLOSE = 1
_CONN_KEEP_ALIVE = 2
_CONN_UPGRADE = 4

# Bits returned by _transfer_codings; the chunked count sits above them.
_TE_UNKNOWN = 1
_TE_CHUNKED_LAST = 2
_TE_COUNT_SHIFT = 2

# ChunkedScanner states. Everything up to _S_SIZE_LF belongs to the chunk-size
# line and counts against max_line; from _S_T_START on it is the trailer.
_S_SIZE = 0
_S_SIZE_WS = 1
_S_EXT_PRE_NAME = 2
_S_EXT_NAME = 3
_S_EXT_NAME_WS = 4
_S_EXT_PRE_VALUE = 5
_S_EXT_TOKEN = 6
_S_EXT_VALUE_WS = 7
_S_EXT_QUOTED = 8
_S_EXT_QUOTED_ESC = 9
_S_EXT_AFTER_QUOTED = 10
_S_SIZE_LF = 11
_S_DATA = 12
_S_DATA_CR = 13
_S_DATA_LF = 14
_S_T_START = 15
_S_T_NAME = 16
_S_T_VALUE = 17
_S_T_LF = 18
_S_END_LF = 19
_S_DONE = 20
_S_FAILED = 21


def _table(members):
    table = bytearray(256)
    for c in members:
        table[c] = 1
    return bytes(table)


# 256-entry lookup tables, indexed by byte value: one C read per byte compiled.
_TCHAR = _table(b"!#$%&'*+-.^_`|~0123456789" b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VCHAR = _table(range(0x21, 0x7F))
_FIELD_VALUE = _table([_HTAB] + list(range(0x20, 0x7F)) + list(range(0x80, 0x100)))
_QDTEXT = _table([_HTAB, _SP, 0x21] + list(range(0x23, 0x5C)) + list(range(0x5D, 0x7F)) + list(range(0x80, 0x100)))
# A request-target is visible ASCII without "#": RFC 9112 3.2 has no
# fragment, and "/admin#x" would match no route here yet reach /admin behind.
# RFC 3986 characters of a request-target: unreserved, sub-delims, ":", "@",
# "/", "?", "%" (its two hex digits are checked apart) and the brackets of an
# IPv6 authority. Everything else (`"<>\\^{|}` and the backtick, "#") is
# refused, as HAProxy does by default: servers disagree on what such bytes mean.
_TARGET_CHAR = _table(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%[]")
# reg-name characters allowed in Host and URI authorities (RFC 3986 unreserved).
_REG_NAME = _table(b"-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_LOWER = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))
_HEX_VALUE = bytes(
    c - 48 if 48 <= c <= 57 else c - 55 if 65 <= c <= 70 else c - 87 if 97 <= c <= 102 else 255 for c in range(256)
)


# NEED_MORE (proxy.protocol.sentinel) is re-exported: callers compare with ``is``.


class ParseError(Exception):
    """The peer sent a message this proxy refuses; ``status`` is what to answer with."""

    def __init__(self, status, reason):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self):
        return f"{self.status} {self.reason}"


def _header_list(raw):
    fields = []
    for line in raw.split(b"\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    return fields


# Field names as sent -> lower-cased, the same object each time: a head's names repeat from one
# request to the next, and a name met again keeps its hash for the sets and the HPACK table it meets.
_LOWER_NAMES: dict[bytes, bytes] = {}
_LOWER_NAMES_MAX = 512  # distinct spellings kept; past this many the map starts over


def lower_fields(raw, out, drop, extra):
    """Append each field of a parsed head to ``out`` as (lower-cased name, value without surrounding
    whitespace), leaving out names in ``drop`` (a frozenset) or ``extra`` (a tuple); returns ``out``.

    For the HTTP/1 -> HTTP/2 bridge, per request: ``_header_list`` and a
    ``lower()`` per name cost about 2,000 instructions a field compiled, this
    scan a few hundred. ``raw`` is a head ``parse_*_head`` accepted (CRLF
    lines, a colon in every field line).
    """
    b = raw  # compiled: the bytes' own buffer, read and sliced without Python calls
    n = len(raw)
    i = 0
    while i + 1 < n and b[i] != _CR:
        i += 1
    i += 2  # past the request or status line
    while i + 1 < n:
        if b[i] == _CR:
            break  # the empty line ending the head
        colon = i
        while colon < n and b[colon] != _COLON and b[colon] != _CR:
            colon += 1
        end = colon
        while end < n and b[end] != _CR:
            end += 1
        sent = b[i:colon]
        name = _LOWER_NAMES.get(sent)
        if name is None:
            name = sent.lower()
            if len(_LOWER_NAMES) >= _LOWER_NAMES_MAX:
                _LOWER_NAMES.clear()
            _LOWER_NAMES[sent] = name
        if name not in drop and (len(extra) == 0 or name not in extra):
            start = colon + 1 if colon < end else end
            while start < end and (b[start] == _SP or b[start] == _HTAB):
                start += 1
            stop = end
            while stop > start and (b[stop - 1] == _SP or b[stop - 1] == _HTAB):
                stop -= 1
            out.append((name, b[start:stop]))
        i = end + 2
    return out


def _version_text(version):
    return f"HTTP/{version // 10}.{version % 10}"


class RequestHead(RequestLine):
    """A parsed request head: framing and routing facts, plus the raw bytes to forward."""

    def header_list(self):
        """Every field as (name as sent, value without surrounding whitespace); not for the hot path."""
        return _header_list(self.raw)

    def __repr__(self):
        return (
            f"<RequestHead {self.method.decode('ascii')} {self.target.decode('ascii')} "
            f"{_version_text(self.version)} host={self.host!r} content_length={self.content_length} "
            f"chunked={self.chunked} keep_alive={self.keep_alive} consumed={self.consumed}>"
        )


class ResponseHead:
    """A parsed response head: framing facts, plus the raw bytes to forward."""

    def header_list(self):
        """Every field as (name as sent, value without surrounding whitespace); not for the hot path."""
        return _header_list(self.raw)

    def __repr__(self):
        return (
            f"<ResponseHead {_version_text(self.version)} {self.status} {self.reason_phrase!r} "
            f"content_length={self.content_length} chunked={self.chunked} "
            f"keep_alive={self.keep_alive} consumed={self.consumed}>"
        )


# ---------------------------------------------------------------- byte helpers


def bytes_range(data, start, end):
    """``data[start:end]``, for the relays' buffers and the parsers' fields.

    Compiled, a bytes slice goes through a slice object (PySequence_GetSlice:
    500-700 instructions, four of them per proxied request); the bytes are
    copied out directly instead. Indices outside ``0 <= start <= end <= len``
    take the slice's own path, so the result is always what slicing gives.
    """
    if cython.compiled and 0 <= start <= end <= len(data):
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + start, end - start)  # noqa: F821 (http1.pxd)
    return data[start:end]


def _span(data, i, limit, table):
    while i < limit and table[data[i]]:
        i += 1
    return i


def _value_span(data, i, limit):
    # _span over _FIELD_VALUE, where nearly all of a head's bytes are: compiled, eight bytes are judged
    # at once (h1_value_span in http1.pxd) and the table decides only around a tab, a control or the CR.
    if cython.compiled:
        return h1_value_span(PyBytes_AS_STRING(data), i, limit, PyBytes_AS_STRING(_FIELD_VALUE))  # noqa: F821
    return _span(data, i, limit, _FIELD_VALUE)


def _skip_ows(data, i, limit):
    while i < limit and (data[i] == _SP or data[i] == _HTAB):
        i += 1
    return i


def _rstrip_ows(data, start, end):
    while end > start and (data[end - 1] == _SP or data[end - 1] == _HTAB):
        end -= 1
    return end


def _ieq(data, start, lower, length):
    if cython.compiled:
        return h1_ieq(PyBytes_AS_STRING(data) + start, PyBytes_AS_STRING(lower), length)  # noqa: F821 (http1.pxd)
    for k in range(length):
        if _LOWER[data[start + k]] != lower[k]:
            return False
    return True


def _eq(data, start, literal, length):
    # Methods are case-sensitive (RFC 9110 9.1): "connect" is not CONNECT.
    for k in range(length):
        if data[start + k] != literal[k]:
            return False
    return True


def _fail(data, i, limit, status, reason):
    # A byte at i broke the grammar. Line-ending trouble gets its own reason
    # so the log says what the peer did; a CR that may still be followed by
    # its LF is not judged yet (returns 0: need more).
    c = data[i]
    if c == _LF:
        raise ParseError(status, "bare lf")
    if c == _CR:
        if i + 1 >= limit:
            return 0
        if data[i + 1] != _LF:
            raise ParseError(status, "bare cr")
    raise ParseError(status, reason)


def _line_end(data, i, limit, status, reason):
    # Expects CRLF at i: returns the index after it, or -1 when bytes are missing.
    if i + 1 < limit and data[i] == _CR and data[i + 1] == _LF:
        return i + 2
    if i >= limit:
        return -1
    _fail(data, i, limit, status, reason)
    return -1


def _incomplete(n, max_size, status):
    # The scan is bounded by max_size, so running out of bytes with n >= max_size
    # means the head is larger than allowed whether or not more would come.
    if n >= max_size:
        raise ParseError(status, "header section too large")
    return NEED_MORE


def _skip_empty_lines(data, limit):
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
    # request line; a few are tolerated, a stream of them is not.
    i = 0
    while i < limit:
        c = data[i]
        if c != _CR:
            if c == _LF:
                raise ParseError(400, "bare lf")
            return i
        if i + 1 >= limit:
            return -1
        if data[i + 1] != _LF:
            raise ParseError(400, "bare cr")
        i += 2
        if i > 2 * _MAX_EMPTY_LINES:
            raise ParseError(400, "too many empty lines")
    return -1


def _http_version(data, i, limit, status, unsupported_status, reason):
    # The 8 bytes at i must be HTTP/D.D, and only 1.0 and 1.1 are spoken here.
    # Bytes are judged as they arrive so that "GET / \r\n\r\n" fails at once
    # instead of waiting for a version that will never come (-1: need more).
    if (i + 8 <= limit and data[i] == 72 and data[i + 1] == 84 and data[i + 2] == 84 and data[i + 3] == 80
            and data[i + 4] == 47 and data[i + 5] == 49 and data[i + 6] == _DOT
            and (data[i + 7] == 49 or data[i + 7] == 48)):
        # "HTTP/1.1" or "HTTP/1.0" whole, as nearly every message has it: eight
        # compares instead of the byte-by-byte judgement below (~100 instructions less).
        return 11 if data[i + 7] == 49 else 10
    end = i + 8 if i + 8 <= limit else limit
    for k in range(i, end):
        c = data[k]
        pos = k - i
        if pos < 5:
            ok = c == _HTTP_SLASH[pos]
        elif pos == 6:
            ok = c == _DOT
        else:
            ok = _ZERO <= c <= _NINE
        if not ok:
            _fail(data, k, limit, status, reason)
            return -1
    if end < i + 8:
        return -1
    if data[i + 5] == 49:
        if data[i + 7] == 48:
            return 10
        if data[i + 7] == 49:
            return 11
    raise ParseError(unsupported_status, "unsupported http version")


def _status_code(data, limit):
    # SP 3DIGIT after the version, judged as bytes arrive (-1: need more).
    end = 12 if limit > 12 else limit
    for k in range(8, end):
        c = data[k]
        if k == 8:
            ok = c == _SP
        elif k == 9:
            ok = 49 <= c <= _NINE
        else:
            ok = _ZERO <= c <= _NINE
        if not ok:
            _fail(data, k, limit, 502, "invalid status line")
            return -1
    if end < 12:
        return -1
    code = (data[9] - _ZERO) * 100 + (data[10] - _ZERO) * 10 + (data[11] - _ZERO)
    if code > 599:
        raise ParseError(502, "invalid status code")  # RFC 9110 15: 100..599
    return code


# ---------------------------------------------------------------- field helpers


def _field_name(data, i, limit, status):
    # Returns the index of the colon ending the name at i, or -1 when bytes are missing.
    c = data[i]
    if c == _SP or c == _HTAB:
        raise ParseError(status, "obsolete line folding")
    if c == _COLON:
        raise ParseError(status, "empty header name")
    j = _span(data, i, limit, _TCHAR)
    if j >= limit:
        return -1
    c = data[j]
    if c == _COLON:
        return j
    if j > i and (c == _SP or c == _HTAB):
        k = _skip_ows(data, j, limit)
        if k >= limit:
            return -1
        if data[k] == _COLON:
            raise ParseError(status, "whitespace before colon")
    _fail(data, j, limit, status, "invalid header name")
    return -1


def _field_kind(data, start, length):
    # Dispatch on length first so the common fields (Accept, User-Agent...)
    # are turned away after one or two byte comparisons.
    if length == 2:
        if _ieq(data, start, b"te", 2):
            return _K_TE
        return _K_TRACE if _ieq(data, start, b"b3", 2) else _K_OTHER
    if length == 4:
        return _K_HOST if _ieq(data, start, b"host", 4) else _K_OTHER
    if length == 6:
        return _K_EXPECT if _ieq(data, start, b"expect", 6) else _K_OTHER
    if length == 7:
        return _K_UPGRADE if _ieq(data, start, b"upgrade", 7) else _K_OTHER
    if length == 10:
        if _ieq(data, start, b"connection", 10):
            return _K_CONNECTION
        return _K_KEEP_ALIVE if _ieq(data, start, b"keep-alive", 10) else _K_OTHER
    if length == 11:
        if _ieq(data, start, b"traceparent", 11):
            return _K_TRACE
        return _K_TRACE if _ieq(data, start, b"x-b3-spanid", 11) else _K_OTHER
    if length == 13:
        return _K_CLIENT_ID if _ieq(data, start, b"l5d-client-id", 13) else _K_OTHER
    if length == 14:
        if _ieq(data, start, b"content-length", 14):
            return _K_CONTENT_LENGTH
        if _ieq(data, start, b"http2-settings", 14):
            return _K_HTTP2_SETTINGS
        return _K_TRACE if _ieq(data, start, b"grpc-trace-bin", 14) else _K_OTHER
    if length == 16:
        if _ieq(data, start, b"proxy-connection", 16):
            return _K_PROXY_CONNECTION
        return _K_DST_OVERRIDE if _ieq(data, start, b"l5d-dst-override", 16) else _K_OTHER
    if length == 17:
        return _K_TRANSFER_ENCODING if _ieq(data, start, b"transfer-encoding", 17) else _K_OTHER
    return _K_OTHER


def _is_hop_by_hop(kind):
    # HTTP2-Settings only ever belongs to an h2c upgrade, which is never
    # forwarded (RFC 9113 3.2.1), so it is dropped whatever Connection says.
    return (
        kind == _K_CONNECTION
        or kind == _K_KEEP_ALIVE
        or kind == _K_PROXY_CONNECTION
        or kind == _K_TE
        or kind == _K_UPGRADE
        or kind == _K_HTTP2_SETTINGS
    )


def _is_protected(kind):
    # Fields the message is framed or routed by: a hop must never be told to
    # remove them (Connection) nor receive them as trailers.
    return kind == _K_CONTENT_LENGTH or kind == _K_TRANSFER_ENCODING or kind == _K_HOST or kind == _K_DST_OVERRIDE


def _has_htab(data, start, end):
    # A tab is legal whitespace around a value, but in Content-Length and
    # Transfer-Encoding it is the classic obfuscation that one parser strips
    # and the next does not; the head is forwarded as is, so it is refused.
    while start < end:
        if data[start] == _HTAB:
            return True
        start += 1
    return False


def _content_length(data, start, end, prev, status):
    # Exactly one Content-Length of 1*DIGIT. RFC 9110 lets a recipient accept
    # repeats of one value ("5, 5" or the field twice), but the next hop may
    # not: such a message is refused rather than forwarded ambiguous.
    if prev != -1:
        raise ParseError(status, "repeated content-length")
    acc = 0
    digits = 0
    i = start
    while i < end and _ZERO <= data[i] <= _NINE:
        d = data[i] - _ZERO
        if acc > (_MAX_CONTENT_LENGTH - d) // 10:
            raise ParseError(status, "invalid content-length")
        acc = acc * 10 + d
        digits += 1
        i += 1
    if digits == 0 or i != end:
        raise ParseError(status, "invalid content-length")
    return acc


def _known_coding(data, start, length):
    # Codings a peer may legitimately put before chunked; they are relayed untouched.
    if length == 4:
        return _ieq(data, start, b"gzip", 4)
    if length == 6:
        return _ieq(data, start, b"x-gzip", 6)
    if length == 7:
        return _ieq(data, start, b"deflate", 7)
    if length == 8:
        return _ieq(data, start, b"compress", 8)
    if length == 10:
        return _ieq(data, start, b"x-compress", 10)
    return False


def _transfer_codings(data, start, end, status):
    # Parameters on codings are refused: chunked takes none, and the others
    # are never sent with any in practice.
    chunked = 0
    last_chunked = 0
    unknown = 0
    seen = False
    item = False  # a coding since the last comma: an empty list element is refused
    i = start
    while i < end:
        c = data[i]
        if c == _SP or c == _HTAB:
            i += 1
            continue
        if c == _COMMA:
            if not item:
                raise ParseError(status, "empty transfer-encoding element")
            item = False
            i += 1
            continue
        item = True
        j = _span(data, i, end, _TCHAR)
        if j == i:
            raise ParseError(status, "invalid transfer-encoding")
        k = _skip_ows(data, j, end)
        if k < end and data[k] != _COMMA:
            raise ParseError(status, "invalid transfer-encoding")
        seen = True
        if j - i == 7 and _ieq(data, i, b"chunked", 7):
            chunked += 1
            last_chunked = _TE_CHUNKED_LAST
        else:
            last_chunked = 0
            if not _known_coding(data, i, j - i):
                unknown = _TE_UNKNOWN
        i = k
    if not seen or not item:
        raise ParseError(status, "invalid transfer-encoding")
    return (chunked << _TE_COUNT_SHIFT) | last_chunked | unknown


def _merge_codings(seen, field):
    # Several Transfer-Encoding fields form one list: counts add up, the
    # final coding is the last field's.
    count = (seen >> _TE_COUNT_SHIFT) + (field >> _TE_COUNT_SHIFT)
    return (count << _TE_COUNT_SHIFT) | ((seen | field) & _TE_UNKNOWN) | (field & _TE_CHUNKED_LAST)


def _connection_tokens(data, start, end, tokens, status):
    # The three tokens that matter are appended as shared constants so a
    # typical "Connection: keep-alive" allocates nothing per request.
    flags = 0
    i = start
    while i < end:
        c = data[i]
        if c == _COMMA or c == _SP or c == _HTAB:
            i += 1
            continue
        j = _span(data, i, end, _TCHAR)
        if j == i:
            raise ParseError(status, "invalid connection header")
        k = _skip_ows(data, j, end)
        if k < end and data[k] != _COMMA:
            raise ParseError(status, "invalid connection header")
        length = j - i
        if length == 5 and _ieq(data, i, b"close", 5):
            flags |= _CONN_CLOSE
            tokens.append(b"close")
        elif length == 10 and _ieq(data, i, b"keep-alive", 10):
            flags |= _CONN_KEEP_ALIVE
            tokens.append(b"keep-alive")
        elif length == 7 and _ieq(data, i, b"upgrade", 7):
            flags |= _CONN_UPGRADE
            tokens.append(b"upgrade")
        else:
            # "Connection: content-length" would make the next hop strip
            # the field this message is framed by: refused, not obeyed.
            if _is_protected(_field_kind(data, i, length)):
                raise ParseError(status, "connection names framing or routing field")
            tokens.append(data[i:j].lower())
        i = k
    return flags


# The connection_tokens of a head whose only Connection field is one of these, shared: nearly every
# head says just "keep-alive" or "close", and a list and a tuple per message would say it again.
_KEEP_ALIVE_TOKENS = (b"keep-alive",)
_CLOSE_TOKENS = (b"close",)


def _single_token(data, start, end):
    # The shared tuple when the value is exactly keep-alive or close (any case), else None.
    if end - start == 10 and _ieq(data, start, b"keep-alive", 10):
        return _KEEP_ALIVE_TOKENS
    if end - start == 5 and _ieq(data, start, b"close", 5):
        return _CLOSE_TOKENS
    return None


def _token_list(tokens, single_tokens):
    # The list a message's further Connection tokens go to: the one it has, else a new one holding the
    # lone token of its first field, if any.
    if tokens is not None:
        return tokens
    return [] if single_tokens is None else list(single_tokens)


def _upgrade_offers_h2c(data, start, end, status):
    # Upgrade = 1#protocol, protocol = token [ "/" token ] (RFC 9110 7.8).
    # True when one protocol is h2c: a proxy that let it through would let
    # the client talk HTTP/2 past every per-request check (h2c smuggling).
    h2c = False
    seen = False
    i = start
    while i < end:
        c = data[i]
        if c == _COMMA or c == _SP or c == _HTAB:
            i += 1
            continue
        j = _span(data, i, end, _TCHAR)
        if j == i:
            raise ParseError(status, "invalid upgrade header")
        name_end = j
        if j < end and data[j] == _SLASH:
            j = _span(data, j + 1, end, _TCHAR)
            if j == name_end + 1:
                raise ParseError(status, "invalid upgrade header")
        k = _skip_ows(data, j, end)
        if k < end and data[k] != _COMMA:
            raise ParseError(status, "invalid upgrade header")
        seen = True
        if (name_end - i == 3 and _ieq(data, i, b"h2c", 3)) or (name_end - i == 2 and _ieq(data, i, b"h2", 2)):
            h2c = True  # "h2" is HTTP/2 over TLS: never an upgrade of a cleartext connection either
        i = k
    if not seen:
        raise ParseError(status, "invalid upgrade header")
    return h2c


def _authority(data, start, end, need_port):
    # uri-host [ ":" port ] (RFC 3986 3.2.2-3.2.3), held tighter than the RFC
    # where it admits what no client sends and a router could misread: a
    # reg-name has only unreserved characters and %HH (no sub-delims, so no
    # "a,b" read as a list), an IP-literal only IPv6 text, and a port is 1
    # to 5 digits up to 65535. userinfo is reported apart: "a@b" is where
    # two readers disagree on the host.
    i = start
    while i < end:
        if data[i] == _AT:
            return _AUTH_USERINFO
        i += 1
    if start >= end:
        return _AUTH_BAD
    i = start
    if data[i] == _LBRACKET:
        i += 1
        colons = 0
        while i < end and (_HEX_VALUE[data[i]] != 255 or data[i] == _COLON or data[i] == _DOT):
            if data[i] == _COLON:
                colons += 1
            i += 1
        if colons < 2 or i >= end or data[i] != _RBRACKET:
            return _AUTH_BAD
        i += 1
    else:
        while i < end:
            c = data[i]
            if _REG_NAME[c]:
                i += 1
            elif c == _PERCENT and i + 2 < end and _HEX_VALUE[data[i + 1]] != 255 and _HEX_VALUE[data[i + 2]] != 255:
                i += 3
            else:
                break
        if i == start:
            return _AUTH_BAD
    if i == end:
        return _AUTH_BAD if need_port else _AUTH_OK
    if data[i] != _COLON or end - i < 2 or end - i > 6:
        return _AUTH_BAD
    i += 1
    port = 0
    while i < end:
        c = data[i]
        if c < _ZERO or c > _NINE:
            return _AUTH_BAD
        port = port * 10 + (c - _ZERO)
        i += 1
    return _AUTH_OK if port <= 65535 else _AUTH_BAD


def _check_host(data, start, end):
    # Host picks the upstream; anything that is not plausible authority text
    # could be read differently by the next hop. Empty is allowed (RFC 9110
    # 7.2: a target without authority still sends Host).
    if start < end and _authority(data, start, end, False) != _AUTH_OK:
        raise ParseError(400, "invalid host")
    return 0


def _check_percent(data, start, end):
    # Every "%" starts a pct-encoded octet: two hex digits (RFC 3986 2.1).
    i = start
    while i < end:
        if data[i] == _PERCENT:
            if i + 2 >= end or _HEX_VALUE[data[i + 1]] == 255 or _HEX_VALUE[data[i + 2]] == 255:
                raise ParseError(400, "invalid percent-encoding in request target")
            i += 3
        else:
            i += 1
    return 0


def valid_request_target(target):
    """Whether ``target`` is made of RFC 3986 request-target characters with valid percent-encodings
    (an HTTP/2 ``:path`` is held to what HTTP/1 ingress accepts)."""
    n = len(target)
    if n == 0 or _span(target, 0, n, _TARGET_CHAR) != n:
        return False
    try:
        _check_percent(target, 0, n)
    except ParseError:
        return False
    return True


def _request_target(data, method_start, method_end, start, end):
    # RFC 9112 3.2: the target's form must fit the method. Returns the
    # authority an absolute-form or authority-form target names, else None;
    # origin-form, the common case, costs two comparisons.
    c = data[start]
    if method_end - method_start == 7 and _eq(data, method_start, b"CONNECT", 7):
        # authority-form, and only for CONNECT: host ":" port.
        result = _authority(data, start, end, True)
        if result == _AUTH_USERINFO:
            raise ParseError(400, "userinfo in request target")
        if result != _AUTH_OK:
            raise ParseError(400, "invalid connect target")
        return data[start:end]
    if c == _SLASH:
        return None
    if c == _STAR:
        if end - start != 1:
            raise ParseError(400, "invalid request target")
        if not (method_end - method_start == 7 and _eq(data, method_start, b"OPTIONS", 7)):
            raise ParseError(400, "asterisk-form outside options")
        return None
    # absolute-form: only http and https URIs name something this proxy can
    # reach, and they must carry a host (RFC 9110 4.2.1).
    i = start
    if end - i > 7 and _ieq(data, i, b"http", 4):
        i += 4
        if data[i] == 115 or data[i] == 83:  # "s"
            i += 1
    if i == start or end - i < 3 or data[i] != _COLON or data[i + 1] != _SLASH or data[i + 2] != _SLASH:
        raise ParseError(400, "invalid request target")
    i += 3
    j = i
    while j < end and data[j] != _SLASH and data[j] != 63:  # "/" or "?" ends the authority
        j += 1
    result = _authority(data, i, j, False)
    if result == _AUTH_USERINFO:
        raise ParseError(400, "userinfo in request target")
    if result != _AUTH_OK:
        raise ParseError(400, "invalid request target")
    return data[i:j]


def _is_line_space(c):
    return c == _SP or c == _HTAB or c == _CR or c == _LF


def _keep_alive(version, conn_flags):
    if conn_flags & _CONN_CLOSE:
        return False
    return version == 11 or (conn_flags & _CONN_KEEP_ALIVE) != 0


def _join_upgrade(previous, value):
    return value if previous is None else previous + b", " + value


def _known_method(data, start, end):
    # The usual methods come back as shared constants instead of fresh slices.
    length = end - start
    if length == 3 and data[start] == 71 and data[start + 1] == 69 and data[start + 2] == 84:
        return b"GET"
    if length == 4 and data[start] == 80 and data[start + 1] == 79 and data[start + 2] == 83 and data[start + 3] == 84:
        return b"POST"
    return data[start:end]


# ---------------------------------------------------------------- request heads


def parse_request_head(data, max_size):
    """Parse the request head at the start of ``data``: RequestHead, NEED_MORE, or ParseError."""
    if data is None:
        raise TypeError("data must be bytes, not None")
    n = len(data)
    limit = n if n < max_size else max_size

    start = _skip_empty_lines(data, limit)
    if start < 0:
        return _incomplete(n, max_size, 431)

    # request-line = method SP request-target SP HTTP-version CRLF. A byte
    # that breaks a part is blamed on that part; whitespace and line ends in
    # the wrong place are blamed on the line.
    method_end = _span(data, start, limit, _TCHAR)
    if method_end >= limit:
        return _incomplete(n, max_size, 431)
    c = data[method_end]
    if method_end == start or c != _SP:
        _fail(data, method_end, limit, 400, "invalid request line" if _is_line_space(c) else "invalid method")
        return _incomplete(n, max_size, 431)
    target_start = method_end + 1
    target_end = _span(data, target_start, limit, _TARGET_CHAR)
    if target_end >= limit:
        return _incomplete(n, max_size, 431)
    c = data[target_end]
    if target_end == target_start or c != _SP:
        _fail(data, target_end, limit, 400, "invalid request line" if _is_line_space(c) else "invalid request target")
        return _incomplete(n, max_size, 431)
    _check_percent(data, target_start, target_end)
    i = target_end + 1
    # A version that does not even start with an H means the line has a
    # space too many ("GET /a b HTTP/1.1"), not a bad version.
    version = _http_version(
        data, i, limit, 400, 505,
        "invalid http version" if i < limit and data[i] | 32 == 104 else "invalid request line",
    )
    if version < 0:
        return _incomplete(n, max_size, 431)
    i = _line_end(data, i + 8, limit, 400, "invalid request line")
    if i < 0:
        return _incomplete(n, max_size, 431)
    authority = _request_target(data, start, method_end, target_start, target_end)

    content_length = -1
    te_flags = 0
    has_te = False
    conn_flags = 0
    tokens = None
    single_tokens = None  # a lone keep-alive or close: the shared tuple, no list
    hop_by_hop = False
    expect_continue = False
    upgrade = None
    host = None
    host_count = 0
    dst_override = None
    has_client_id = False
    has_trace = False
    h2c = False

    while True:
        if i >= limit:
            return _incomplete(n, max_size, 431)
        if data[i] == _CR:
            end = _line_end(data, i, limit, 400, "bare cr")
            if end < 0:
                return _incomplete(n, max_size, 431)
            break
        colon = _field_name(data, i, limit, 400)
        if colon < 0:
            return _incomplete(n, max_size, 431)
        value_start = _skip_ows(data, colon + 1, limit)
        cr = _value_span(data, value_start, limit)
        next_line = _line_end(data, cr, limit, 400, "invalid header value")
        # The field is judged only once the next line has begun: a fold
        # there is the thing wrong, whatever this line says.
        if next_line < 0 or next_line >= limit:
            return _incomplete(n, max_size, 431)
        if data[next_line] == _SP or data[next_line] == _HTAB:
            raise ParseError(400, "obsolete line folding")
        value_end = _rstrip_ows(data, value_start, cr)
        kind = _field_kind(data, i, colon - i)
        i = next_line
        if kind == _K_OTHER:
            continue
        if kind == _K_HOST:
            host_count += 1
            if host_count > 1:
                raise ParseError(400, "multiple host")
            _check_host(data, value_start, value_end)
            host = bytes_range(data, value_start, value_end)
        elif kind == _K_CONTENT_LENGTH:
            if _has_htab(data, colon + 1, cr):
                raise ParseError(400, "invalid content-length")
            content_length = _content_length(data, value_start, value_end, content_length, 400)
        elif kind == _K_TRANSFER_ENCODING:
            if _has_htab(data, colon + 1, cr):
                raise ParseError(400, "invalid transfer-encoding")
            has_te = True
            te_flags = _merge_codings(te_flags, _transfer_codings(data, value_start, value_end, 400))
        elif kind == _K_EXPECT:
            if value_end - value_start == 12 and _ieq(data, value_start, b"100-continue", 12):
                expect_continue = True
        elif kind == _K_DST_OVERRIDE:
            if dst_override is not None:
                raise ParseError(400, "multiple l5d-dst-override")
            dst_override = data[value_start:value_end]
        elif kind == _K_CLIENT_ID:
            has_client_id = True
        elif kind == _K_TRACE:
            has_trace = True
        else:
            hop_by_hop = True
            if kind == _K_CONNECTION:
                if tokens is None and single_tokens is None:
                    single_tokens = _single_token(data, value_start, value_end)
                    if single_tokens is not None:
                        conn_flags |= _CONN_KEEP_ALIVE if single_tokens is _KEEP_ALIVE_TOKENS else _CONN_CLOSE
                        continue
                tokens = _token_list(tokens, single_tokens)
                single_tokens = None
                conn_flags |= _connection_tokens(data, value_start, value_end, tokens, 400)
            elif kind == _K_UPGRADE:
                if _upgrade_offers_h2c(data, value_start, value_end, 400):
                    h2c = True
                upgrade = _join_upgrade(upgrade, data[value_start:value_end])

    if version == 11 and host_count == 0:
        raise ParseError(400, "missing host")
    if has_te:
        _check_framing(version, te_flags, content_length, 400)

    head = RequestHead.__new__(RequestHead)
    head.raw = data if (start == 0 and end == n) else bytes_range(data, start, end)
    head.method = _known_method(data, start, method_end)
    head.target = bytes_range(data, target_start, target_end)
    head.version = version
    head.content_length = content_length
    head.chunked = has_te
    head.keep_alive = _keep_alive(version, conn_flags)
    head.hop_by_hop = hop_by_hop
    # RFC 9110 10.1.1: 100-continue in an HTTP/1.0 request is ignored.
    head.expect_continue = expect_continue and version == 11
    # RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored. An offer of
    # h2c is never honoured: the head reports no upgrade, so the relay drops
    # Upgrade, Connection and HTTP2-Settings when it rewrites the head.
    head.upgrade = upgrade if (conn_flags & _CONN_UPGRADE and version == 11 and not h2c) else None
    head.host = host
    head.authority = authority
    head.dst_override = dst_override
    head.has_client_id = has_client_id
    head.trace_context = has_trace
    head.connection_tokens = single_tokens if single_tokens is not None else () if tokens is None else tuple(tokens)
    head.consumed = end
    return head


def _check_framing(version, te_flags, content_length, status):
    # RFC 9112 6.1-6.3, the same in both directions (status 400 for a
    # request, 502 for a response): Transfer-Encoding is HTTP/1.1 only, a
    # Content-Length beside it is the classic CL.TE / TE.CL setup, and
    # chunked at most once. A request body must end in chunked; a response
    # may be close-delimited after a known coding, but an unknown coding
    # ("xchunked", "identity") is refused: the next hop might read it as
    # chunked while this one reads to the close.
    if version == 10:
        raise ParseError(status, "transfer-encoding in http/1.0")
    if content_length != -1:
        raise ParseError(status, "transfer-encoding with content-length")
    if (te_flags >> _TE_COUNT_SHIFT) > 1:
        raise ParseError(status, "chunked applied twice")
    if status != 400 and te_flags & _TE_UNKNOWN:
        raise ParseError(status, "unsupported transfer-coding")
    if not te_flags & _TE_CHUNKED_LAST:
        # A response may end at the close after a coding (RFC 9112 6.3), but
        # clients disagree on such bodies, and HTTP/2 cannot carry them: refused.
        raise ParseError(status, "chunked not final")
    if te_flags & _TE_UNKNOWN:
        raise ParseError(501, "unsupported transfer-coding")
    return 0


# ---------------------------------------------------------------- response heads


def parse_response_head(data, max_size):
    """Parse the response head at the start of ``data``: ResponseHead, NEED_MORE, or ParseError(502)."""
    if data is None:
        raise TypeError("data must be bytes, not None")
    n = len(data)
    limit = n if n < max_size else max_size

    # status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ] CRLF
    version = _http_version(data, 0, limit, 502, 502, "invalid status line")
    if version < 0:
        return _incomplete(n, max_size, 502)
    status = _status_code(data, limit)
    if status < 0 or limit < 13:
        return _incomplete(n, max_size, 502)
    reason_start = 12
    reason_end = 12
    if data[12] == _SP:
        reason_start = 13
        reason_end = _value_span(data, 13, limit)
    i = _line_end(data, reason_end, limit, 502, "invalid status line")
    if i < 0:
        return _incomplete(n, max_size, 502)

    content_length = -1
    te_flags = 0
    has_te = False
    conn_flags = 0
    tokens = None
    single_tokens = None  # a lone keep-alive or close: the shared tuple, no list
    hop_by_hop = False
    hop_fields = 0
    upgrade = None

    while True:
        if i >= limit:
            return _incomplete(n, max_size, 502)
        if data[i] == _CR:
            end = _line_end(data, i, limit, 502, "bare cr")
            if end < 0:
                return _incomplete(n, max_size, 502)
            break
        colon = _field_name(data, i, limit, 502)
        if colon < 0:
            return _incomplete(n, max_size, 502)
        value_start = _skip_ows(data, colon + 1, limit)
        cr = _value_span(data, value_start, limit)
        next_line = _line_end(data, cr, limit, 502, "invalid header value")
        # The field is judged only once the next line has begun: a fold
        # there is the thing wrong, whatever this line says.
        if next_line < 0 or next_line >= limit:
            return _incomplete(n, max_size, 502)
        if data[next_line] == _SP or data[next_line] == _HTAB:
            raise ParseError(502, "obsolete line folding")
        value_end = _rstrip_ows(data, value_start, cr)
        kind = _field_kind(data, i, colon - i)
        i = next_line
        if kind == _K_CONTENT_LENGTH:
            if _has_htab(data, colon + 1, cr):
                raise ParseError(502, "invalid content-length")
            content_length = _content_length(data, value_start, value_end, content_length, 502)
        elif kind == _K_TRANSFER_ENCODING:
            if _has_htab(data, colon + 1, cr):
                raise ParseError(502, "invalid transfer-encoding")
            has_te = True
            te_flags = _merge_codings(te_flags, _transfer_codings(data, value_start, value_end, 502))
        elif _is_hop_by_hop(kind):
            hop_by_hop = True
            hop_fields += 1
            if kind == _K_CONNECTION:
                if tokens is None and single_tokens is None:
                    single_tokens = _single_token(data, value_start, value_end)
                    if single_tokens is not None:
                        conn_flags |= _CONN_KEEP_ALIVE if single_tokens is _KEEP_ALIVE_TOKENS else _CONN_CLOSE
                        continue
                tokens = _token_list(tokens, single_tokens)
                single_tokens = None
                conn_flags |= _connection_tokens(data, value_start, value_end, tokens, 502)
            elif kind == _K_UPGRADE:
                _upgrade_offers_h2c(data, value_start, value_end, 502)
                upgrade = _join_upgrade(upgrade, data[value_start:value_end])

    if has_te:
        _check_framing(version, te_flags, content_length, 502)

    head = ResponseHead.__new__(ResponseHead)
    head.raw = data if end == n else bytes_range(data, 0, end)
    head.version = version
    head.status = status
    head.reason_phrase = b"OK" if (
        reason_end - reason_start == 2 and data[reason_start] == 79 and data[reason_start + 1] == 75
    ) else data[reason_start:reason_end]
    # Content-Length beside Transfer-Encoding was refused above.
    head.content_length = content_length
    head.chunked = has_te and (te_flags & _TE_CHUNKED_LAST) != 0
    head.has_transfer_encoding = has_te
    head.keep_alive = _keep_alive(version, conn_flags)
    head.hop_by_hop = hop_by_hop
    head.upgrade = upgrade if conn_flags & _CONN_UPGRADE else None
    head.connection_tokens = single_tokens if single_tokens is not None else () if tokens is None else tuple(tokens)
    head.consumed = end
    head.only_keep_alive = hop_fields == 1 and (
        single_tokens is _KEEP_ALIVE_TOKENS or (tokens is not None and len(tokens) == 1 and tokens[0] == b"keep-alive")
    )
    return head


# ---------------------------------------------------------------- rewriting


def _dropped(raw, start, length, drop, keep_upgrade):
    kind = _field_kind(raw, start, length)
    if _is_hop_by_hop(kind):
        return not (keep_upgrade and (kind == _K_CONNECTION or kind == _K_UPGRADE))
    for name in drop:
        if len(name) == length and _ieq(raw, start, name, length):
            return True
    return False


def _check_extra_field(name, value):
    # Extra fields come from the proxy itself; a CR or LF in one would let
    # configuration inject headers, so they are checked like received ones.
    if len(name) == 0 or _span(name, 0, len(name), _TCHAR) != len(name):
        raise ValueError(f"invalid header name {name!r}")
    if _span(value, 0, len(value), _FIELD_VALUE) != len(value):
        raise ValueError(f"invalid header value {value!r}")
    return 0


def rewrite_head(raw, first_line, drop, keep_upgrade, extra):
    """Rebuild a parsed head for forwarding: new first line, hop-by-hop and ``drop`` fields removed, ``extra`` appended.

    Kept fields stay byte for byte and in order; runs of kept lines are
    copied as single slices. ``drop`` holds lower-case names (typically the
    head's connection_tokens); with ``keep_upgrade`` (pass it only when the
    head's ``upgrade`` is set) the Connection and Upgrade fields survive,
    even when ``drop`` names them. HTTP2-Settings never survives.
    """
    if raw is None:
        raise TypeError("raw must be bytes, not None")
    n = len(raw)
    line_end = _next_line(raw, _span(raw, 0, n, _FIELD_VALUE), n)
    parts = []
    keep_from = 0
    if first_line is not None:
        if _span(first_line, 0, len(first_line), _FIELD_VALUE) != len(first_line):
            raise ValueError(f"invalid first line {first_line!r}")
        parts.append(first_line)
        parts.append(b"\r\n")
        keep_from = line_end
    i = line_end
    while i < n and raw[i] != _CR:
        colon = _span(raw, i, n, _TCHAR)
        if colon == i or colon >= n or raw[colon] != _COLON:
            raise ValueError("raw is not a parsed head")
        line_end = _next_line(raw, _span(raw, colon + 1, n, _FIELD_VALUE), n)
        if _dropped(raw, i, colon - i, drop, keep_upgrade):
            if keep_from < i:
                parts.append(raw[keep_from:i])
            keep_from = line_end
        i = line_end
    if _next_line(raw, i, n) != n:
        raise ValueError("raw is not a parsed head")
    if keep_from == 0 and not extra:
        return raw
    if keep_from < i:
        parts.append(raw[keep_from:i])
    for name, value in extra:
        _check_extra_field(name, value)
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _next_line(raw, i, n):
    # Index after the CRLF expected at i; raw was parsed, so anything else
    # means the caller passed something that is not a head.
    if i + 1 >= n or raw[i] != _CR or raw[i + 1] != _LF:
        raise ValueError("raw is not a parsed head")
    return i + 2


# ---------------------------------------------------------------- chunked bodies


class ChunkedScanner:
    """Incremental validator of a chunked message body (RFC 9112 7.1), fed in arbitrary pieces.

    ``scan`` returns the offset just past what it consumed, stopping right
    after the trailer section's final CRLF so pipelined bytes stay unread;
    ``done`` turns True there. With ``out`` a list, chunk payload slices are
    appended to it, framing excluded.

    With ``keep_trailers``, a relay that de-frames the body can re-frame the
    trailer section: ``trailers`` becomes the list of (name as sent, value
    without surrounding whitespace) once ``done``, and a trailer naming a
    framing, routing or hop-by-hop field (which must never be merged into a
    head, RFC 9110 6.5.1) is a ParseError. Without it ``trailers`` is None
    and the trailer bytes are only validated.
    """

    def __init__(self, error_status=400, max_line=4096, max_trailer=65536, keep_trailers=False):
        self.error_status = error_status
        self.trailers = [] if keep_trailers else None
        self.trailer_parts = [] if keep_trailers else None
        self.done = False
        self.state = _S_SIZE
        self.remaining = 0
        self.line_bytes = 0
        self.trailer_bytes = 0
        self.max_line = max_line
        self.max_trailer = max_trailer
        self.size_acc = 0
        self.size_digits = 0

    def __repr__(self):
        return f"<ChunkedScanner state={self.state} remaining={self.remaining} done={self.done}>"

    def scan(self, data, start, out=None):
        """Consume chunked framing from ``data[start:]``; return the end offset of what was consumed."""
        if data is None:
            raise TypeError("data must be bytes, not None")
        n = len(data)
        if start < 0 or start > n:
            raise ValueError("start out of range")
        if self.state == _S_FAILED:
            raise ParseError(self.error_status, "chunked body already failed")
        i = start
        trailer_from = -1
        while i < n and self.state != _S_DONE:
            if self.state == _S_DATA:
                take = n - i
                if take > self.remaining:
                    take = self.remaining
                if out is not None:
                    out.append(data if take == n else data[i : i + take])
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = _S_DATA_CR
                continue
            c = data[i]
            i += 1
            if self.state <= _S_SIZE_LF:
                self.line_bytes += 1
                if self.line_bytes > self.max_line:
                    raise _scanner_error(self, "chunk line too long")
                _size_line_byte(self, c)
            elif self.state <= _S_DATA_LF:
                _data_end_byte(self, c)
            else:
                if trailer_from < 0:
                    trailer_from = i - 1
                self.trailer_bytes += 1
                if self.trailer_bytes > self.max_trailer:
                    raise _scanner_error(self, "trailer section too large")
                _trailer_byte(self, c)
        if trailer_from >= 0 and self.trailer_parts is not None:
            # Kept per call, not per byte: the section is joined once at the end.
            self.trailer_parts.append(data[trailer_from:i])
            if self.done:
                _collect_trailers(self)
        return i


def _collect_trailers(sc):
    # The bytes were validated field by field on the way in, so splitting
    # on CRLF and the first colon is exact here.
    raw = b"".join(sc.trailer_parts)
    sc.trailer_parts = None
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, _, value = line.partition(b":")
        kind = _field_kind(name, 0, len(name))
        if _is_protected(kind) or _is_hop_by_hop(kind):
            sc.done = False
            raise _scanner_error(sc, "forbidden trailer field")
        sc.trailers.append((name, value.strip(b" \t")))
    return 0


def _scanner_error(sc, reason):
    sc.state = _S_FAILED
    return ParseError(sc.error_status, reason)


def _line_byte_error(sc, c, reason):
    if c == _LF:
        return _scanner_error(sc, "bare lf")
    return _scanner_error(sc, reason)


def _size_line_byte(sc, c):
    # chunk-size [ chunk-ext ] CRLF, with
    # chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ).
    # Whitespace is only allowed where BWS is, so "1 0" and "1 \r\n" fail.
    state = sc.state
    if state == _S_SIZE:
        v = _HEX_VALUE[c]
        if v != 255:
            if sc.size_acc >= _MAX_CHUNK_SIZE_BEFORE_SHIFT:
                raise _scanner_error(sc, "invalid chunk size")
            sc.size_acc = (sc.size_acc << 4) | v
            sc.size_digits += 1
        elif sc.size_digits == 0:
            raise _line_byte_error(sc, c, "invalid chunk size")
        elif c == _CR:
            sc.state = _S_SIZE_LF
        elif c == _SEMI:
            sc.state = _S_EXT_PRE_NAME
        elif c == _SP or c == _HTAB:
            sc.state = _S_SIZE_WS
        else:
            raise _line_byte_error(sc, c, "invalid chunk size")
    elif state == _S_SIZE_WS:
        if c == _SEMI:
            sc.state = _S_EXT_PRE_NAME
        elif c != _SP and c != _HTAB:
            raise _line_byte_error(sc, c, "invalid chunk size")
    elif state == _S_EXT_PRE_NAME:
        if _TCHAR[c]:
            sc.state = _S_EXT_NAME
        elif c != _SP and c != _HTAB:
            raise _line_byte_error(sc, c, "invalid chunk extension")
    elif state == _S_EXT_NAME:
        if c == _EQUALS:
            sc.state = _S_EXT_PRE_VALUE
        elif c == _SP or c == _HTAB:
            sc.state = _S_EXT_NAME_WS
        elif not _TCHAR[c]:
            _ext_end_byte(sc, c)
    elif state == _S_EXT_NAME_WS:
        if c == _EQUALS:
            sc.state = _S_EXT_PRE_VALUE
        elif c == _SEMI:
            sc.state = _S_EXT_PRE_NAME
        elif c != _SP and c != _HTAB:
            raise _line_byte_error(sc, c, "invalid chunk extension")
    elif state == _S_EXT_TOKEN:
        if c == _SP or c == _HTAB:
            sc.state = _S_EXT_VALUE_WS
        elif not _TCHAR[c]:
            _ext_end_byte(sc, c)
    elif state == _S_EXT_AFTER_QUOTED:
        if c == _SP or c == _HTAB:
            sc.state = _S_EXT_VALUE_WS
        else:
            _ext_end_byte(sc, c)
    elif state == _S_EXT_VALUE_WS:
        if c == _SEMI:
            sc.state = _S_EXT_PRE_NAME
        elif c != _SP and c != _HTAB:
            raise _line_byte_error(sc, c, "invalid chunk extension")
    elif state == _S_EXT_PRE_VALUE:
        if c == _DQUOTE:
            sc.state = _S_EXT_QUOTED
        elif _TCHAR[c]:
            sc.state = _S_EXT_TOKEN
        elif c != _SP and c != _HTAB:
            raise _line_byte_error(sc, c, "invalid chunk extension")
    elif state == _S_EXT_QUOTED:
        if c == _DQUOTE:
            sc.state = _S_EXT_AFTER_QUOTED
        elif c == _BACKSLASH:
            sc.state = _S_EXT_QUOTED_ESC
        elif not _QDTEXT[c]:
            raise _line_byte_error(sc, c, "invalid chunk extension")
    elif state == _S_EXT_QUOTED_ESC:
        if not _FIELD_VALUE[c]:
            raise _line_byte_error(sc, c, "invalid chunk extension")
        sc.state = _S_EXT_QUOTED
    else:  # _S_SIZE_LF
        if c != _LF:
            raise _scanner_error(sc, "bare cr")
        sc.line_bytes = 0
        sc.remaining = sc.size_acc
        sc.size_acc = 0
        sc.size_digits = 0
        sc.state = _S_DATA if sc.remaining > 0 else _S_T_START
    return 0


def _ext_end_byte(sc, c):
    # Right after an extension name or value (no whitespace): next extension or end of line.
    if c == _SEMI:
        sc.state = _S_EXT_PRE_NAME
    elif c == _CR:
        sc.state = _S_SIZE_LF
    else:
        raise _line_byte_error(sc, c, "invalid chunk extension")
    return 0


def _data_end_byte(sc, c):
    # The CRLF that must follow every chunk's data: without it the chunk size
    # lied, which is exactly the discrepancy smuggling relies on.
    if sc.state == _S_DATA_CR:
        if c == _CR:
            sc.state = _S_DATA_LF
        elif c == _LF:
            raise _scanner_error(sc, "bare lf")
        else:
            raise _scanner_error(sc, "missing crlf after chunk data")
    else:  # _S_DATA_LF
        if c != _LF:
            raise _scanner_error(sc, "bare cr")
        sc.state = _S_SIZE
    return 0


def _trailer_byte(sc, c):
    # trailer-section = *( field-line CRLF ) CRLF, fields held to header rules.
    state = sc.state
    if state == _S_T_START:
        if c == _CR:
            sc.state = _S_END_LF
        elif _TCHAR[c]:
            sc.state = _S_T_NAME
        elif c == _SP or c == _HTAB:
            raise _scanner_error(sc, "obsolete line folding")
        elif c == _COLON:
            raise _scanner_error(sc, "empty header name")
        else:
            raise _line_byte_error(sc, c, "invalid header name")
    elif state == _S_T_NAME:
        if c == _COLON:
            sc.state = _S_T_VALUE
        elif c == _SP or c == _HTAB:
            raise _scanner_error(sc, "whitespace before colon")
        elif not _TCHAR[c]:
            raise _line_byte_error(sc, c, "invalid header name")
    elif state == _S_T_VALUE:
        if c == _CR:
            sc.state = _S_T_LF
        elif not _FIELD_VALUE[c]:
            raise _line_byte_error(sc, c, "invalid header value")
    elif state == _S_T_LF:
        if c != _LF:
            raise _scanner_error(sc, "bare cr")
        sc.state = _S_T_START
    else:  # _S_END_LF
        if c != _LF:
            raise _scanner_error(sc, "bare cr")
        sc.state = _S_DONE
        sc.done = True
    return 0
