# Declarations for tap.py: compiled because, while a tap is open, every
# request is matched here and each tapped one encodes three events.

from proxy.exchange.clock cimport now

cdef dict _ADDRESSES
cdef int _CACHE_LIMIT

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

cdef class TapSession:
    cdef public TapHub hub
    cdef public Match match
    cdef public long long limit
    cdef public bint extract_headers
    cdef public unsigned int base_id
    cdef public Py_ssize_t buffer_bytes
    cdef public object wake
    cdef public long long count
    cdef public long long open
    cdef public bint closed
    cdef public list frames
    cdef public Py_ssize_t buffered
    cdef public bint wake_pending
    cdef public long long events
    cdef public long long dropped
    cpdef void emit(self, bytes frame)
    cdef void _poke(self)
    cpdef void request_ended(self)

cdef class TapHub:
    cdef public list contexts
    cdef public list sessions
    cdef public long long live
    cdef public unsigned int next_base
    cdef public long long events
    cdef public long long dropped
    cdef public long long opened
    cdef dict _sources
    cdef dict _destinations
    cdef void _unlist(self, TapSession session)
    cdef void _publish(self)
    cdef TapView _view(self, object ex)
    cdef bytes _base(self, object ex)

cdef class TapRecord:
    cdef public TapSession session
    cdef public bytes id
    cdef public bytes base
    cdef public double t0
    cdef public double t_response
    cdef public long long nbytes
    cdef public long long grpc_status
    cdef public TapRecord next
    cdef public bint ended
    cdef void _response_init(self, double t, int status, object h1head, object fields)
    cdef void _end(self, double t, bytes eos, object trailers)
    cdef void _emit(self, int kind, bytes body)
