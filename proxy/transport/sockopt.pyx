# cython: language_level=3
"""Socket options read straight from a file descriptor: ``getsockopt`` for SO_ORIGINAL_DST.

uvloop hands out a pseudo-socket whose ``getsockopt`` builds a Python socket
object on every call (about 4.7 us, per accepted connection); the one option
the proxy reads per connection is read here with one system call instead, and
decoded here too.
"""

from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport strlen


cdef extern from "sys/socket.h":
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen) nogil
    int AF_INET
    int AF_INET6

cdef extern from "netinet/in.h":
    struct in_addr:
        pass
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    int IPPROTO_IP
    int IPPROTO_IPV6
    unsigned short ntohs(unsigned short)

cdef extern from "arpa/inet.h":
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

# linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h
cdef int SO_ORIGINAL_DST = 80
cdef int IP6T_SO_ORIGINAL_DST = 80


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


cdef object _addr(sockaddr_storage *sa):
    """(host, port) as Python's socket module gives them (``inet_ntop``); None for another family."""
    cdef char text[64]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if sa.ss_family == AF_INET:
        v4 = <sockaddr_in *>sa
        if inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text)) == NULL:
            return None
        return (PyUnicode_DecodeASCII(text, strlen(text), NULL), ntohs(v4.sin_port))
    if sa.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>sa
        if inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text)) == NULL:
            return None
        return (PyUnicode_DecodeASCII(text, strlen(text), NULL), ntohs(v6.sin6_port))
    return None


def original_destination(int fd, bint v6):
    """``SO_ORIGINAL_DST`` of an accepted TCP socket as ``(host, port)``; None when the kernel has none.

    ``v6``: the socket is IPv6 (asked first there; a dual-stack socket's IPv4 connections are in the
    IPv4 conntrack table, asked next).
    """
    cdef sockaddr_storage dst
    cdef socklen_t n = sizeof(dst)
    if v6 and getsockopt(fd, IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &n) == 0:
        return _addr(&dst)
    n = sizeof(dst)
    if getsockopt(fd, IPPROTO_IP, SO_ORIGINAL_DST, &dst, &n) == 0:
        return _addr(&dst)
    return None
