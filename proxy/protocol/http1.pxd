# Typed declarations for http1.py (Cython pure-Python mode).
# This file is the contract the relays compile against: fields may be added,
# none removed or retyped without changing proxy/http and proxy/exchange too.

# ParseError stays a plain Python class (no declaration here): it carries
# .status (400, 431, 501, 505 for requests; 502 for responses) and .reason
# (short, stable, lower-case: "invalid header name").
# RequestHead.upgrade is None when Upgrade offers h2c (never honoured).

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from proxy.protocol.request cimport RequestLine

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* The end of a field value's bytes from i: eight at a time while none is a control (below 0x20, the tab
       and the CR included) or DEL, then byte by byte through the table. The two tests are the classic
       "has a byte less than n" and "has a zero byte" word tricks: they may flag a clean byte above a bad
       one, never miss a bad one, so a clean word is wholly clean. */
    static CYTHON_INLINE Py_ssize_t h1_value_span(const char *s, Py_ssize_t i, Py_ssize_t limit,
                                                  const char *table) {
        const unsigned char *p = (const unsigned char *)s;
        while (i + 8 <= limit) {
            uint64_t w, d;
            memcpy(&w, p + i, 8);
            d = w ^ 0x7F7F7F7F7F7F7F7FULL;
            if (((w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL)
                    | ((d - 0x0101010101010101ULL) & ~d & 0x8080808080808080ULL))
                break;
            i += 8;
        }
        while (i < limit && table[p[i]])
            i++;
        return i;
    }
    /* s[:n] equals the lower-case literal ignoring ASCII case: a byte matches its own value or, where the
       literal has a letter, that letter's capital (the only other byte that ORs with 0x20 to it). */
    static CYTHON_INLINE int h1_ieq(const char *s, const char *lower, Py_ssize_t n) {
        Py_ssize_t k;
        for (k = 0; k < n; k++) {
            unsigned char a = (unsigned char)s[k], b = (unsigned char)lower[k];
            if (a != b && ((a | 0x20) != b || b < 'a' || b > 'z'))
                return 0;
        }
        return 1;
    }
    """
    Py_ssize_t h1_value_span(const char *s, Py_ssize_t i, Py_ssize_t limit, const char *table) noexcept
    bint h1_ieq(const char *s, const char *lower, Py_ssize_t n) noexcept

# method, target, version, upgrade, host and dst_override come from RequestLine.
cdef class RequestHead(RequestLine):
    cdef readonly bytes raw               # exact head bytes, request line .. final CRLFCRLF
    cdef readonly long long content_length  # -1 when absent
    cdef readonly bint chunked            # Transfer-Encoding ends in chunked
    cdef readonly bint keep_alive         # per version + Connection tokens
    cdef readonly bint hop_by_hop         # some header must be removed when forwarding
    cdef readonly bint expect_continue    # Expect: 100-continue
    cdef readonly bint has_client_id      # carries l5d-client-id (inbound strips it: only the proxy may set it)
    cdef readonly tuple connection_tokens # lower-cased tokens of Connection
    cdef readonly Py_ssize_t consumed     # bytes of data used, skipped leading CRLFs included
    # Added fields go last so the layout older compiled relays know stays put.
    cdef readonly bytes authority         # host[:port] named by an absolute- or authority-form target, else None

cdef class ResponseHead:
    cdef readonly bytes raw
    cdef readonly int version
    cdef readonly int status
    cdef readonly bytes reason_phrase
    cdef readonly long long content_length
    cdef readonly bint chunked
    cdef readonly bint has_transfer_encoding  # TE present (chunked or not)
    cdef readonly bint keep_alive
    cdef readonly bint hop_by_hop
    cdef readonly bytes upgrade
    cdef readonly tuple connection_tokens
    cdef readonly Py_ssize_t consumed     # bytes of data used (== len(raw))
    # Added fields go last. The only hop-by-hop field is one "Connection: keep-alive" (nginx's every
    # response): a relay keeping its client's HTTP/1.1 connection may forward it as its own option.
    cdef readonly bint only_keep_alive

cdef class ChunkedScanner:
    cdef public int error_status          # status of ParseError raised (400 or 502)
    cdef readonly bint done
    cdef int state
    cdef long long remaining
    cdef Py_ssize_t line_bytes
    cdef Py_ssize_t trailer_bytes
    cdef Py_ssize_t max_line
    cdef Py_ssize_t max_trailer
    cdef long long size_acc
    cdef int size_digits
    cdef readonly list trailers           # (name, value) pairs once done, with keep_trailers; else None
    cdef list trailer_parts               # trailer bytes kept per scan call until done
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, take=Py_ssize_t, c=cython.uchar, trailer_from=Py_ssize_t)
    cpdef Py_ssize_t scan(self, bytes data, Py_ssize_t start, list out=*) except -1

@cython.locals(n=Py_ssize_t, limit=Py_ssize_t, start=Py_ssize_t, method_end=Py_ssize_t,
               target_start=Py_ssize_t, target_end=Py_ssize_t, i=Py_ssize_t, end=Py_ssize_t,
               colon=Py_ssize_t, value_start=Py_ssize_t, value_end=Py_ssize_t, cr=Py_ssize_t,
               next_line=Py_ssize_t, kind=int, version=int, content_length=cython.longlong,
               te_flags=int, has_te=bint, conn_flags=int, tokens=list, single_tokens=tuple, single=tuple,
               hop_by_hop=bint,
               expect_continue=bint, upgrade=bytes, host=bytes, host_count=int,
               dst_override=bytes, head=RequestHead, c=cython.uchar, authority=bytes, h2c=bint,
               has_trace=bint)
cpdef object parse_request_head(bytes data, Py_ssize_t max_size)

@cython.locals(n=Py_ssize_t, limit=Py_ssize_t, i=Py_ssize_t, end=Py_ssize_t,
               reason_start=Py_ssize_t, reason_end=Py_ssize_t, colon=Py_ssize_t,
               value_start=Py_ssize_t, value_end=Py_ssize_t, cr=Py_ssize_t,
               next_line=Py_ssize_t, kind=int, version=int, status=int,
               content_length=cython.longlong, te_flags=int, has_te=bint, conn_flags=int,
               tokens=list, single_tokens=tuple, single=tuple, hop_by_hop=bint, hop_fields=int, upgrade=bytes,
               head=ResponseHead)
cpdef object parse_response_head(bytes data, Py_ssize_t max_size)

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, line_end=Py_ssize_t, keep_from=Py_ssize_t,
               colon=Py_ssize_t, parts=list)
cpdef bytes rewrite_head(bytes raw, bytes first_line, tuple drop, bint keep_upgrade, list extra)

@cython.locals(b=cython.p_uchar, n=Py_ssize_t, i=Py_ssize_t, end=Py_ssize_t, colon=Py_ssize_t,
               start=Py_ssize_t, stop=Py_ssize_t, sent=bytes, name=bytes)
cpdef list lower_fields(bytes raw, list out, frozenset drop, tuple extra)

cpdef bytes bytes_range(bytes data, Py_ssize_t start, Py_ssize_t end)

# ---- private to http1.py: C-level constants, tables and helpers

cdef dict _LOWER_NAMES
cdef Py_ssize_t _LOWER_NAMES_MAX

cdef unsigned char _HTAB, _LF, _CR, _SP, _DQUOTE, _PERCENT, _STAR, _COMMA, _DOT, _SLASH, _ZERO, _NINE
cdef unsigned char _COLON, _SEMI, _EQUALS, _AT, _LBRACKET, _BACKSLASH, _RBRACKET
cdef Py_ssize_t _MAX_EMPTY_LINES
cdef long long _MAX_CONTENT_LENGTH, _MAX_CHUNK_SIZE_BEFORE_SHIFT
cdef int _K_OTHER, _K_CONTENT_LENGTH, _K_TRANSFER_ENCODING, _K_CONNECTION, _K_HOST
cdef int _K_KEEP_ALIVE, _K_PROXY_CONNECTION, _K_TE, _K_UPGRADE, _K_EXPECT, _K_DST_OVERRIDE, _K_CLIENT_ID
cdef int _K_HTTP2_SETTINGS, _K_TRACE
cdef int _AUTH_OK, _AUTH_BAD, _AUTH_USERINFO
cdef int _CONN_CLOSE, _CONN_KEEP_ALIVE, _CONN_UPGRADE
cdef int _TE_UNKNOWN, _TE_CHUNKED_LAST, _TE_COUNT_SHIFT
cdef int _S_SIZE, _S_SIZE_WS, _S_EXT_PRE_NAME, _S_EXT_NAME, _S_EXT_NAME_WS, _S_EXT_PRE_VALUE
cdef int _S_EXT_TOKEN, _S_EXT_VALUE_WS, _S_EXT_QUOTED, _S_EXT_QUOTED_ESC, _S_EXT_AFTER_QUOTED
cdef int _S_SIZE_LF, _S_DATA, _S_DATA_CR, _S_DATA_LF, _S_T_START, _S_T_NAME, _S_T_VALUE
cdef int _S_T_LF, _S_END_LF, _S_DONE, _S_FAILED
cdef tuple _KEEP_ALIVE_TOKENS, _CLOSE_TOKENS
cdef bytes _HTTP_SLASH, _TCHAR, _VCHAR, _FIELD_VALUE, _QDTEXT, _TARGET_CHAR, _REG_NAME, _LOWER, _HEX_VALUE

cdef Py_ssize_t _span(bytes data, Py_ssize_t i, Py_ssize_t limit, bytes table) noexcept
cdef inline Py_ssize_t _value_span(bytes data, Py_ssize_t i, Py_ssize_t limit) noexcept
cdef tuple _single_token(bytes data, Py_ssize_t start, Py_ssize_t end)
cdef list _token_list(list tokens, tuple single_tokens)
cdef Py_ssize_t _skip_ows(bytes data, Py_ssize_t i, Py_ssize_t limit) noexcept
cdef Py_ssize_t _rstrip_ows(bytes data, Py_ssize_t start, Py_ssize_t end) noexcept
@cython.locals(k=Py_ssize_t)
cdef bint _ieq(bytes data, Py_ssize_t start, bytes lower, Py_ssize_t length) noexcept
@cython.locals(k=Py_ssize_t)
cdef bint _eq(bytes data, Py_ssize_t start, bytes literal, Py_ssize_t length) noexcept
@cython.locals(c=cython.uchar)
cdef int _fail(bytes data, Py_ssize_t i, Py_ssize_t limit, int status, str reason) except -1
cdef Py_ssize_t _line_end(bytes data, Py_ssize_t i, Py_ssize_t limit, int status, str reason) except -2
cdef object _incomplete(Py_ssize_t n, Py_ssize_t max_size, int status)
@cython.locals(i=Py_ssize_t, c=cython.uchar)
cdef Py_ssize_t _skip_empty_lines(bytes data, Py_ssize_t limit) except -2
@cython.locals(end=Py_ssize_t, k=Py_ssize_t, pos=Py_ssize_t, c=cython.uchar, ok=bint)
cdef int _http_version(bytes data, Py_ssize_t i, Py_ssize_t limit, int status, int unsupported_status, str reason) except -2
@cython.locals(end=Py_ssize_t, k=Py_ssize_t, c=cython.uchar, ok=bint, code=int)
cdef int _status_code(bytes data, Py_ssize_t limit) except -2
@cython.locals(c=cython.uchar, j=Py_ssize_t, k=Py_ssize_t)
cdef Py_ssize_t _field_name(bytes data, Py_ssize_t i, Py_ssize_t limit, int status) except -2
cdef int _field_kind(bytes data, Py_ssize_t start, Py_ssize_t length) noexcept
cdef bint _is_hop_by_hop(int kind) noexcept
cdef bint _is_protected(int kind) noexcept
cdef bint _has_htab(bytes data, Py_ssize_t start, Py_ssize_t end) noexcept
cdef bint _is_line_space(unsigned char c) noexcept
@cython.locals(acc=cython.longlong, d=cython.longlong, digits=int, i=Py_ssize_t)
cdef long long _content_length(bytes data, Py_ssize_t start, Py_ssize_t end, long long prev, int status) except -2
cdef bint _known_coding(bytes data, Py_ssize_t start, Py_ssize_t length) noexcept
@cython.locals(chunked=int, last_chunked=int, unknown=int, seen=bint, item=bint, i=Py_ssize_t,
               j=Py_ssize_t, k=Py_ssize_t, c=cython.uchar)
cdef int _transfer_codings(bytes data, Py_ssize_t start, Py_ssize_t end, int status) except -1
@cython.locals(count=int)
cdef int _merge_codings(int seen, int field) noexcept
@cython.locals(flags=int, i=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t, length=Py_ssize_t, c=cython.uchar)
cdef int _connection_tokens(bytes data, Py_ssize_t start, Py_ssize_t end, list tokens, int status) except -1
@cython.locals(h2c=bint, seen=bint, i=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t, name_end=Py_ssize_t, c=cython.uchar)
cdef int _upgrade_offers_h2c(bytes data, Py_ssize_t start, Py_ssize_t end, int status) except -1
@cython.locals(i=Py_ssize_t, colons=int, c=cython.uchar, port=long)
cdef int _authority(bytes data, Py_ssize_t start, Py_ssize_t end, bint need_port) noexcept
cdef int _check_host(bytes data, Py_ssize_t start, Py_ssize_t end) except -1
@cython.locals(i=Py_ssize_t)
cdef int _check_percent(bytes data, Py_ssize_t start, Py_ssize_t end) except -1
@cython.locals(n=Py_ssize_t)
cpdef bint valid_request_target(bytes target) except -1
@cython.locals(c=cython.uchar, result=int, i=Py_ssize_t, j=Py_ssize_t)
cdef bytes _request_target(bytes data, Py_ssize_t method_start, Py_ssize_t method_end,
                           Py_ssize_t start, Py_ssize_t end)
cdef bint _keep_alive(int version, int conn_flags) noexcept
cdef bytes _join_upgrade(bytes previous, bytes value)
@cython.locals(length=Py_ssize_t)
cdef bytes _known_method(bytes data, Py_ssize_t start, Py_ssize_t end)
cdef int _check_framing(int version, int te_flags, long long content_length, int status) except -1
@cython.locals(kind=int, name=bytes)
cdef bint _dropped(bytes raw, Py_ssize_t start, Py_ssize_t length, tuple drop, bint keep_upgrade) except -1
cdef int _check_extra_field(bytes name, bytes value) except -1
cdef Py_ssize_t _next_line(bytes raw, Py_ssize_t i, Py_ssize_t n) except -1
@cython.locals(raw=bytes, line=bytes, name=bytes, value=bytes, kind=int)
cdef int _collect_trailers(ChunkedScanner sc) except -1
cdef object _scanner_error(ChunkedScanner sc, str reason)
cdef object _line_byte_error(ChunkedScanner sc, unsigned char c, str reason)
@cython.locals(state=int, v=cython.uchar)
cdef int _size_line_byte(ChunkedScanner sc, unsigned char c) except -1
cdef int _ext_end_byte(ChunkedScanner sc, unsigned char c) except -1
cdef int _data_end_byte(ChunkedScanner sc, unsigned char c) except -1
@cython.locals(state=int)
cdef int _trailer_byte(ChunkedScanner sc, unsigned char c) except -1
