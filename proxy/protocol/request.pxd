# Typed declarations for request.py.

cdef class RequestLine:
    cdef readonly bytes method
    cdef readonly bytes target            # origin-form path, absolute URI, or the authority of a CONNECT
    cdef readonly bytes host              # Host (HTTP/1) or :authority (HTTP/2), or None
    cdef readonly bytes dst_override      # l5d-dst-override, or None
    cdef readonly int version             # 10, 11 (HTTP/1) or 20 (HTTP/2)
    cdef readonly bytes upgrade           # an HTTP/1 Upgrade the request asks for, or None
    cdef readonly bint trace_context      # has a traceparent, grpc-trace-bin, x-b3-spanid or b3 field

cpdef RequestLine h2_request_line(list headers)
