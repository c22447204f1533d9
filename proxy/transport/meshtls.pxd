# Typed declarations for meshtls.py.

cdef Py_ssize_t _READ_SIZE
cdef object _WANT_READ
cdef object _ZERO_RETURN
cdef int _TICKET_TRIES

cdef class TlsTransport

cdef class TlsLayer:
    cdef object loop
    cdef readonly object incoming
    cdef object outgoing
    cdef public object sslobj
    cdef object cssl
    cdef public object app
    cdef public object raw
    cdef public TlsTransport transport
    cdef object on_handshake
    cdef double timeout
    cdef object timer
    cdef public bint handshaking
    cdef public bint eof_in
    cdef public bint eof_out
    cdef public bint lost
    cdef bint buffered
    cdef public bint paused
    cdef object resume
    cdef int ticket_tries
    cdef void _handshake(self) except *
    cdef void _fail(self, object err) except *
    cdef void _cancel_timer(self) except *
    cdef void _keep_ticket(self) except *
    cdef void _read(self) except *
    cdef void _peer_done(self) except *
    cdef void _flush(self) except *
    cdef void write(self, object data) except *
    cdef void write_eof(self) except *
    cdef void switch(self, object app) except *

cdef class TlsTransport:
    cdef public TlsLayer layer
    cdef bint closing
