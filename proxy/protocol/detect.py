"""Sans-IO protocol detection: is a connection's first data HTTP/2, HTTP/1, a TLS ClientHello, or opaque?

Every scanner answers NEED_MORE, MATCH or NO_MATCH from the bytes alone and is
monotone: once a prefix is decided, every longer input gets the same answer.
That lets a caller re-run detection on each read without keeping parser state,
and lets tests check every prefix of a capture. Types live in detect.pxd.

HTTP/1 is detected by what it looks like, not by whether it is valid: a broken
request must reach the strict HTTP/1 parser (which answers 400), never be
relayed as opaque bytes to an app that might read it differently.
"""

# Public results. The C-typed twins below (declared in detect.pxd) are what the
# loops compare against, so compiled code never looks up a module global.
NEED_MORE = 0
MATCH = 1
NO_MATCH = 2

HTTP1 = 1
H2 = 2
TLS = 3
OPAQUE = 4

_NEED_MORE = 0
_MATCH = 1
_NO_MATCH = 2
_HTTP1 = 1
_H2 = 2
_TLS = 3
_OPAQUE = 4

DEFAULT_MAX = 16384
_DEFAULT_MAX = 16384

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP_VERSION = b"HTTP/1."
_HTTP_WORD = b"http/"


def _table(members):
    table = bytearray(256)
    for c in members:
        table[c] = 1
    return bytes(table)


# What the first line of an HTTP/1 request may hold, broken ones included:
# printable ASCII, HTAB, CR and NUL (a NUL in a method is a broken request,
# not another protocol). Any other control byte before the first LF rules HTTP/1 out.
# DEL and bytes above 0x7F are text too (a broken method "GE\x7fT", UTF-8):
# binary protocols give themselves away by control bytes long before a line ends.
_LINE_TEXT = _table([0, 9, 13] + list(range(0x20, 0x100)))

# TLS numbers (RFC 8446 section 5.1 and 4, RFC 6066 section 3, RFC 7301 section 3.1).
_CONTENT_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_NAME_TYPE_HOST = 0
# A record's plaintext may not exceed 2^14 bytes; anything bigger is not TLS.
_MAX_RECORD = 16384
# version(2) random(32) session_id<1> cipher_suites<2> with one suite,
# compression<1> with one method: a shorter ClientHello body cannot be valid.
_MIN_HELLO_BODY = 41
# RFC 1035 caps a name at 255 octets; a longer "host name" is not one.
_MAX_HOST_NAME = 255


def _is_tchar(c):
    # RFC 9110 section 5.6.2. Upper-case letters come first: real methods are
    # upper-case, so the common byte is decided by the first comparison.
    if 65 <= c <= 90 or 97 <= c <= 122 or 48 <= c <= 57:
        return True
    return c in b"!#$%&'*+-.^_`|~"


def _is_host_char(c):
    # Letters, digits, '-', '.', '_' (underscore appears in real service names).
    return 97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c == 45 or c == 46 or c == 95


def is_http1(data, max_line=DEFAULT_MAX):
    """MATCH when data opens with a complete, valid HTTP/1.0 or HTTP/1.1 request line.

    Up to four empty lines (CRLF) may precede it (RFC 9112 section 2.2). The
    request line's CRLF must end within the first max_line bytes of data.
    Detection uses the broader looks_like_http1: a request need not be valid
    to be HTTP.
    """
    n = len(data)
    # Bytes at or past `limit` are never needed; running into it means the line
    # is too long, running into `n` means it may still arrive.
    limit = max_line if max_line < n else n
    i = 0
    skipped = 0
    while i < limit and data[i] == 13:
        if skipped == 4:
            return _NO_MATCH
        if i + 1 >= limit:
            return _NEED_MORE if i + 1 < max_line else _NO_MATCH
        if data[i + 1] != 10:
            return _NO_MATCH
        i += 2
        skipped += 1

    # method: one or more tchar, then SP
    start = i
    while i < limit:
        c = data[i]
        if c == 32:
            break
        if not _is_tchar(c):
            return _NO_MATCH
        i += 1
    if i >= limit:
        return _NEED_MORE if i < max_line else _NO_MATCH
    if i == start:
        return _NO_MATCH
    i += 1

    # request-target: one or more visible ASCII, then SP
    start = i
    while i < limit:
        c = data[i]
        if c == 32:
            break
        if c < 33 or c > 126:
            return _NO_MATCH
        i += 1
    if i >= limit:
        return _NEED_MORE if i < max_line else _NO_MATCH
    if i == start:
        return _NO_MATCH
    i += 1

    # "HTTP/1." DIGIT CR LF, where DIGIT is 0 or 1; compared byte by byte so
    # a wrong byte is refused as soon as it arrives (PRI * HTTP/2.0 included).
    k = 0
    while k < 10:
        if i >= limit:
            return _NEED_MORE if i < max_line else _NO_MATCH
        c = data[i]
        if k < 7:
            if c != _HTTP_VERSION[k]:
                return _NO_MATCH
        elif k == 7:
            if c != 48 and c != 49:
                return _NO_MATCH
        elif k == 8:
            if c != 13:
                return _NO_MATCH
        elif c != 10:
            return _NO_MATCH
        i += 1
        k += 1
    return _MATCH


