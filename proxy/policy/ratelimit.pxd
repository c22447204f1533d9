# Typed declarations for ratelimit.py.
cimport cython

cdef class Gcra:
    cdef public double rate
    cdef public double interval
    cdef public double window
    cdef public double tat

cdef bint _admit(Gcra bucket, double now)

cdef class KeyedGcra:
    cdef public double rate
    cdef public double interval
    cdef public Py_ssize_t max_keys
    cdef public dict buckets
    cdef public long long evicted
    cpdef bint admit(self, object key, double now) except -1
    cdef void _make_room(self, double now) except *

cdef class LocalRateLimit:
    cdef public object spec
    cdef public Gcra total
    cdef public KeyedGcra identity
    cdef public dict overrides
    cpdef int check(self, object identity, double now) except -1
