# Typed declarations for ends.py: the core calls the relays through these vtables.

cdef class DownEnd:
    # The connection's route cache: its last passthrough target, by Host and policy generation.
    cdef bytes route_host
    cdef object route_target
    cdef long long route_gen
    cpdef void send_informational(self, object ex, int status, object h1head, object fields) except *
    cpdef void send_head(self, object ex, int status, object h1head, object fields, long long length, bint end) except *
    cpdef Py_ssize_t send(self, object ex, bytes data) except -1
    cpdef void end_response(self, object ex, object trailers) except *
    cpdef void flush_response(self, object ex) except *
    cpdef void send_error(self, object ex, object err) except *
    cpdef void cut(self, object ex, object err) except *
    cpdef object tunnel(self, object ex, int status, object h1head, object transport, bytes rest)
    cpdef void release(self, object ex, Py_ssize_t credit) except *
    cpdef void exchange_done(self, object ex) except *

cdef class UpEnd:
    cpdef Py_ssize_t send(self, object ex, bytes data) except -1
    cpdef void end_request(self, object ex, object trailers) except *
    cpdef void release(self, object ex, Py_ssize_t credit) except *
    cpdef void cancel(self, object ex) except *

cdef class Dispatcher:
    cpdef void open(self, object ex, object target) except *
