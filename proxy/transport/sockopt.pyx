# cython: language_level=3
"""Socket options read straight from a file descriptor: ``getsockopt`` for SO_ORIGINAL_DST.

uvloop hands out a pseudo-socket whose ``getsockopt`` builds a Python socket
object on every call (about 4.7 us, per accepted connection); the one option
the proxy reads per connection is read here with one system call instead.
"""

cdef extern from "sys/socket.h":
    ctypedef unsigned int socklen_t
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen) nogil


def getsockopt_bytes(int fd, int level, int optname, int size):
    """The option's raw value (at most ``size`` <= 128 bytes), or None when the kernel refuses."""
    cdef unsigned char buf[128]
    cdef socklen_t n
    if size <= 0 or size > 128:
        raise ValueError("size must be 1-128")
    n = size
    if getsockopt(fd, level, optname, buf, &n) != 0:
        return None
    return bytes(buf[:n])
