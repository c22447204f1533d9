# Typed declarations for h2state.py (Cython pure-Python mode).
# The public names (IDLE, RECV_DATA, TRANSITIONS, ...) stay Python objects;
# only the flat lookup array and lookup() are C-level, and h2conn cimports
# lookup() so a frame's state check is one C call and one array index.

cimport cython

cdef int _FLAT[128]                 # NUM_STATES * NUM_EVENTS
cdef int _NUM_STATES, _NUM_EVENTS, _OUT_OF_RANGE
cdef int _PROTOCOL_ERROR_CODE, _STREAM_CLOSED_CODE

cpdef int lookup(int state, int event) noexcept
cpdef int error_scope(int value) noexcept
cpdef int error_code(int value) noexcept
