# Typed declarations for proxy/telemetry/counters.py (pure-Python mode).
from proxy.exchange.clock cimport now

cdef int _NBUCKETS, RESPONSE_SLOTS, ERRNO_SLOTS
cdef int _bucket(double[::1] bounds, double latency_ms)
cdef bint _tally(long long[::1] keys, long long[::1] counts, long long key, Py_ssize_t start)
cdef list _filled(long long[::1] keys, long long[::1] counts)
cdef long long _outcome_key(int status, int grpc, int error)
cdef list _outcomes(long long[::1] keys, long long[::1] counts)
cdef int _NBACKEND, _NROUTE, _NFRAME
cdef double[::1] _ROUTE_BOUNDS
cdef long long[::1] _FRAME_BOUNDS

cdef class HttpStats:
    cdef readonly str direction
    cdef public str labels                 # the label set as Prometheus text, made once
    cdef public long long requests
    cdef readonly long long[::1] keys      # packed outcome + 1 (0: free slot)
    cdef readonly long long[::1] counts
    cdef public long long other_successes  # outcomes past RESPONSE_SLOTS
    cdef public long long other_failures
    cdef readonly long long[::1] latency_buckets # one per LATENCY_BUCKETS_MS bound, plus +Inf
    cdef readonly double[::1] bounds             # LATENCY_BUCKETS_MS as doubles
    cdef public double latency_sum_ms
    cdef public long long latency_count
    cpdef void observe(self, double latency_ms)
    cpdef void count(self, int status, int grpc, int error, bint failure)
    cpdef void record_response(self, int status, double latency_ms, bint failure)

cdef class TcpStats:
    cdef readonly str direction
    cdef readonly str peer
    cdef public str labels
    cdef public long long opened
    cdef public long long closed
    cdef public long long read_bytes
    cdef public long long write_bytes
    cdef readonly long long[::1] errnos
    cdef readonly long long[::1] errno_counts
    cdef public long long errno_other
    cdef readonly long long[::1] duration_buckets
    cdef readonly double[::1] bounds
    cdef public double duration_sum_ms
    cpdef void close(self, double opened_at, int err)

cdef class RouteStats:
    cdef readonly str dst
    cdef readonly str route
    cdef public str labels                 # Linkerd's outbound_http_route_* label text ("": none)
    cdef public bint grpc                  # a GRPCRoute's rule: the outbound_grpc_route_* families
    cdef public long long requests
    cdef public long long retries
    cdef public long long successes
    cdef public long long failures
    cdef readonly long long[::1] latency_buckets
    cdef readonly double[::1] bounds
    cdef public double latency_sum_ms
    cdef public long long latency_count
    cdef readonly long long[::1] keys      # packed outcome (status, error) + 1 (0: free slot)
    cdef readonly long long[::1] counts
    cdef public long long other_outcomes   # outcomes past RESPONSE_SLOTS
    cdef public long long retry_successes  # retried requests that ended in success
    cdef public long long retry_overflow   # retries the budget refused
    cdef public long long retry_limit_exceeded  # retryable answers past the route's retry limit
    cdef readonly long long[::1] duration_buckets  # Linkerd's request duration, to the response's end (ROUTE_BUCKETS_MS)
    cdef public double duration_sum_ms
    cdef public long long duration_count
    cpdef void record(self, double latency_ms, bint failure)
    cpdef void end(self, double duration_ms, int status, int grpc, int error)

cdef class BackendStats:
    cdef public str labels                 # parent_*, route_* and backend_* label text, made once
    cdef public bint grpc                  # a GRPCRoute's backend: the outbound_grpc_route_backend_* families
    cdef public long long requests         # attempts sent to this backend (bumped by the router)
    cdef readonly long long[::1] duration_buckets  # one per BACKEND_BUCKETS_MS bound, plus +Inf
    cdef readonly double[::1] bounds
    cdef public double duration_sum_ms
    cdef public long long duration_count
    cdef readonly long long[::1] keys      # packed outcome (status, gRPC status, error) + 1 (0: free slot)
    cdef readonly long long[::1] counts
    cdef public long long other_outcomes
    cdef readonly long long[::1] frame_buckets  # response body chunk sizes (FRAME_BUCKETS, plus +Inf)
    cdef public long long frame_sum
    cdef public long long frame_count
    cpdef void end(self, double latency_ms, int status, int grpc, int error)
    cpdef void frame(self, Py_ssize_t size)