def _method_then_space(data, i, limit, method):
    # MATCH when data[i:] is method then SP or HTAB; NEED_MORE while it may still be.
    m = len(method)
    k = 0
    while k < m:
        if i + k >= limit:
            return _NEED_MORE
        if data[i + k] != method[k]:
            return _NO_MATCH
        k += 1
    if i + m >= limit:
        return _NEED_MORE
    c = data[i + m]
    return _MATCH if c == 32 or c == 9 else _NO_MATCH


def _standard_method(data, i, limit):
    # The methods of RFC 9110 and RFC 5789, case-sensitive: "get k" is
    # memcached, "GET k" is (broken) HTTP.
    c = data[i]
    if c == 71:  # G
        return _method_then_space(data, i, limit, b"GET")
    if c == 80:  # P
        status = _method_then_space(data, i, limit, b"POST")
        if status == _NO_MATCH:
            status = _method_then_space(data, i, limit, b"PUT")
        if status == _NO_MATCH:
            status = _method_then_space(data, i, limit, b"PATCH")
        return status
    if c == 72:  # H
        return _method_then_space(data, i, limit, b"HEAD")
    if c == 68:  # D
        return _method_then_space(data, i, limit, b"DELETE")
    if c == 67:  # C
        return _method_then_space(data, i, limit, b"CONNECT")
    if c == 79:  # O
        return _method_then_space(data, i, limit, b"OPTIONS")
    if c == 84:  # T
        return _method_then_space(data, i, limit, b"TRACE")
    return _NO_MATCH


def looks_like_http1(data, max_size=DEFAULT_MAX):
    """MATCH when data looks like the start of an HTTP/1 request, valid or not.

    After optional blank space (CR, LF, SP, HTAB), either a standard method
    followed by SP or HTAB, or a first line (up to LF) of printable ASCII,
    HTAB, CR and NUL in which a word after the first starts with "HTTP/" in
    any case; CR counts as a word break so a bare CR does not hide the
    version. NO_MATCH as soon as a byte outside that alphabet arrives, or
    the first line ends without such a word. A first line running past
    max_size bytes is a request line if it has at least two words.
    """
    n = len(data)
    limit = max_size if max_size < n else n
    i = 0
    while i < limit:
        c = data[i]
        if c != 13 and c != 10 and c != 32 and c != 9:
            break
        i += 1
    if i >= limit:
        return _NEED_MORE if i < max_size else _NO_MATCH
    first = data[i]
    if first < 0x21 or first > 0x7E:
        # A NUL or a byte above ASCII may hide inside a broken method, but a
        # request starts with a printable ASCII byte: any other first byte is a
        # binary protocol's (length prefixes, PostgreSQL, SSLv2): decided now.
        return _NO_MATCH
    if _standard_method(data, i, limit) == _MATCH:
        return _MATCH
    words = 0
    in_word = False
    k = -1  # bytes of "http/" matched by the current word; -1: it is not that word
    while i < limit:
        c = data[i]
        if c == 10 or not _LINE_TEXT[c]:
            return _NO_MATCH
        if c == 32 or c == 9 or c == 13:
            in_word = False
        else:
            if not in_word:
                in_word = True
                words += 1
                k = 0 if words > 1 else -1
            if k >= 0:
                lc = c + 32 if 65 <= c <= 90 else c
                if lc == _HTTP_WORD[k]:
                    k += 1
                    if k == 5:
                        return _MATCH
                else:
                    k = -1
        i += 1
    if i < max_size:
        return _NEED_MORE
    # A first line longer than anything detection reads: a request line if it
    # has two words, or one that starts like a method (a huge method token).
    return _MATCH if words > 1 or 65 <= first <= 90 or 97 <= first <= 122 else _NO_MATCH


