# Typed declarations for balancer.py (Cython pure-Python mode).
# The .py holds all logic; this file adds C types so pick() and complete() touch
# no Python object beyond the endpoint list itself. Both classes are final, so
# calls between them are direct C calls. The estimate math cannot raise (weights
# are checked > 0 on the way in), hence noexcept.

cimport cython

cdef int _READY, _EJECTED, _PROBING, _REMOVED
cdef unsigned int _ALLOWED
cdef long long _NEVER
cdef unsigned long long _MASK64, _GOLDEN, _MIX1, _MIX2
cdef double _UNIT

@cython.locals(w=double)
cdef double _check_weight(object weight) except? -1.0


@cython.final
cdef class Endpoint:
    cdef readonly object key
    cdef readonly double weight
    cdef readonly object target            # opaque: what the caller connects to
    cdef public object handle              # the caller's object for this member (balance.py: its Target)
    cdef readonly long long pending        # picked and not yet completed
    cdef readonly double rtt_ns            # PeakEWMA estimate as of last_ns
    cdef readonly long long last_ns        # time of the last observation (or of the default); -1 before any pick
    cdef readonly int state                # READY, EJECTED, PROBING, REMOVED
    cdef readonly int consecutive_failures
    cdef readonly long long backoff_ns     # of the latest ejection; 0 after a good probe
    cdef readonly long long eject_until_ns
    cdef readonly bint removed
    cdef readonly bint probe_inflight      # PROBING and its one probe was picked
    cdef double _decay_ns
    cdef bint _observed                    # rtt_ns is a measurement, not the default
    cdef Py_ssize_t _slot                  # index in Balancer._pickable, or -1

    cpdef double load(self, long long now_ns) noexcept
    @cython.locals(elapsed=cython.longlong)
    cdef double _estimate(self, long long now_ns) noexcept
    @cython.locals(elapsed=cython.longlong, w=double)
    cdef void _observe(self, long long now_ns, double rtt_ns) noexcept


@cython.final
cdef class Balancer:
    cdef readonly double default_rtt_ns
    cdef readonly double decay_ns
    cdef readonly int failure_threshold
    cdef readonly long long min_backoff_ns
    cdef readonly long long max_backoff_ns
    cdef readonly double jitter
    cdef readonly object seed
    cdef readonly Py_ssize_t ready_count   # endpoints in state READY
    cdef readonly Py_ssize_t size          # endpoints not removed
    cdef dict _by_key
    cdef list _endpoints
    cdef list _pickable
    cdef double[::1] _cum                  # cumulative weights of _pickable
    cdef double _total
    cdef double _unit                      # smallest pickable weight: one replica
    cdef bint _uniform                     # all pickable weights equal
    cdef bint _dirty                       # _cum/_total/_unit/_uniform stale
    cdef long long _next_due_ns            # no ejection ends before this
    cdef bint _unstamped                   # some endpoint has last_ns == -1
    cdef unsigned long long _rng

    @cython.locals(wanted=dict, added=list, removed=list, changed=list, ep=Endpoint)
    cpdef tuple update(self, object endpoints)
    @cython.locals(w=double, ep=Endpoint)
    cpdef Endpoint add(self, object key, object weight=*, object target=*)
    @cython.locals(ep=Endpoint)
    cpdef Endpoint remove(self, object key)
    cpdef list endpoints(self)
    cpdef Endpoint get(self, object key)
    @cython.locals(ep=Endpoint)
    cdef Endpoint _add(self, object key, double weight, object target)
    @cython.locals(changed=bint)
    cdef bint _change(self, Endpoint ep, double weight, object target) except -1
    cdef int _drop(self, Endpoint ep) except -1

    @cython.locals(old=int)
    cdef int _set_state(self, Endpoint ep, int new) except -1
    @cython.locals(want=bint, last=Endpoint)
    cdef int _sync(self, Endpoint ep) except -1
    @cython.locals(backoff=cython.longlong)
    cdef int _eject(self, Endpoint ep, long long now_ns) except -1
    @cython.locals(due=cython.longlong, ep=Endpoint)
    cdef int _promote_due(self, long long now_ns) except -1
    @cython.locals(due=cython.longlong, ep=Endpoint)
    cpdef long long next_ready_ns(self, long long now_ns) noexcept

    @cython.locals(z=cython.ulonglong)
    cdef unsigned long long _next(self) noexcept
    cdef Py_ssize_t _below(self, Py_ssize_t n) noexcept
    cdef double _uniform01(self) noexcept

    @cython.locals(n=Py_ssize_t, k=Py_ssize_t, total=double, unit=double, uniform=bint,
                   w=double, ep=Endpoint)
    cdef int _refresh(self) except -1
    @cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
    cdef Py_ssize_t _search(self, double r, Py_ssize_t n) noexcept
    @cython.locals(ep=Endpoint, total=double, observed=int)
    cdef double _peer_start(self, long long now_ns) except? -1.0
    @cython.locals(ep=Endpoint, start=double)
    cdef int _stamp(self, long long now_ns) except -1
    @cython.locals(ep=Endpoint, start=double)
    cdef int _reseed(self, long long now_ns) except -1
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, a=Endpoint, b=Endpoint,
                   own=Endpoint, start=double, r=double)
    cpdef Endpoint pick(self, long long now_ns)
    @cython.locals(rtt=double, first=bint)
    cpdef void complete(self, Endpoint ep, long long now_ns, double rtt_ns, bint success) except *
    cpdef void cancel(self, Endpoint ep) except *
