# Typed declarations for relay.py (pure-Python mode).
from proxy.protocol.http1 cimport RequestHead, ResponseHead, ChunkedScanner
from proxy.telemetry.counters cimport HttpStats, TcpStats

cdef class ClientConn
cdef class ServerConn

cdef class RouteClock:
    cdef object loop
    cdef object expired
    cdef double timeout
    cdef double idle
    cdef double last_io
    cdef object timer
    cdef object idle_timer
    cpdef void touch(self)
    cpdef void stop(self)

cpdef void settle_pick(object target, double t_sent, int outcome) except *
cpdef double attempt_time_limit(double response_timeout, object rp) except? -1
cpdef object attempt_timeout_error(object rp)

cdef class HttpContext:
    cdef public object loop
    cdef public object router          # .route(head, meta) -> target (hashable, .host .port .via_connect)
    cdef public object rescue          # (err, head, meta) -> bytes, logs one line
    cdef public object connector       # (target, ClientConn) -> None; starts the connect
    cdef public HttpStats stats
    cdef public TcpStats tcp_src
    cdef public TcpStats tcp_dst
    cdef public Pool pool
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t pipeline_buffer
    cdef public Py_ssize_t write_high
    cdef public double response_timeout
    cdef public double client_idle_timeout
    cdef public set connections
    cdef public bint draining
    cdef public object bridge
    cdef public Py_ssize_t max_in_flight
    cdef public Py_ssize_t in_flight
    cdef public long long policy_gen   # bumped on every policy change (invalidates per-connection caches)

cdef class Pool:
    cdef public HttpContext ctx
    cdef public dict idle
    cdef public Py_ssize_t max_idle
    cdef public double idle_timeout
    cdef public Py_ssize_t idle_count
    cpdef ClientConn acquire(self, object target)
    cpdef void release(self, ClientConn conn)
    cpdef ClientConn connect(self, object target, ServerConn server)
    cpdef void sweep(self, double now)
    cpdef void close_all(self)

cdef class ServerConn:
    cdef public HttpContext ctx
    cdef public object meta
    cdef public object transport
    cdef bytes buf
    cdef RequestHead head
    cdef object target
    cdef ClientConn upstream
    cdef bytes upstream_head
    cdef public bint in_flight
    cdef int req_kind
    cdef long long req_remaining
    cdef ChunkedScanner req_scanner
    cdef public bint req_done
    cdef public bint resp_started
    cdef public bint close_after
    cdef bint client_eof
    cdef bint retried
    cdef bint tunnel_here
    cdef int paused
    cdef bint reading_paused
    cdef public bint writing_paused
    cdef public double t0
    cdef public double idle_since
    cdef public bint closed
    cdef public bint closing
    cdef bint settled
    cdef bint counted
    cdef int repicks
    cdef double t_sent
    cdef public object bridge
    cdef bytes last_host
    cdef object last_target
    cdef long long last_gen
    cdef public object rp              # outbound: route policy of the request in flight (outbound/policy.py), or None
    cdef list replay                   # request body kept for a retry, or None
    cdef Py_ssize_t replay_size
    cdef Py_ssize_t replay_limit
    cdef public int attempts           # retries sent for the request in flight
    cdef RouteClock clock              # the route's timeout and idle timeout for this exchange, or None
    cdef public object resp_edit       # the route's ResponseHeaderModifier (outbound/policy.HeaderEdit), or None
    cdef object authz                  # inbound authorization of this connection, or None
    cdef bint inbound
    cdef bytes client_id               # inbound: the verified client identity sent as l5d-client-id
    cdef void advance(self)
    cpdef void hold_reading(self, bint on)
    cpdef void bridge_done(self)
    cpdef void bridge_failed(self, object err)
    cpdef bint dispatch(self, object target) except -1
    cpdef void routed(self, object target)
    cdef void settle(self, int outcome)
    cdef void uncount(self)
    cdef bint begin(self, RequestHead head) except -1
    cdef void send_upstream(self, ClientConn conn)
    cdef void forward_body(self)
    cdef bytes _upstream_head(self, RequestHead head)
    cdef bytes _take_body(self, list pieces=*)
    cpdef bint retry_on_fresh(self) except -1
    cpdef void tunnel(self, ClientConn conn, bytes to_client, bytes to_upstream, bytes from_upstream)
    cdef void pause(self, int reason)
    cdef void resume(self, int reason)
    cpdef void upstream_ready(self, ClientConn conn)
    cpdef void upstream_failed(self, object err)
    cpdef void response_head_sent(self, int status)
    cdef void _policy_begin(self)
    cdef void _keep(self, bytes body)
    cpdef bint retry_wanted(self, int status) except -1
    cpdef void retry(self)
    cpdef void attempt_timed_out(self)
    cdef void _route_end(self, int status, bint failure)
    cdef void _route_drop(self)
    cdef void _stop_route_timer(self)
    cpdef void response_done(self, bint tunnel)
    cpdef void fail(self, object err)
    cpdef void begin_drain(self)
    cpdef void write(self, bytes data)
    cdef void close(self)

cdef class ClientConn:
    cdef public Pool pool
    cdef public object target
    cdef public object transport
    cdef public ServerConn server
    cdef bytes buf
    cdef ResponseHead head
    cdef int kind
    cdef long long remaining
    cdef ChunkedScanner scanner
    cdef public int state
    cdef bint head_request
    cdef bint connect_request
    cdef bint upgrade_requested
    cdef int client_version
    cdef bint client_keep
    cdef bint request_keeps
    cdef bint dechunk
    cdef bint client_closes
    cdef public bint got_bytes
    cdef public bint reused
    cdef public double idle_since
    cdef object timer
    cdef bint reading_paused
    cpdef void set_reading(self, bint on)
    cdef void attach(self, ServerConn server, RequestHead head, bint keep)
    cdef void on_head(self)
    cdef void on_body(self, Py_ssize_t head_len=*, bytes head=*)
    cdef void _cancel_timer(self)
    cdef void finish(self, bint reusable)
    cdef void _discard(self, ResponseHead rh, Py_ssize_t consumed)
    cpdef void connect_failed(self, object exc)
    cpdef void abort(self)
