# Typed declarations for mirror.py: the core calls a copy's client end through DownEnd's vtable (a Python
# subclass costs a method lookup and a frame per call, seven calls per copy), and the module's functions are
# compiled (the route's decision and the tee run for every mirrored request).
from proxy.exchange.ends cimport DownEnd

cdef class MirrorDown(DownEnd):
    cdef public object hub
    cdef public object counters
    cdef public tuple address
    cdef public int status
    cdef public object error
    cdef public object skipped
