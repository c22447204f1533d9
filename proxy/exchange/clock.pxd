# Typed declarations for clock.py.

cdef object _source
cpdef double now() except? -1.0

cdef class RouteClock:
    cdef object loop
    cdef object expired
    cdef double timeout
    cdef double idle
    cdef double last_io
    cdef object timer
    cdef object idle_timer
    cpdef void touch(self)
    cpdef void stop(self)
