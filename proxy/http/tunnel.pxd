# Typed declarations for tunnel.py (pure-Python mode).
from proxy.exchange.clock cimport now
from proxy.telemetry.counters cimport TcpStats

cdef class TunnelEnd:
    cdef public object transport
    cdef public TunnelEnd peer
    cdef public TcpStats stats      # counts this side's socket
    cdef public double opened_at    # when it was counted open
    cdef public object on_close     # callable(TunnelEnd) or None, called once
    cdef public bint eof
    cdef public bint closed
    cdef public bytes pending       # bytes to send once the peer is linked
    cpdef void link(self, TunnelEnd peer)
    cpdef void close(self)
    cpdef void adopt(self, object transport, bint counted=*, double opened_at=*)
    cdef void _send(self, bytes data)
    cdef void _send_eof(self)

from proxy.exchange.core cimport Exchange
from proxy.exchange.ends cimport UpEnd

cdef class ConnectTunnel(UpEnd):
    cdef Exchange ex
    cdef object target
    cdef TcpStats stats
    cdef public object transport
