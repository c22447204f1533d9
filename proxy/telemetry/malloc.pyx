# cython: language_level=3
"""glibc's ``malloc_trim``, called directly: loading ``ctypes`` to reach it would cost an idle proxy
about 0.3 MiB of its own (proxy/telemetry/memory.py falls back to ctypes when this is not built)."""

cdef extern from *:
    """
    #ifdef __GLIBC__
    #include <malloc.h>
    #define MESHPROXY_MALLOC_TRIM(pad) malloc_trim(pad)
    #define MESHPROXY_HAS_MALLOC_TRIM 1
    #else
    #define MESHPROXY_MALLOC_TRIM(pad) 0
    #define MESHPROXY_HAS_MALLOC_TRIM 0
    #endif
    """
    int MESHPROXY_MALLOC_TRIM(size_t pad) nogil
    int MESHPROXY_HAS_MALLOC_TRIM

AVAILABLE = bool(MESHPROXY_HAS_MALLOC_TRIM)


def malloc_trim(size_t pad):
    """Give free heap memory above ``pad`` bytes back to the kernel; 1 if any was released (0 without glibc)."""
    return MESHPROXY_MALLOC_TRIM(pad)