def could_be_http1(data, max_size=DEFAULT_MAX):
    """True when data could still be the start of an HTTP/1 request, valid or broken.

    For the moment detection gives up waiting: bytes that look like HTTP (or
    may yet) are parsed as HTTP rather than relayed raw. Nothing but blank
    space is not enough: it says nothing about the protocol.
    """
    status = looks_like_http1(data, max_size)
    if status != _NEED_MORE:
        return status == _MATCH
    # Undecided: a first line that began with a printable byte may still end
    # in "HTTP/1.1" (looks_like_http1 ruled out every other first byte), so
    # it could be a request; nothing but blank space says nothing yet.
    n = len(data)
    i = 0
    while i < n:
        c = data[i]
        if c != 13 and c != 10 and c != 32 and c != 9:
            return True
        i += 1
    return False


def is_h2_preface(data):
    """MATCH when data starts with the HTTP/2 connection preface (RFC 9113 section 3.4)."""
    n = len(data)
    if n > 24:
        n = 24
    i = 0
    while i < n:
        if data[i] != _H2_PREFACE[i]:
            return _NO_MATCH
        i += 1
    return _MATCH if n == 24 else _NEED_MORE


class ClientHello:
    """What the proxy needs from a TLS ClientHello: SNI, ALPN and the legacy version."""

    def __init__(self, sni=None, alpn=(), legacy_version=0):
        self.sni = sni
        self.alpn = tuple(alpn)
        self.legacy_version = legacy_version

    def __repr__(self):
        return (
            f"ClientHello(sni={self.sni!r}, alpn={self.alpn!r}, "
            f"legacy_version=0x{self.legacy_version:04x})"
        )


def _u16(buf, p):
    return (buf[p] << 8) | buf[p + 1]


def _record_header(data, pos, n):
    """MATCH when a valid handshake record header starts at pos; checks each byte as it arrives."""
    if pos >= n:
        return _NEED_MORE
    if data[pos] != _CONTENT_HANDSHAKE:
        return _NO_MATCH
    if pos + 1 >= n:
        return _NEED_MORE
    if data[pos + 1] != 3:
        return _NO_MATCH
    if pos + 2 >= n:
        return _NEED_MORE
    # Record versions run 3.0 (SSL 3) to 3.4; TLS 1.3 froze it at 3.1 or 3.3.
    if data[pos + 2] > 4:
        return _NO_MATCH
    if pos + 3 >= n:
        return _NEED_MORE
    # The high length byte alone already rules out anything over 2^14.
    if data[pos + 3] > 64:
        return _NO_MATCH
    if pos + 4 >= n:
        return _NEED_MORE
    length = _u16(data, pos + 3)
    # Zero-length handshake fragments are forbidden (RFC 8446 section 5.1).
    if length == 0 or length > _MAX_RECORD:
        return _NO_MATCH
    return _MATCH


def _server_name(buf, p, end, out):
    """Validate an SNI extension body buf[p:end] (RFC 6066 section 3); fill out.sni."""
    if end - p < 2:
        return _NO_MATCH
    size = _u16(buf, p)
    if size == 0 or p + 2 + size != end:
        return _NO_MATCH
    p += 2
    found = False
    while p < end:
        if p + 3 > end:
            return _NO_MATCH
        name_type = buf[p]
        size = _u16(buf, p + 1)
        p += 3
        if p + size > end:
            return _NO_MATCH
        # Every name type carries a u16-length body, so unknown ones are
        # skipped; only one host_name is allowed.
        if name_type == _NAME_TYPE_HOST:
            if found or size == 0 or size > _MAX_HOST_NAME:
                return _NO_MATCH
            q = p
            while q < p + size:
                if not _is_host_char(buf[q]):
                    return _NO_MATCH
                q += 1
            if out is not None:
                out.sni = buf[p:p + size].decode("ascii").lower()
            found = True
        p += size
    return _MATCH


