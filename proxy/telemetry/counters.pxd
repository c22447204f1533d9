# Typed declarations for proxy/telemetry/counters.py (pure-Python mode).

cdef class HttpStats:
    cdef readonly str direction
    cdef public long long requests
    cdef readonly long long[::1] status_counts   # index: status code 0..999
    cdef readonly long long[::1] failure_counts  # responses synthesized or 5xx, per status
    cdef readonly long long[::1] latency_buckets # one per LATENCY_BUCKETS_MS bound, plus +Inf
    cdef readonly double[::1] bounds             # LATENCY_BUCKETS_MS as doubles
    cdef public double latency_sum_ms
    cdef public long long latency_count
    cpdef void record_response(self, int status, double latency_ms, bint failure)

cdef class TcpStats:
    cdef readonly str direction
    cdef readonly str peer
    cdef public long long opened
    cdef public long long closed
    cdef public long long read_bytes
    cdef public long long write_bytes

cdef class RouteStats:
    cdef readonly str dst
    cdef readonly str route
    cdef public long long requests
    cdef public long long retries
    cdef public long long successes
    cdef public long long failures
    cdef readonly long long[::1] latency_buckets
    cdef readonly double[::1] bounds
    cdef public double latency_sum_ms
    cdef public long long latency_count
    cpdef void record(self, double latency_ms, bint failure)
