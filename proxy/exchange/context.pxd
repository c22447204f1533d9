# Typed declarations for context.py.
from proxy.exchange.ends cimport Dispatcher
from proxy.exchange.taphook cimport TapHook
from proxy.telemetry.counters cimport HttpStats, TcpStats

cdef class ExchangeContext:
    cdef public object loop
    cdef public str direction
    cdef public bint inbound
    cdef public object router          # .route(head, meta, ex) -> target | QUEUED; .reroute(...); .unqueue(ex)
    cdef public Dispatcher upstreams   # .open(ex, target): an up end per attempt (proxy/http/upstreams.py)
    cdef public HttpStats stats
    cdef public TcpStats tcp_src
    cdef public TcpStats tcp_dst
    cdef public object labels          # proxy.telemetry.labels.LabelSets, or None
    cdef public double response_timeout
    cdef public Py_ssize_t max_header_bytes
    cdef public double header_timeout
    cdef public Py_ssize_t write_high
    cdef public Py_ssize_t pipeline_buffer
    cdef public double client_idle_timeout
    cdef public Py_ssize_t max_in_flight
    cdef public Py_ssize_t in_flight
    cdef public long long policy_gen
    cdef public bint draining
    cdef public set connections
    cdef public list spare_exchanges   # finished HTTP/1 exchanges for the next request (core.take_exchange)
    cdef public object access_log      # callable(exchange) at each exchange's end, or None (off)
    cdef public object tracer          # proxy/telemetry/tracing.py Tracer, or None: tracing off
    cdef public bint log_errors        # log each synthesized or cut response (off for mirrored copies)
    cdef public TapHook tap            # proxy/telemetry/tap.py TapHub while a tap is open, else None
