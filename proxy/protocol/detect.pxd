# Typed declarations for detect.py (Cython pure-Python mode).
# The .py holds all logic; this file only adds C types so byte loops compile
# to plain C. Public results stay Python ints in the .py; the underscored C
# twins below are what the loops compare against.

cimport cython

cdef int _NEED_MORE, _MATCH, _NO_MATCH
cdef int _HTTP1, _H2, _TLS, _OPAQUE
cdef Py_ssize_t _DEFAULT_MAX
cdef bytes _H2_PREFACE, _HTTP_VERSION, _HTTP_WORD, _LINE_TEXT
cdef int _CONTENT_HANDSHAKE, _HANDSHAKE_CLIENT_HELLO
cdef int _EXT_SERVER_NAME, _EXT_ALPN, _NAME_TYPE_HOST
cdef Py_ssize_t _MAX_RECORD, _MIN_HELLO_BODY, _MAX_HOST_NAME


cdef class ClientHello:
    cdef readonly object sni            # lower-cased host name, or None
    cdef readonly tuple alpn            # protocol names in the client's order
    cdef readonly int legacy_version    # e.g. 0x0303


cdef class Detector:
    cdef readonly Py_ssize_t max_size
    cdef readonly bytes buffered
    cdef readonly object client_hello   # ClientHello once TLS is detected
    cdef int _result
    cpdef int feed(self, bytes data) except -1


cdef bint _is_tchar(unsigned char c) noexcept
cdef bint _is_host_char(unsigned char c) noexcept
cdef Py_ssize_t _u16(bytes buf, Py_ssize_t p) noexcept

@cython.locals(n=Py_ssize_t, limit=Py_ssize_t, i=Py_ssize_t, skipped=int,
               start=Py_ssize_t, k=int, c=cython.uchar)
cpdef int is_http1(bytes data, Py_ssize_t max_line=*) except -1

@cython.locals(n=Py_ssize_t, i=Py_ssize_t)
cpdef int is_h2_preface(bytes data) except -1

@cython.locals(m=Py_ssize_t, k=Py_ssize_t, c=cython.uchar)
cdef int _method_then_space(bytes data, Py_ssize_t i, Py_ssize_t limit, bytes method) noexcept

@cython.locals(c=cython.uchar, status=int)
cdef int _standard_method(bytes data, Py_ssize_t i, Py_ssize_t limit) noexcept

@cython.locals(n=Py_ssize_t, limit=Py_ssize_t, i=Py_ssize_t, words=Py_ssize_t, in_word=bint,
               k=Py_ssize_t, c=cython.uchar, lc=cython.uchar, first=cython.uchar)
cpdef int looks_like_http1(bytes data, Py_ssize_t max_size=*) except -1

@cython.locals(status=int, n=Py_ssize_t, i=Py_ssize_t, c=cython.uchar)
cpdef bint could_be_http1(bytes data, Py_ssize_t max_size=*) except -1

@cython.locals(pos=Py_ssize_t)
cdef int _record_header(bytes data, Py_ssize_t pos, Py_ssize_t n) noexcept

@cython.locals(size=Py_ssize_t, found=bint, name_type=cython.uchar, q=Py_ssize_t)
cdef int _server_name(bytes buf, Py_ssize_t p, Py_ssize_t end, ClientHello out) except -1

@cython.locals(size=Py_ssize_t, names=list)
cdef int _alpn(bytes buf, Py_ssize_t p, Py_ssize_t end, ClientHello out) except -1

@cython.locals(version=int, size=Py_ssize_t, first=Py_ssize_t, seen=cython.ulonglong,
               bit=cython.ulonglong, ext=Py_ssize_t, body=Py_ssize_t, q=Py_ssize_t,
               status=int)
cdef int _hello_body(bytes buf, Py_ssize_t p, Py_ssize_t avail, Py_ssize_t end,
                     ClientHello out) except -1

@cython.locals(parts=list, total=Py_ssize_t, need=Py_ssize_t, pos=Py_ssize_t,
               complete=bint, stream=bytes, status=int, length=Py_ssize_t,
               start=Py_ssize_t, want=Py_ssize_t, have=Py_ssize_t, body=Py_ssize_t)
cdef int _hello_fragmented(bytes data, Py_ssize_t n, Py_ssize_t max_size,
                           ClientHello out) except -1

@cython.locals(n=Py_ssize_t, status=int, length=Py_ssize_t, body=Py_ssize_t, end=Py_ssize_t)
cdef int _hello(bytes data, Py_ssize_t max_size, ClientHello out) except -1

@cython.locals(status=int, hello=ClientHello)
cpdef object peek_client_hello(bytes data, Py_ssize_t max_size=*)

@cython.locals(n=Py_ssize_t, first=cython.uchar, status=int, h1=int, h2=int)
cdef int _detect(bytes data, Py_ssize_t limit) except -1

cpdef int detect(bytes data) except -1
