# Typed declarations for mirror.py: the core calls a copy's client end through DownEnd's vtable (a Python
# subclass costs a method lookup and a frame per call, seven calls per copy), and the module's functions are
# compiled (the route's decision and the tee run for every mirrored request).
from proxy.exchange.core cimport Exchange
from proxy.exchange.ends cimport DownEnd

# Made for every mirrored request: typed fields, no instance dict.
cdef class MirrorRule:
    cdef public object hub
    cdef public list targets
    cdef public object random

cdef class MirrorTee:
    cdef public object hub
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

cdef class MirrorDown(DownEnd):
    cdef public object hub
    cdef public object counters
    cdef public tuple address
    cdef public int status
    cdef public object error
    cdef public object skipped
