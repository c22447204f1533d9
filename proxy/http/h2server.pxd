# Typed declarations for h2server.py.
cimport cython
from proxy.http.batch cimport batch_begin, batch_defer, batch_end
from proxy.http.convert cimport content_length, fields_from_h1_response, h2_response_fields, h2_trailers
from proxy.protocol.request cimport h2_request_line
from proxy.protocol.http1 cimport valid_request_target
from proxy.exchange.context cimport ExchangeContext
from proxy.exchange.ends cimport DownEnd
from proxy.telemetry.counters cimport TcpStats
from proxy.protocol.h2conn cimport (H2Connection, ConnectionTerminated, DataReceived, HeaderListTooLarge,
    RequestReceived, StreamReset, TrailersReceived, WindowUpdated)
from proxy.exchange.core cimport Exchange

@cython.locals(out=list, field=object, name=bytes, ours=bytes)
cdef list _client_id_headers(list headers, bytes client_id)
@cython.locals(name=bytes, value=bytes)
cdef bytes _path(list headers)
@cython.locals(authority=bytes, host=bytes, name=bytes, value=bytes)
cdef bint _authority_conflict(list headers) except -1

cdef long long _down_id(object ex) except? -1

cdef class H2Server(DownEnd):
    cdef public ExchangeContext ctx
    cdef public TcpStats tcp             # this connection's label set
    cdef public double opened_at         # now() when accepted
    cdef public object meta
    cdef public H2Connection conn
    cdef public object transport
    cdef public dict exchanges
    cdef public bint closed
    cdef public double idle_since
    cdef public bint in_flight
    cdef public bint draining
    cdef public bint writing_paused
    cdef public bint dirty
    cdef set reset_now
    cdef bint inbound
    cdef bytes client_id
    @cython.locals(ex=Exchange, req=RequestReceived, chunk=DataReceived, trailers=TrailersReceived,
                   sid=Py_ssize_t)
    cpdef void dispatch(self, object event) except *
    @cython.locals(ex=Exchange, path=bytes, length=cython.longlong)
    cdef void _request(self, Py_ssize_t sid, list headers, bint end_stream) except *
    cdef void _headers(self, Py_ssize_t sid, list fields, bint end) except *
    cpdef void flush(self) except *
    cpdef void write_out(self) except *
    cpdef void begin_drain(self) except *
    cpdef void close_if_drained(self) except *
    cpdef void close(self) except *
