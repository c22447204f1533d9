# Typed declarations for target.py.

cdef class Target:
    cdef readonly str host
    cdef readonly int port
    cdef readonly bint via_connect
    cdef readonly int mesh_port
    cdef readonly object identity      # str or None
    cdef readonly object protocol      # str or None
    cdef readonly object service       # the BalancedService that picked it, or None
    cdef readonly object endpoint      # that balancer's member, or None
    cdef public object stats           # outbound: this target's HttpStats, once resolved (proxy/telemetry/labels.py)
    cdef Py_hash_t _hash
