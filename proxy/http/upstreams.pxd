# Typed declarations for upstreams.py.
cimport cython
from proxy.exchange.core cimport Exchange
from proxy.telemetry.counters cimport TcpStats
from proxy.exchange.ends cimport Dispatcher
from proxy.http.h1client cimport H1Pool
from proxy.http.convert cimport h1_request, h2_request
from proxy.core.target cimport Target
from proxy.protocol.request cimport RequestLine

cdef class Upstreams(Dispatcher):
    cdef public object loop
    cdef public bint inbound
    cdef public object connector
    cdef public TcpStats tcp
    cdef public object labels
    cdef public object limits
    cdef public H1Pool h1
    cdef object _h2
    cpdef object h2(self)
    @cython.locals(head=RequestLine)
    cdef void _open(self, Exchange ex, Target target) except *
    cdef void _h1(self, Exchange ex, object target, bint pooled) except *
    cpdef void _fallback(self, Exchange ex, object target) except *
    cpdef void sweep(self, double now) except *
    cpdef void drain(self) except *
    cpdef void close_all(self) except *
    cpdef Py_ssize_t idle_count(self) except -1
