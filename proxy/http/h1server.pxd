# Typed declarations for h1server.py.
from proxy.exchange.clock cimport now
from proxy.http.batch cimport batch_begin, batch_end_at_tick
from proxy.http.convert cimport h1_response_from_fields, phrase, trailer_lines
from proxy.protocol.http1 cimport bytes_range, parse_request_head, rewrite_head
from proxy.exchange.context cimport ExchangeContext
from proxy.exchange.core cimport Exchange, spare_exchange, take_exchange, unbind_exchange
from proxy.exchange.ends cimport DownEnd
from proxy.telemetry.counters cimport TcpStats
from proxy.protocol.http1 cimport ChunkedScanner, RequestHead, ResponseHead

cdef int REQ_NONE, REQ_LENGTH, REQ_CHUNKED
cdef int OUT_NONE, OUT_RAW, OUT_CHUNKED
cdef int PAUSE_BODY, PAUSE_PIPELINE
cdef bytes _status_line(ResponseHead rh)

cdef class H1Server(DownEnd):
    cdef public ExchangeContext ctx
    cdef public object meta
    cdef public TcpStats tcp             # this connection's label set
    cdef public double opened_at         # now() when accepted
    cdef public object transport
    cdef object transport_write           # transport.write, bound once
    cdef bytes buf
    cdef public Exchange ex
    cdef RequestHead head
    cdef public bint in_flight
    cdef int req_kind
    cdef long long req_remaining
    cdef ChunkedScanner req_scanner
    cdef public bint req_done
    cdef Py_ssize_t req_unreleased
    cdef int out
    cdef bytes pending_head
    cdef public bint close_after
    cdef bint client_eof
    cdef int paused
    cdef bint reading_paused
    cdef public bint writing_paused
    cdef bint advancing
    cdef public double idle_since
    cdef public bint closed
    cdef public bint closing
    cdef bint handed_off
    cdef object header_timer
    cdef double head_started
    cdef bint discarding
    cdef object discard_timer
    cdef public bint dirty
    cdef void advance(self) except *
    cdef void begin(self, RequestHead head) except *
    cdef void forward_body(self) except *
    cdef bint _discard(self) except -1
    cdef void _reject(self, object err) except *
    cdef void _arm_header_timer(self) except *
    cdef void _stop_header_timer(self) except *
    cpdef void write(self, bytes data) except *
    cdef void pause(self, int reason) except *
    cdef void resume(self, int reason) except *
    cpdef void begin_drain(self) except *
    cpdef void idle(self) except *
    cpdef void close(self) except *
