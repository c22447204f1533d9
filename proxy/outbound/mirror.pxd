# Typed declarations for mirror.py: the core calls a copy's client end through DownEnd's vtable (a Python
# subclass costs a method lookup and a frame per call, seven calls per copy), and the module's functions are
# compiled (the route's decision and the tee run for every mirrored request). The hub and the counters are
# typed too: every copy reads and updates them (in flight, limits, counts), and a Python class's attributes
# are dictionary lookups.
from proxy.exchange.core cimport Exchange
from proxy.exchange.ends cimport DownEnd

cdef class MirrorCounters:
    cdef public str labels
    cdef public long long requests
    cdef public long long failures
    cdef public dict skipped
    cdef public double last_logged
    cdef public int errors_in_row
    cdef public double backoff
    cdef public double closed_until

cdef class MirrorHub:
    cdef public Py_ssize_t max_in_flight
    cdef public long long max_body
    cdef public Py_ssize_t label_limit
    cdef public Py_ssize_t in_flight
    cdef public object ctx
    cdef public object router
    cdef public dict counters
    cdef public object queue
    cdef public object timer
    cpdef void hold(self, MirrorTee tee) except *

# Made for every mirrored request: typed fields, no instance dict.
cdef class MirrorRule:
    cdef public MirrorHub hub
    cdef public list targets
    cdef public object random

cdef class MirrorTee:
    cdef public MirrorHub hub
    cdef public object head
    cdef public object headers
    cdef public long long length
    cdef public object meta
    cdef public list targets
    cdef public list body
    cdef public bint ended
    cdef public object req_trailers
    cdef public list copies
    cdef public Py_ssize_t size
    cdef public bint launched
    cdef public double due
    cpdef bint sent(self)

cdef class MirrorDown(DownEnd):
    cdef public MirrorHub hub
    cdef public MirrorCounters counters
    cdef public tuple address
    cdef public int status
    cdef public object error
    cdef public object skipped
