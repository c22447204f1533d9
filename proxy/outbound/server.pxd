# Typed declarations for server.py: the router's per-request decision (route, its Host cache, the policy
# stage) runs as compiled code with typed slots, not interpreted bytecode.
cimport cython

from proxy.core.target cimport Target
from proxy.protocol.request cimport RequestLine

cdef class HostDecision:
    cdef readonly Target target
    cdef readonly object runtime           # the policy's ServiceRuntime, or None
    cdef readonly object service           # discovery's BalancedService, or None


cdef class OutboundRouter:
    cdef public object own
    cdef public object loop
    cdef public object resolver
    cdef public object settings
    cdef public object policy
    cdef public dict _authorities
    cdef public dict _orig
    cdef public dict _concrete
    cdef public dict services
    cdef public dict _hosts
    cdef public object egress

    @cython.locals(decision=HostDecision, target=Target)
    cpdef object route(self, RequestLine head, object meta, object conn=*)
    @cython.locals(target=Target)
    cdef HostDecision _decide(self, bytes host)
    # Called per request from route(): C calls, not Python method lookups.
    cpdef object _policy_route(self, object runtime, object head, object conn, Target logical)
    @cython.locals(target=Target)
    cpdef Target _concrete_target(self, tuple address)
    cpdef object _endpoint(self, Target target, object conn)
    cpdef object _service(self, Target target)
