# Typed declarations for h1bridge.py (Cython pure-Python mode).
# Every attribute is public: the HTTP/2 relay and the HTTP/1 relay drive these
# objects through the same duck-typed interface as their own exchanges.

cdef class H1ToH2:
    cdef public object conn
    cdef public object head
    cdef public object target
    cdef public object pool
    cdef public object router
    cdef public list headers
    cdef public bint end_in
    cdef public list to_up
    cdef public bint up_end_pending
    cdef public object trailers_up
    cdef public object client
    cdef public int up_sid
    cdef public bint resp_started
    cdef public bint done
    cdef public bint chunked_out
    cdef public double t_sent
    cdef public bint settled
    cdef public int retries
    cdef public bint body_sent
    cdef public long long owed
    cdef public bint paused
    cdef public object timer           # the attempt's response timeout, or None
    cdef public bytes head_out         # response head held for the first body bytes, or None
    cdef public bint dirty

cdef class H1Pool:
    cdef public object ctx
    cdef public dict idle
    cdef public Py_ssize_t max_idle

cdef class H1Upstream:
    cdef public H1Pool pool
    cdef public object target
    cdef public object conn
    cdef public dict exchanges
    cdef public object transport
    cdef public object ex
    cdef public object buf
    cdef public object head
    cdef public int kind
    cdef public long long remaining
    cdef public object scanner
    cdef public bint chunked_req
    cdef public bint got_bytes
    cdef public bint reused
    cdef public bint closed
