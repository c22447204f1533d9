# Typed declarations for h2relay.py (pure-Python mode).
from proxy.protocol.h2conn cimport H2Connection

cdef class H2Server
cdef class H2Client
cdef class H2Pool

cdef class RequestMeta:
    cdef public bytes method
    cdef public bytes target
    cdef public bytes host
    cdef public bytes dst_override
    cdef public int version
    cdef public bint keep_alive
    cdef public bytes upgrade

cdef class Exchange:
    cdef public H2Server server
    cdef public int sid
    cdef public list headers
    cdef public RequestMeta meta
    cdef public bint end_in
    cdef public object target
    cdef public object client
    cdef public int up_sid
    cdef public list to_up
    cdef public list to_down
    cdef public bint up_end_pending
    cdef public bint down_end_pending
    cdef public bint resp_started
    cdef public double t0
    cdef public double t_sent
    cdef public bint settled
    cdef public bint done
    cdef public int retries
    cdef public object trailers_up
    cdef public object trailers_down
    cdef public bint orig_h1
    cdef public bint req_ended
    cdef public object timer
    cdef public object rp              # outbound: route policy (outbound/policy.py), or None
    cdef public list replay            # request DATA kept for a retry, or None
    cdef public bint body_sent         # some request DATA went to the current upstream stream
    cdef public Py_ssize_t replay_size
    cdef public int attempts           # retries sent
    cdef object clock                  # the route's timeout and idle timeout (relay.RouteClock), or None
    cdef public double route_ms        # latency at the response head, while the gRPC class waits for trailers
    cdef public bint grpc_pending
    cdef public object held
    cdef public object resp_edit       # the route's ResponseHeaderModifier, or None
    cpdef void start(self) except *
    cpdef void routed(self, object target) except *
    cpdef void attach(self, object client, int up_sid) except *
    cpdef void pump_up(self) except *
    cpdef void pump_down(self) except *
    cpdef void on_response(self, list headers, bint end_stream) except *
    cpdef void on_response_data(self, bytes data, long long flow, bint end_stream) except *
    cpdef void on_request_data(self, bytes data, long long flow, bint end_stream) except *
    cpdef void settle(self, int outcome) except *
    cpdef void finish(self) except *

cdef class H2Server:
    cdef public object ctx
    cdef public object meta
    cdef public H2Pool pool
    cdef public object h1_pool
    cdef public H2Connection conn
    cdef public object transport
    cdef public dict exchanges
    cdef public bint closed
    cdef public double idle_since
    cdef public bint in_flight
    cdef public bint draining
    cdef public bint writing_paused
    cdef public bint dirty
    cdef public object authz       # inbound authorization of this connection, or None
    cdef bint inbound
    cdef bytes client_id           # inbound: the verified client identity, sent as l5d-client-id
    cpdef void dispatch(self, object event) except *
    cpdef void write_out(self) except *
    cpdef void send_headers(self, int sid, list headers, bint end_stream) except *
    cpdef void ack(self, int sid, long long n) except *
    cpdef void flush(self) except *

cdef class H2Client:
    cdef public H2Pool pool
    cdef public object target
    cdef public H2Connection conn
    cdef public object transport
    cdef public dict exchanges
    cdef public list waiting
    cdef public bint connected
    cdef public bint dead
    cdef public bint dirty
    cpdef void open(self, object ex) except *
    cpdef void write_out(self) except *
    cpdef void dispatch(self, object event) except *
    cpdef void ack(self, int sid, long long n) except *
    cpdef void flush(self) except *

cdef class H2Pool:
    cdef public object ctx
    cdef public object settings
    cdef public int max_per_target
    cdef public dict conns
    cpdef void open(self, object target, object ex) except *
