# Typed declarations for ends.py: the core calls the relays (and the balancer) through these vtables.
from proxy.core.target cimport Target

cdef class Picker:
    cdef public bint closed                # the service stopped (discovery no longer feeds it)
    cpdef object route(self, object conn, object avoid=*)
    cpdef void settle(self, Target target, double rtt, int outcome) except *

cdef class DownEnd:
    # The connection's route cache, by Host and policy generation: its last passthrough target, or the
    # balanced service its last request was picked from (route_target None then).
    cdef bytes route_host
    cdef object route_target
    cdef Picker route_service
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
