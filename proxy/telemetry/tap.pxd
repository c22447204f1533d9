# Declarations for tap.py: compiled because, while a tap is open, every
# request is matched here and each tapped one encodes three events.

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.ref cimport Py_REFCNT
from libc.string cimport memcpy

from proxy.exchange.clock cimport now
from proxy.exchange.core cimport Exchange
from proxy.exchange.taphook cimport TapEvents, TapHook
from proxy.protocol.request cimport RequestLine

cdef class TapRecord

cdef dict _ADDRESSES
cdef int _CACHE_LIMIT
cdef int _SPARE_RECORDS
cdef unsigned long long _HIGH_BITS
cdef tuple _METHOD_NAMES
cdef tuple _METHOD_FIELDS

# The field encoders (_vsize, _w_varint, _w_bytes, _string_size, _w_string, _nanos, _duration_size,
# _w_duration) and a record's event parts (_init_rest, _w_init, _resp_rest, _w_resp, _event_size, _w_head) are
# declared in tap.py itself: inline C functions, which a .pxd cannot declare.
cdef bytes _utf8(bytes data)
cdef object _scheme_of(Exchange ex)
cdef bytes _scheme_field(Exchange ex)
cdef bytes _HTTP_SCHEME
cdef bytes _HTTPS_SCHEME
cpdef TapRecord new_record(TapSession session, long long stream, bytes base, double t0, bytes route=*)
cdef bytes _method_field(bytes method)
cdef bytes _path(bytes target)

cdef class TapView:
    cdef public object src_host
    cdef public int src_port
    cdef public object dst_host
    cdef public int dst_port
    cdef public object dst_labels
    cdef public object route_labels
    cdef public object scheme
    cdef public str method
    cdef public object authority
    cdef public str path

cdef class Match:
    cpdef bint matches(self, TapView view)

cdef class MatchAll(Match):
    cdef public list items
    cpdef bint matches(self, TapView view)

cdef class MatchAny(Match):
    cdef public list items
    cpdef bint matches(self, TapView view)

cdef class MatchNot(Match):
    cdef public Match inner
    cpdef bint matches(self, TapView view)

cdef class MatchTcp(Match):
    cdef public bint destination
    cdef public object network
    cdef public int lo
    cdef public int hi
    cpdef bint matches(self, TapView view)

cdef class MatchLabel(Match):
    cdef public bint route
    cdef public str key
    cdef public str value
    cpdef bint matches(self, TapView view)

cdef class MatchScheme(Match):
    cdef public str scheme
    cpdef bint matches(self, TapView view)

cdef class MatchMethod(Match):
    cdef public str method
    cpdef bint matches(self, TapView view)

cdef class MatchString(Match):
    cdef public int field
    cdef public object exact
    cdef public str prefix
    cpdef bint matches(self, TapView view)

@cython.final
cdef class TapSession:
    cdef public TapHub hub
    cdef public Match match
    cdef public bint match_all
    cdef public bytes id_prefix
    cdef public long long limit
    cdef public bint extract_headers
    cdef public unsigned int base_id
    cdef public Py_ssize_t buffer_bytes
    cdef public long long count
    cdef public long long open
    cdef public bint closed
    cdef public bytearray buf
    cdef public Py_ssize_t used
    cdef public long long events
    cdef public long long dropped
    cdef public TapRecord pending
    cdef public TapRecord spare
    cdef public int spares
    cpdef Py_ssize_t reserve(self, Py_ssize_t n) except -2
    cdef Py_ssize_t room(self, Py_ssize_t n) except -2
    cpdef void flush_pending(self)
    cdef void _grow(self, Py_ssize_t need)
    cpdef bytes take(self)
    cpdef list take_chunks(self, Py_ssize_t size)
    cpdef void request_ended(self) noexcept

cdef class TapHub(TapHook):
    cdef public dict own
    cdef public list contexts
    cdef public list sessions
    cdef public tuple active
    cdef public long long live
    cdef public unsigned int next_base
    cdef public long long events
    cdef public long long dropped
    cdef public long long opened
    cdef dict _bases
    cdef dict _routes
    cdef tuple _last
    cdef object _method_in
    cdef bytes _method_out
    cdef object _host_in
    cdef bytes _host_out
    cdef public long long generation
    cdef void _unlist(self, TapSession session)
    cdef void _publish(self)
    cdef TapView _view(self, Exchange ex)
    cdef bytes _base(self, Exchange ex)
    cdef bytes _route(self, Exchange ex)
    cdef bytes _connection_base(self, Exchange ex, object target)
    cpdef TapEvents observe(self, object ex)

# A record refers to its session, bytes and the next record; the session refers to records only while they
# hold events back (``pending``, linked both ways, until they end or its next take) and to ended records kept
# for reuse (``spare``, chained through their ``pending_next``), all let go when it closes: no cycle left for
# the collector to find, and none to track per tapped request.
@cython.no_gc
cdef class TapRecord(TapEvents):
    cdef public TapSession session
    cdef public bytes base
    cdef public bytes route
    cdef public Py_ssize_t lead
    cdef public Py_ssize_t id_size
    cdef public long long stream
    cdef public double t0
    cdef public double t_response
    cdef public long long nbytes
    cdef public long long grpc_status
    cdef public TapRecord next
    cdef public bint ended
    # Held back until the request ends or the session's next take (bits of ``held``: 1 request_init,
    # 2 response_init), with what they need: the request's encoded fields, the response's status and headers.
    cdef public int held
    cdef public bint listed
    cdef public TapRecord pending_next
    cdef public TapRecord pending_prev
    cdef bytes q_method
    cdef bytes q_scheme
    cdef bytes q_host
    cdef bytes q_path
    cdef bytes q_headers
    cdef int r_status
    cdef bytes r_headers
    cdef void request_init(self, Exchange ex)
    cdef void _hold(self)
    cpdef void response_init(self, int status, object h1head, object fields)
    cdef void _response_init(self, double t, int status, object h1head, object fields)
    cdef void _write_held(self)
    cpdef void end(self, object trailers)
    cpdef void reset(self, int code)
    cdef void _end(self, double t, int eos_field, unsigned long long eos_value, object trailers)
    cpdef void add_bytes(self, long long n)
    cdef Py_ssize_t _open(self, unsigned char kind, Py_ssize_t rest) except -2