def _alpn(buf, p, end, out):
    """Validate an ALPN extension body buf[p:end] (RFC 7301 section 3.1); fill out.alpn."""
    if end - p < 2:
        return _NO_MATCH
    size = _u16(buf, p)
    if size < 2 or p + 2 + size != end:
        return _NO_MATCH
    p += 2
    names = [] if out is not None else None
    while p < end:
        size = buf[p]
        p += 1
        if size == 0 or p + size > end:
            return _NO_MATCH
        if names is not None:
            names.append(buf[p:p + size])
        p += size
    if names is not None:
        out.alpn = tuple(names)
    return _MATCH


def _hello_body(buf, p, avail, end, out):
    """Validate the ClientHello body buf[p:end], of which buf[:avail] has arrived.

    Lengths are checked against `end` before `avail`, so a field that cannot
    fit is refused even while the rest of the message is still in flight.
    """
    if avail <= p:
        return _NEED_MORE
    if buf[p] != 3:
        return _NO_MATCH
    if avail < p + 2:
        return _NEED_MORE
    version = _u16(buf, p)
    p += 34  # legacy_version and random

    if p >= avail:
        return _NEED_MORE
    size = buf[p]
    if size > 32:
        return _NO_MATCH
    p += 1 + size

    if p + 2 > end:
        return _NO_MATCH
    if p + 2 > avail:
        return _NEED_MORE
    size = _u16(buf, p)
    if size < 2 or size & 1:
        return _NO_MATCH
    p += 2 + size

    if p + 1 > end:
        return _NO_MATCH
    if p + 1 > avail:
        return _NEED_MORE
    size = buf[p]
    if size == 0:
        return _NO_MATCH
    p += 1 + size
    if p > end:
        return _NO_MATCH

    # A TLS 1.2-and-earlier hello may stop here: no extensions at all.
    if p < end:
        if p + 2 > end:
            return _NO_MATCH
        if p + 2 > avail:
            return _NEED_MORE
        if p + 2 + _u16(buf, p) != end:
            return _NO_MATCH
        p += 2
        first = p
        # Duplicates are refused (RFC 8446 section 4.2). Types below 64 are
        # tracked in a bit mask; the rest (GREASE, renegotiation_info, ECH)
        # are few, so they are looked up among the headers already walked.
        seen = 0
        while p < end:
            if p + 4 > end:
                return _NO_MATCH
            if p + 4 > avail:
                return _NEED_MORE
            ext = _u16(buf, p)
            size = _u16(buf, p + 2)
            body = p + 4
            if body + size > end:
                return _NO_MATCH
            if ext < 64:
                bit = 1
                bit <<= ext
                if seen & bit:
                    return _NO_MATCH
                seen |= bit
            else:
                q = first
                while q < p:
                    if _u16(buf, q) == ext:
                        return _NO_MATCH
                    q += 4 + _u16(buf, q + 2)
            if ext == _EXT_SERVER_NAME or ext == _EXT_ALPN:
                if body + size > avail:
                    return _NEED_MORE
                if ext == _EXT_SERVER_NAME:
                    status = _server_name(buf, body, body + size, out)
                else:
                    status = _alpn(buf, body, body + size, out)
                if status != _MATCH:
                    return status
            p = body + size

    if avail < end:
        return _NEED_MORE
    if out is not None:
        out.legacy_version = version
    return _MATCH


def _hello_fragmented(data, n, max_size, out):
    """The rare path: the handshake message spans records, so their payloads are joined first."""
    parts = []
    total = 0  # handshake bytes gathered
    need = -1  # 4 + body length, once the handshake header is known
    pos = 0
    complete = False
    while True:
        status = _record_header(data, pos, n)
        if status == _NO_MATCH:
            return _NO_MATCH
        if status == _NEED_MORE:
            break
        length = _u16(data, pos + 3)
        start = pos + 5
        want = length
        if need >= 0:
            if start + (need - total) > max_size:
                return _NO_MATCH
            if want > need - total:
                want = need - total
        have = n - start
        if have > want:
            have = want
        parts.append(data[start:start + have])
        total += have
        if need < 0 and total > 0:
            # Until the 4-byte handshake header is known the pieces are tiny,
            # so joining them on each record costs nothing.
            stream = b"".join(parts)
            if stream[0] != _HANDSHAKE_CLIENT_HELLO:
                return _NO_MATCH
            if total >= 4:
                body = (stream[1] << 16) | (stream[2] << 8) | stream[3]
                need = 4 + body
                if body < _MIN_HELLO_BODY:
                    return _NO_MATCH
                # Lower bound on where the message ends in data.
                if start + (need - (total - have)) > max_size:
                    return _NO_MATCH
        if need >= 0 and total >= need:
            complete = True
            break
        if have < want:
            break  # this record is still arriving
        pos = start + length
    if need < 0:
        return _NEED_MORE
    stream = b"".join(parts)
    if total > need:
        # The record that completed the header also carries later messages.
        stream = stream[:need]
        total = need
    status = _hello_body(stream, 4, total, need, out)
    if status == _MATCH and not complete:
        return _NEED_MORE
    return status


