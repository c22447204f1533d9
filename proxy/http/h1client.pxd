# Typed declarations for h1client.py.
cimport cython
from proxy.exchange.clock cimport now
from proxy.http.batch cimport batch_begin, batch_end_at_tick
from proxy.protocol.http1 cimport bytes_range, parse_response_head
from proxy.exchange.core cimport Exchange
from proxy.telemetry.counters cimport TcpStats
from proxy.exchange.ends cimport UpEnd
from proxy.protocol.http1 cimport ChunkedScanner, ResponseHead
from proxy.core.target cimport Target

cdef int BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE
cdef int C_CONNECTING, C_IDLE, C_WAIT_HEAD, C_BODY, C_DONE

cdef class H1Client(UpEnd)

@cython.final
cdef class IdleStack:
    cdef list slots                        # [0, count) idle connections; the rest None, kept allocated
    cdef public Py_ssize_t count
    cpdef void push(self, H1Client conn) except *
    cpdef H1Client pop(self)
    cpdef bint remove(self, H1Client conn) except -1
    cpdef list conns(self)

cdef class H1Pool:
    cdef public object loop
    cdef public object connector
    cdef public TcpStats tcp               # the direction's own label set
    cdef public object labels              # LabelSets: a connection's own, by target (None: tcp)
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t write_high
    cdef public dict idle
    cdef public Py_ssize_t max_idle
    cdef public double idle_timeout
    cdef public Py_ssize_t idle_count
    cdef public bint draining
    cpdef void open(self, Exchange ex, object target, bint pooled) except *
    cpdef void release(self, H1Client conn) except *
    cpdef void forget(self, H1Client conn) except *
    cpdef void sweep(self, double now) except *
    cpdef void close_all(self) except *

cdef class H1Client(UpEnd):
    cdef public H1Pool pool
    cdef public Target target
    cdef public bint pooled
    cdef public TcpStats tcp
    cdef public double opened_at
    cdef public object transport
    cdef object transport_write           # transport.write, bound once
    cdef public Exchange ex
    cdef public Exchange pending
    cdef bytes buf
    cdef ResponseHead head
    cdef int kind
    cdef long long remaining
    cdef ChunkedScanner scanner
    cdef public int state
    cdef bint head_request
    cdef bint req_keeps
    cdef bint chunked_req
    cdef bint got_bytes
    cdef public bint reused
    cdef bint reusable
    cdef public double idle_since
    cdef bint reading_paused
    cdef bint writing_paused
    cdef bint credit_paused
    cdef Py_ssize_t unreleased
    cdef public bint dirty
    cpdef void set_reading(self, bint on) except *
    cpdef void attach(self, Exchange ex) except *
    @cython.locals(parsed=object, head=ResponseHead)
    cdef void on_head(self) except *
    cdef void on_body(self, Py_ssize_t start) except *
    cdef Exchange detach(self, bint clean)
    cdef void _bad(self, str reason) except *
    cdef void write(self, bytes data) except *
    cpdef void write_out(self) except *
    cpdef void abort(self) except *
