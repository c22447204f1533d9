# Typed declarations for core.py.
cimport cython
from proxy.exchange.context cimport ExchangeContext
from proxy.exchange.ends cimport DownEnd, Picker, UpEnd
from proxy.exchange.clock cimport RouteClock, now
from proxy.exchange.taphook cimport TapEvents, TapHook
from proxy.protocol.request cimport RequestLine
from proxy.core.target cimport Target
from proxy.telemetry.counters cimport BackendStats, HttpStats, RouteStats

cdef int MAX_REPICKS
cdef int MAX_RESENDS

cdef double attempt_time_limit(double response_timeout, object rp)
cdef int grpc_status_of(object fields) except? -2
cdef bint _is_grpc(object fields) except -1
@cython.locals(key=bytes)
cdef int _grpc_head(object fields) except? -3
cdef int _HOSTS_CACHED
cdef int _CUT
cdef Py_ssize_t SPARE_EXCHANGES

cdef class Exchange:
    cdef public ExchangeContext ctx
    cdef public DownEnd down
    cdef public object meta
    cdef public long long down_id        # the client's HTTP/2 stream id (0: HTTP/1)
    cdef public object authz
    cdef public HttpStats hstats         # the request's metric label set, once known
    cdef int grpc_count                  # a response counted at its end: a gRPC one's HTTP status (its gRPC status
                                         # in the trailers), another's negated (0: none pending)
    # per-connection route cache (HTTP/1 reuses one exchange per connection)
    # the request
    cdef public RequestLine head         # router's view: method, target, host, dst_override, version, upgrade
    cdef public list headers             # HTTP/2 request fields; None for an HTTP/1 client
    cdef public long long req_length     # declared body length, -1 when unknown
    cdef public bint req_ended           # the client's request is complete
    cdef public bint upgrade             # an HTTP/1 Upgrade or CONNECT: the connection may leave HTTP
    cdef public object req_trailers
    cdef public list up_queue            # [(bytes, credit)] request bytes the upstream has not taken
    cdef public bint up_ended            # the current attempt got the whole request
    cdef public bint body_sent           # some request body went to the current attempt
    cdef list replay                     # request body kept for a retry; None: not replayable
    cdef Py_ssize_t replay_size
    # the attempt
    cdef public UpEnd up
    cdef public long long up_id          # the upstream HTTP/2 stream id
    cdef public Target target
    cdef public object rp                # outbound: the route policy (set by the router), or None
    cdef public BackendStats backend     # ... and the backend its split picked for this attempt, or None
    # classified on its route at the response head or gRPC status; its statuses and durations end in finish()
    cdef RouteStats route_open
    cdef BackendStats backend_open
    cdef int end_status                 # ... counted there with this HTTP status (0: none), gRPC status (-1: none)
    cdef int end_grpc
    cdef int end_error                  # ... and ROUTE_ERRORS index: how the stream ended (0: cleanly)
    cdef public object resp_edit         # the route's ResponseHeaderModifier, or None
    cdef public object mirror            # the route's mirrored copies of this request (outbound/mirror.py), or None
    cdef public bint restore_h1          # set by the dispatcher: HTTP/2 fields restored to HTTP/1 for the app
    cdef public object up_h1             # the request head as HTTP/1 bytes, once made for an HTTP/1 upstream
    cdef public bint up_chunked          # ... and its body is sent chunked
    cdef public bint up_keeps            # ... and it is HTTP/1.1 (1.0: the upstream closes after it)
    cdef public object up_fields         # the request head as HTTP/2 fields, once made for an HTTP/2 upstream
    cdef bint settled
    cdef public double t0
    cdef public double t_sent
    cdef bint retried                    # retry() asked for another attempt: routed counts it as a request
    cdef int repicks
    cdef int resends
    cdef public int attempts
    cdef object timer
    cdef RouteClock clock
    # the response
    cdef public bint resp_started
    cdef public list down_queue          # [(bytes, credit)] response bytes the client has not taken
    cdef public bint down_end_pending
    cdef object down_trailers
    cdef public bint done
    cdef public bint down_gone
    cdef bint counted
    cdef bint grpc_pending
    cdef double route_ms
    cdef int route_status               # the HTTP status of a gRPC response classified at its trailers
    cdef int held_status
    cdef object held_fields
    cdef long long held_length
    cdef bint held_end
    # what the access log and tracing read: the final status the client got (0: none), its declared length
    cdef public int status
    cdef public long long resp_length
    # tracing (proxy/telemetry/tracing.py): the request's span, None unless traced and sampled
    cdef public object span
    # tap (proxy/telemetry/tap.py): the request's TapRecord while some tap observes it, else None
    cdef public TapEvents tap
    cdef bint tap_asked                  # the hub was asked about this request (once)
    cdef public object tap_base          # the tap's encoded (target, fields, generation) of this connection
    cdef void _tap_observe(self)

    cdef void _clear(self)
    cdef HttpStats _stats(self)
    @cython.locals(cache=dict, found=tuple)
    cdef HttpStats _inbound_stats(self, object host)
    cdef void _count_grpc(self, int grpc, int error)
    cdef void _count_attempt(self, int status, int grpc)
    @cython.locals(service=Picker)
    cpdef void start(self, RequestLine head, list headers, long long length, bint ended)
    cpdef void reject(self, object err)
    cpdef void request_data(self, bytes data, Py_ssize_t credit, bint end)
    cpdef void request_trailers(self, object fields)
    cpdef void client_gone(self)
    cpdef void release_response(self, Py_ssize_t credit)
    cpdef void routed(self, Target target)
    cpdef void connecting(self, UpEnd up)
    cpdef void attached(self, UpEnd up, long long up_id, bint request_sent)
    cpdef void pump_up(self)
    cpdef void upstream_failed(self, object err)
    cpdef void upstream_reset(self, object err, bint retry_safe)
    cdef void _request_refused(self)
    cdef double _pick_rtt(self)
    cdef void _again(self, bint resplit)
    cpdef void _attempt_timed_out(self)
    cdef void _cancel_timer(self)
    cpdef void response_informational(self, int status, object h1head, object fields)
    cpdef void flush_down(self)
    cpdef void response_head(self, int status, object h1head, object fields, long long length, bint end)
    cdef void _forward_head(self, int status, object h1head, object fields, long long length, bint end)
    cpdef void upgraded(self, int status, object h1head, object transport, bytes rest)
    cpdef void response_data(self, bytes data, Py_ssize_t credit, bint end)
    cpdef void response_trailers(self, object fields)
    cpdef void pump_down(self)
    cdef void _policy_begin(self)
    cdef bint _policy_response(self, int status, object fields, long long length, bint end)
    cdef void _release_head(self)
    cpdef bint retry_wanted(self, int status, int grpc)
    cpdef void retry(self)
    cpdef void _route_deadline(self, object err)
    cdef void _route_end(self, int status, int grpc, double elapsed, int error)
    cdef void _durations_end(self)
    cpdef void settle(self, int outcome)
    cpdef void fail(self, object err)
    cdef void _cut(self, object err)
    cdef void _drop_up(self)
    cdef void _release_up_queue(self)
    cdef void _release_down_queue(self)
    cpdef void finish(self)

cdef DownEnd _NO_DOWN
@cython.locals(spares=list)
cpdef Exchange take_exchange(ExchangeContext ctx, DownEnd down, object meta)
cpdef void unbind_exchange(Exchange ex) except *
@cython.locals(spares=list)
cpdef bint spare_exchange(Exchange ex) except -1
