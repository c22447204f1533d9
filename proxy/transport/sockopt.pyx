# cython: language_level=3
"""Socket facts read straight from a file descriptor: ``getsockopt`` for SO_ORIGINAL_DST, and an
accepted connection's addresses.

uvloop hands out a pseudo-socket whose ``getsockopt``, ``getpeername`` and ``getsockname`` each
build a Python socket object (about 4.7 us each, per accepted connection); what the proxy reads
per connection is read here with one system call each instead.
"""

from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcmp, strlen


cdef extern from "sys/socket.h":
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen) nogil
    int getpeername(int fd, sockaddr *addr, socklen_t *addrlen) nogil
    int getsockname(int fd, sockaddr *addr, socklen_t *addrlen) nogil
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
cdef unsigned char V4_MAPPED[12]
V4_MAPPED[:] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]


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


cdef bint _same(sockaddr_storage *a, sockaddr_storage *b):
    """Whether two addresses are one, an IPv4 one and its IPv4-mapped IPv6 form alike."""
    cdef const unsigned char *x
    cdef const unsigned char *y
    cdef unsigned short px, py
    if a.ss_family == AF_INET:
        x = <const unsigned char *>&(<sockaddr_in *>a).sin_addr
        px = (<sockaddr_in *>a).sin_port
    elif a.ss_family == AF_INET6:
        x = (<sockaddr_in6 *>a).sin6_addr.s6_addr
        px = (<sockaddr_in6 *>a).sin6_port
        if memcmp(x, V4_MAPPED, 12) == 0:
            x += 12
    else:
        return False
    if b.ss_family == AF_INET:
        y = <const unsigned char *>&(<sockaddr_in *>b).sin_addr
        py = (<sockaddr_in *>b).sin_port
    elif b.ss_family == AF_INET6:
        y = (<sockaddr_in6 *>b).sin6_addr.s6_addr
        py = (<sockaddr_in6 *>b).sin6_port
        if memcmp(y, V4_MAPPED, 12) == 0:
            y += 12
    else:
        return False
    if px != py:
        return False
    # Both 4 bytes (IPv4 or mapped), or both 16: the pointer moved by 12 for a mapped one.
    cdef bint short_x = a.ss_family == AF_INET or x != (<sockaddr_in6 *>a).sin6_addr.s6_addr
    cdef bint short_y = b.ss_family == AF_INET or y != (<sockaddr_in6 *>b).sin6_addr.s6_addr
    if short_x != short_y:
        return False
    return memcmp(x, y, 4 if short_x else 16) == 0


def accepted_addresses(int fd, bint ask_local):
    """An accepted TCP connection's (client, local, original destination), each ``(host, port)``.

    ``ask_local`` False: the listener is bound to one address, which the caller has (``local`` is then
    None here, and the original destination is compared with it by the caller). The original
    destination is None when the connection was not redirected (``SO_ORIGINAL_DST`` refused, or
    naming the local address itself). None as a whole when the socket is gone or its family is not
    IP, or an IPv6 address has a scope (the caller then asks the slow way).
    """
    cdef sockaddr_storage peer, local, dst
    cdef socklen_t n = sizeof(peer)
    if getpeername(fd, <sockaddr *>&peer, &n) != 0:
        return None
    if peer.ss_family == AF_INET6 and (<sockaddr_in6 *>&peer).sin6_scope_id != 0:
        return None
    client = _addr(&peer)
    if client is None:
        return None
    here = None
    if ask_local:
        n = sizeof(local)
        if getsockname(fd, <sockaddr *>&local, &n) != 0:
            return None
        if local.ss_family == AF_INET6 and (<sockaddr_in6 *>&local).sin6_scope_id != 0:
            return None
        here = _addr(&local)
        if here is None:
            return None
    # The listening socket's family: a dual-stack IPv6 listener's IPv4 clients are mapped addresses,
    # tracked by the IPv4 conntrack table.
    n = sizeof(dst)
    ok = False
    if peer.ss_family == AF_INET6:
        ok = getsockopt(fd, IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &n) == 0
        if not ok:
            n = sizeof(dst)
    if not ok:
        ok = getsockopt(fd, IPPROTO_IP, SO_ORIGINAL_DST, &dst, &n) == 0
    if not ok:
        return (client, here, None)
    if ask_local and _same(&dst, &local):
        return (client, here, None)  # addressed to the listener itself
    return (client, here, _addr(&dst))
