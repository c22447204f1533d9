# Typed declarations for accept.py: a connection's protocol from the accept to its hand-off, compiled
# (per connection, its attribute access and bytecode were a third of a new connection's cost).
from proxy.exchange.clock cimport now
from proxy.http.h1server cimport H1Server
from proxy.protocol.detect cimport Detector
from proxy.telemetry.counters cimport TcpStats

cdef int _NEED_MORE, _HTTP1, _H2, _TLS, _OPAQUE, _MAGIC_FIRST
cdef Detector _SPENT

cdef class Accepted:
    cdef public object stage
    cdef public object transport
    cdef public object meta
    cdef readonly Detector detector
    cdef public object timer
    cdef public bint done
    cdef public bint header_pending
    cdef public bint header_required
    cdef public bytes raw
    cdef public double first_byte_at
    cdef public object probe
    cdef public object probe_timer
    cdef public double opened_at
    cdef public bint queued
    cdef public object relay
    cdef public object relay_data

    cdef void _arm_deadlines(self) except *
    cdef void _drop_probe(self) except *
    cdef void _relay_to(self, object protocol) except *
    cdef bint _admit(self, bytes pending=*) except -1
    cdef object _read_header(self, bytes data)
    cdef void _refuse_header(self, str reason) except *
    cdef void _close_early(self) except *
    cdef TcpStats _src_stats(self)
    cdef void _count_closed(self, int err) except *
    cdef void _cancel(self) except *
    cdef void _hand_off(self, int kind, bytes buffered, bint eof, bint detected=*) except *

cdef class TlsAccepted(Accepted):
    cdef public object outer_meta
    cdef public bint started

    cdef void _relay_to(self, object protocol) except *
