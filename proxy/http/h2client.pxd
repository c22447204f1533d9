# Typed declarations for h2client.py.
cimport cython
from proxy.http.batch cimport batch_begin, batch_defer, batch_end
from proxy.http.convert cimport content_length, h2_trailers
from proxy.exchange.core cimport Exchange
from proxy.telemetry.counters cimport TcpStats
from proxy.exchange.ends cimport UpEnd
from proxy.exchange.clock cimport now
from proxy.protocol.h2conn cimport (H2Connection, ConnectionTerminated, DataReceived,
    InformationalResponseReceived, ResponseReceived, StreamReset, TrailersReceived, WindowUpdated,
    HeaderListTooLarge)

cdef class H2Client(UpEnd)

cdef long long _up_id(object ex) except? -1

cdef class H2Pool:
    cdef public object loop
    cdef public object connector
    cdef public TcpStats tcp               # the direction's own label set
    cdef public object labels              # LabelSets: a connection's own, by target (None: tcp)
    cdef public object settings
    cdef public Py_ssize_t max_per_target
    cdef public dict conns
    cdef public dict learned               # (host, port) -> (HTTP/1 only, until) (bounded by LEARNED_MAX)
    cdef Py_ssize_t http1_learned          # how many of them say HTTP/1 only
    cdef public object fallback            # (exchange, target): the attempt goes over HTTP/1 instead
    cdef public double probe_timeout       # seconds for a probed server's first bytes
    cdef public double idle_timeout        # a connection with no stream this long closes (0: never)
    cpdef bint speaks_http1(self, object target) except -1
    cpdef bint knows(self, object target) except -1
    @cython.locals(found=tuple)
    cpdef void learn(self, object target, bint http1) except *
    cpdef void open(self, Exchange ex, object target) except *
    cpdef void open_elsewhere(self, H2Client full, Exchange ex) except *
    cdef H2Client _new(self, object target)
    cpdef void forget(self, H2Client client) except *

cdef class H2Client(UpEnd):
    cdef public H2Pool pool
    cdef public object target
    cdef public TcpStats tcp
    cdef public double opened_at
    cdef public H2Connection conn
    cdef public object transport
    cdef public dict exchanges
    cdef public list waiting
    cdef list heads
    cdef public bint connected
    cdef public bint dead
    cdef public bint dirty
    cdef public bint probing               # requests held until the server's first bytes
    cdef public double idle_since          # when its last stream ended (or it connected)
    cdef object probe_timer
    cdef Py_ssize_t too_large              # the stream whose response head was over the limit (0: none)
    cdef object broke                      # why we closed the connection on the upstream (None: we did not)
    cdef long long goaway_last             # the last stream id of the upstream's GOAWAY (-1: none came)
    cdef unsigned int goaway_code
    cdef void _open_waiting(self) except *
    cdef bint _probed(self, bytes data) except -1
    cpdef bint can_open(self) except -1
    cpdef void open(self, Exchange ex) except *
    @cython.locals(ex=Exchange, head=ResponseReceived, chunk=DataReceived, info=InformationalResponseReceived,
                   trailers=TrailersReceived, reset=StreamReset, sid=Py_ssize_t, end=bint, code=cython.uint,
                   terminated=ConnectionTerminated)
    cpdef void dispatch(self, object event) except *
    cpdef void flush(self) except *
    cpdef void write_out(self) except *
    cpdef void close_idle(self) except *
