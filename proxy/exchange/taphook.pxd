# Declarations for taphook.py: the tap's base classes, cimported by the core and by the tap.

cdef class TapHook:
    cpdef TapEvents observe(self, object ex)

cdef class TapEvents:
    cpdef void response_init(self, int status, object h1head, object fields)
    cpdef void end(self, object trailers)
    cpdef void reset(self, int code)
    cpdef void add_bytes(self, long long n)
