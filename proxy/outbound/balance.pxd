# Typed declarations for balance.py: each balanced request runs route() and settle() (with the balancer's
# pick and complete) as C calls, not interpreted bytecode; the fields are typed slots, no instance dict.
cimport cython

from proxy.core.target cimport Target
from proxy.exchange.clock cimport now
from proxy.outbound.balancer cimport Balancer, Endpoint
from proxy.exchange.ends cimport Picker

cdef long long NS
cdef int AVOID_TRIES
cdef int _OK, _CANCELLED

cdef long long _monotonic_ns() except? -1

cdef class BalancedService(Picker):
    cdef public object loop
    cdef public object name
    cdef public object settings
    cdef public double queue_timeout
    cdef public Balancer balancer
    cdef public object policy_accrual
    cdef public object observer
    cdef public object waiters
    cdef public object timer
    cdef public double last_used
    cdef public object watch
    cdef public dict targets
    cdef public dict labels
    cdef public object unsubscribe

    @cython.locals(t=cython.longlong, member=Endpoint, again=Endpoint, tries=int)
    cpdef object route(self, object conn, object avoid=*)
    @cython.locals(member=Endpoint)
    cpdef void settle(self, Target target, double rtt, int outcome) except *