def _hello(data, max_size, out):
    """MATCH/NEED_MORE/NO_MATCH for data as a ClientHello; on MATCH, out (when given) is filled."""
    n = len(data)
    status = _record_header(data, 0, n)
    if status != _MATCH:
        return status
    length = _u16(data, 3)
    if length < 4 or n < 9:
        # The handshake header itself is split or still arriving; check what
        # there is of it in the general path.
        if n > 5 and length >= 4 and data[5] != _HANDSHAKE_CLIENT_HELLO:
            return _NO_MATCH
        status = _hello_fragmented(data, n, max_size, out)
    elif data[5] != _HANDSHAKE_CLIENT_HELLO:
        return _NO_MATCH
    else:
        body = (data[6] << 16) | (data[7] << 8) | data[8]
        if body < _MIN_HELLO_BODY or 9 + body > max_size:
            return _NO_MATCH
        if 4 + body <= length:
            # The whole message is in the first record: parse in place.
            end = 9 + body
            status = _hello_body(data, 9, end if end < n else n, end, out)
        else:
            status = _hello_fragmented(data, n, max_size, out)
    if status == _NEED_MORE and n >= max_size:
        return _NO_MATCH
    return status


def peek_client_hello(data, max_size=DEFAULT_MAX):
    """A ClientHello when data starts with a complete, valid one in at most max_size bytes.

    Otherwise NEED_MORE while it may still become one, or NO_MATCH.
    """
    status = _hello(data, max_size, None)
    if status != _MATCH:
        return status
    # Validated already: the second pass only records what it passes over.
    hello = ClientHello()
    _hello(data, max_size, hello)
    return hello


def _detect(data, limit):
    n = len(data)
    if n == 0:
        return _NEED_MORE
    first = data[0]
    if first == _CONTENT_HANDSHAKE:
        # 0x16 is neither a tchar nor 'P': only TLS can start this way.
        status = _hello(data, limit, None)
        if status == _MATCH:
            return _TLS
        return _NEED_MORE if status == _NEED_MORE else _OPAQUE
    if first == 80:  # 'P': the h2 preface, or an HTTP/1 method such as POST
        h2 = is_h2_preface(data)
        if h2 == _MATCH:
            return _H2
        if h2 == _NEED_MORE:
            # "PRI * HTTP/2.0" looks like HTTP/1 long before the preface is whole.
            return _NEED_MORE
    h1 = looks_like_http1(data, limit)
    if h1 == _MATCH:
        return _HTTP1
    if h1 == _NEED_MORE:
        return _NEED_MORE
    return _OPAQUE


def detect(data):
    """H2, HTTP1, TLS or OPAQUE once the first bytes decide it, NEED_MORE until then."""
    return _detect(data, _DEFAULT_MAX)


class Detector:
    """Per-connection buffer of first bytes until detection decides.

    The decision is final: bytes fed after it are still appended to
    `buffered` (so nothing the caller handed over is lost) but not re-examined.
    While undecided, at most max_size bytes are examined; if they cannot
    decide, the connection is OPAQUE.
    """

    def __init__(self, max_size=DEFAULT_MAX):
        self.max_size = max_size
        self.buffered = b""
        self.client_hello = None
        self._result = _NEED_MORE

    def feed(self, data):
        """Append data; return NEED_MORE or the protocol kind (HTTP1, H2, TLS, OPAQUE)."""
        if self.buffered:
            self.buffered += data
        else:
            self.buffered = data
        if self._result != _NEED_MORE:
            return self._result
        result = _detect(self.buffered, self.max_size)
        if result == _NEED_MORE and len(self.buffered) >= self.max_size:
            result = _OPAQUE
        elif result == _TLS:
            self.client_hello = peek_client_hello(self.buffered, self.max_size)
        self._result = result
        return result

    def __repr__(self):
        return f"Detector(result={self._result}, buffered={len(self.buffered)} bytes)"
