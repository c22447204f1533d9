# Typed declarations for batch.py.
cdef int _depth
cdef list _dirty
cdef bint _tick

cpdef void batch_begin()
cpdef bint batch_defer(object conn) except -1
cpdef void batch_end() except *
cpdef void batch_end_at_tick(object loop) except *
cpdef void _tick_done() except *
cdef void _write_dirty() except *
