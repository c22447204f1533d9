# Typed declarations for clock.py.

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
