"""Request and connection counters updated per request on the fast path, one object per label set.

prometheus_client's labelled counters cost a lock and a label lookup per
increment; these are plain C integers (compiled) bumped inline by the relays
and rendered to Prometheus text only when /metrics is scraped
(``proxy.telemetry.metrics``). A label set (direction, authority, target,
TLS, peer identity, destination labels...) is resolved once per endpoint,
connection or route (``proxy.telemetry.labels``) and its text made then; per
request only the numbers move. ``benchmarks/`` measures the difference.
"""

import array
import errno

import cython

from proxy import errors
from proxy.exchange.clock import now
from proxy.protocol.h2frame import ERROR_CODE_NAMES

# Linkerd's latency buckets, in milliseconds (response_latency_ms and tcp_connection_duration_ms).
LATENCY_BUCKETS_MS = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)
_NBUCKETS = cython.declare(cython.int, len(LATENCY_BUCKETS_MS))

# Distinct (status, gRPC status, error, classification) outcomes kept per HTTP
# label set; further ones are counted as status_code="other". A proxy sees a
# handful per endpoint, so a small open-addressed table beats 1,000 slots per status.
RESPONSE_SLOTS = cython.declare(cython.int, 32)
_ENOTCONN = errno.ENOTCONN
# Distinct errnos kept per TCP label set for tcp_close_total; more count as errno="other".
ERRNO_SLOTS = cython.declare(cython.int, 8)

# The ``error`` label of a response the proxy made itself for a failure that
# never reached an app: Linkerd's names. Index 0: no error label (the app answered).
ERROR_NONE = 0
_FAILURE_LABELS = (
    ("", ""),
    ("failfast", ""),
    ("loadshed", ""),
    ("response timeout", ""),
    ("i/o", "ECONNREFUSED"),
    ("i/o", "ETIMEDOUT"),
    ("i/o", ""),
    ("unauthorized", ""),
    ("unexpected", ""),
    ("response timeout", ""),  # 9: a route's whole-request timeout
    ("response timeout", ""),  # 10: a route's idle timeout
    # A response cut after its head (route families only: the legacy families count at the head).
    ("i/o", ""),  # 11: the upstream reset the stream
    ("i/o", ""),  # 12: ... with CANCEL
    ("i/o", ""),  # 13: ... with REFUSED_STREAM
    ("i/o", ""),  # 14: ... with ENHANCE_YOUR_CALM
    ("i/o", ""),  # 15: the upstream's GOAWAY came before it took the stream
    ("i/o", ""),  # 16: the upstream's HTTP/1 connection closed or failed
)
# The legacy response_total's error label of a response cut after its head: Linkerd's classifier names the
# HTTP/2 reason of the error that ended the stream (h2(CANCEL)...), any other error "unclassified".
ERROR_LABELS = _FAILURE_LABELS + tuple(
    (f"h2({ERROR_CODE_NAMES[code]})", "") for code in range(len(ERROR_CODE_NAMES))) + (("unclassified", ""),)
# ERROR_LABELS index of h2(NO_ERROR), then one per code; the last: unclassified.
_CUT_H2 = len(_FAILURE_LABELS)
_CUT_UNCLASSIFIED = _CUT_H2 + len(ERROR_CODE_NAMES)


def error_code(err):
    """The ``ERROR_LABELS`` index for a proxy error (per failed request, never per success)."""
    if isinstance(err, errors.NoEndpoints):
        return 1
    if isinstance(err, errors.LoadShed):
        return 2
    if isinstance(err, errors.ResponseTimeout):
        return 3
    if isinstance(err, errors.RouteTimeout):
        return 10 if isinstance(err, errors.RouteIdleTimeout) else 9
    if isinstance(err, errors.ConnectRefused):
        return 4
    if isinstance(err, errors.ConnectTimeout):
        return 5
    if isinstance(err, errors.StreamReset):
        code = err.code
        if code == _RST_CANCEL:
            return 12
        if code == _RST_REFUSED:
            return 13
        if code == _RST_CALM:
            return 14
        return 11
    if isinstance(err, errors.StreamGoAway):
        return 15
    if isinstance(err, errors.Http1ConnectionLost):
        return 16
    if isinstance(err, (errors.ConnectFailed, errors.UpstreamReset)):
        return 6
    if isinstance(err, (errors.Unauthorized, errors.OwnAddress, errors.RateLimited)):
        return 7
    if isinstance(err, (errors.ClientError, errors.RouteRedirect, errors.RoutingError, errors.EgressDenied)):
        return 0  # the client's request, or the policy's answer: not a proxy failure
    return 8


# The client left after the response head (Linkerd labels its cancelled stream UNKNOWN).
CLIENT_GONE = 8
_RST_CANCEL = 0x8
_RST_REFUSED = 0x7
_RST_CALM = 0xB
_RST_INTERNAL = 0x2


def stream_error_code(err):
    """The ``ROUTE_ERRORS`` index for a response cut after its head, by how its stream ended (as
    ``error_code``: an upstream RST_STREAM by its code, a lost HTTP/2 connection IO, a lost HTTP/1 one
    UNKNOWN, a route's timeouts theirs), anything else UNKNOWN."""
    code = error_code(err)
    return code if code else 8


def cut_error_code(err):
    """The ``ERROR_LABELS`` index of the legacy response_total's error label for a response cut after its
    head: the HTTP/2 reason of an upstream's RST_STREAM (a code HTTP/2 does not define counts as
    INTERNAL_ERROR, as RFC 9113 7 allows: the label stays bounded), unclassified for anything else."""
    if isinstance(err, errors.StreamReset):
        code = err.code
        return _CUT_H2 + (code if 0 <= code < _CUT_UNCLASSIFIED - _CUT_H2 else _RST_INTERNAL)
    return _CUT_UNCLASSIFIED


def _zeros(n):
    return memoryview(array.array("q", bytes(8 * n))).cast("B").cast("q")


def _bounds():
    return memoryview(array.array("d", LATENCY_BUCKETS_MS))


def _bucket(bounds, latency_ms):
    i: cython.int = 0
    # Linear scan: the common latencies hit the first few buckets.
    while i < _NBUCKETS and latency_ms > bounds[i]:
        i += 1
    return i


def _filled(keys, counts):
    """(packed outcome, count) of every slot of an outcome table in use (what ``_tally`` stored)."""
    out = []
    i: cython.Py_ssize_t
    for i in range(RESPONSE_SLOTS):
        if keys[i]:
            out.append((keys[i] - 1, counts[i]))
    return out


def _tally(keys, counts, key, start):
    """Count ``key`` in an open-addressed table (a free slot's key is 0), probing from ``start``;
    False when the table is full of other keys."""
    size: cython.Py_ssize_t = len(keys)
    i: cython.Py_ssize_t = start
    n: cython.Py_ssize_t = 0
    while n < size:
        if keys[i] == key:
            counts[i] += 1
            return True
        if keys[i] == 0:
            keys[i] = key
            counts[i] = 1
            return True
        i = (i + 1) % size
        n += 1
    return False


class HttpStats:
    """Request and response counts and response latency of one HTTP label set.

    ``labels`` is the label set as Prometheus text (``direction="inbound",...``),
    made once when the set was first seen. Responses are kept by outcome:
    status code, gRPC status (-1: none), error index and classification,
    packed into one key of a small open-addressed table.
    """

    def __init__(self, direction, labels=None):
        self.direction = direction
        self.labels = labels if labels is not None else f'direction="{direction}"'
        self.requests = 0
        self.keys = _zeros(RESPONSE_SLOTS)
        self.counts = _zeros(RESPONSE_SLOTS)
        self.other_successes = 0
        self.other_failures = 0
        self.latency_buckets = _zeros(_NBUCKETS + 1)
        self.bounds = _bounds()
        self.latency_sum_ms = 0.0
        self.latency_count = 0

    def observe(self, latency_ms):
        """One response head, ``latency_ms`` after its request head."""
        self.latency_buckets[_bucket(self.bounds, latency_ms)] += 1
        self.latency_sum_ms += latency_ms
        self.latency_count += 1

    def count(self, status, grpc, error, failure):
        """One response ended with this outcome (``grpc`` -1: no gRPC status; ``error``: ERROR_LABELS index)."""
        key: cython.longlong
        if status < 0 or status > 999:
            status = 0
        if grpc < -1 or grpc > 16:
            grpc = 2  # UNKNOWN: not a status gRPC defines
        key = 1 + status + ((grpc + 1) << 10) + (error << 15) + ((1 if failure else 0) << 21)
        if _tally(self.keys, self.counts, key, key % RESPONSE_SLOTS):
            return
        if failure:
            self.other_failures += 1
        else:
            self.other_successes += 1

    def record_response(self, status, latency_ms, failure):
        """A response whose head is its outcome (no gRPC status, no proxy error): latency and count at once."""
        self.observe(latency_ms)
        self.count(status, -1, 0, failure)  # 0: ERROR_NONE

    def outcomes(self):
        """(status, grpc, error index, failure, count) per outcome seen; for rendering."""
        out = [(key & 1023, ((key >> 10) & 31) - 1, (key >> 15) & 63, bool(key >> 21), n)
               for key, n in _filled(self.keys, self.counts)]
        out.sort()
        return out


class TcpStats:
    """Connection counts, bytes, lifetimes and close errors of one TCP label set (direction, peer, ...)."""

    def __init__(self, direction, peer, labels=None):
        self.direction = direction
        self.peer = peer
        self.labels = labels if labels is not None else f'direction="{direction}",peer="{peer}"'
        self.opened = 0
        self.closed = 0
        self.read_bytes = 0
        self.write_bytes = 0
        self.errnos = _zeros(ERRNO_SLOTS)
        self.errno_counts = _zeros(ERRNO_SLOTS)
        self.errno_other = 0
        self.duration_buckets = _zeros(_NBUCKETS + 1)
        self.bounds = _bounds()
        self.duration_sum_ms = 0.0

    def close(self, opened_at, err):
        """A connection opened at ``opened_at`` (``now()`` seconds; 0: unknown) closed; ``err``: its errno or 0."""
        duration_ms: cython.double = (now() - opened_at) * 1000.0 if opened_at > 0.0 else 0.0
        self.closed += 1
        self.duration_buckets[_bucket(self.bounds, duration_ms)] += 1
        self.duration_sum_ms += duration_ms
        if err != 0 and not _tally(self.errnos, self.errno_counts, err, 0):
            self.errno_other += 1

    def clean_closes(self):
        """Closes without an errno (for rendering)."""
        n = self.closed - self.errno_other
        for i in range(ERRNO_SLOTS):
            n -= self.errno_counts[i]
        return n


def errno_of(exc):
    """The errno a ``connection_lost`` exception carries, or 0 (a clean close, or none known).

    ENOTCONN is a clean close: the peer had already closed when this side
    shut its own half down (a client that closes right after its last read).
    """
    if isinstance(exc, OSError) and exc.errno and exc.errno != _ENOTCONN:
        return exc.errno
    return 0


class RouteStats:
    """Counts and latency of one (service, route) label pair, bumped by the relays per request.

    ``requests`` counts requests as the client sent them (a retried request is
    one request); ``retries`` counts the extra attempts. Responses are counted
    once per request, with the route's classification at the head (``record``), and
    by outcome at the stream's end (``end``: the head's HTTP status and the
    ``ROUTE_ERRORS`` index of how the stream failed) for recent
    Linkerd's ``outbound_http_route_*`` families, whose label text
    (``parent_*``, ``route_*``, ``hostname``) is ``labels`` ("" when the route
    has no such families: ServiceProfile routes keep only the ``route_*`` ones);
    a GRPCRoute's rules (``grpc``) are the ``outbound_grpc_route_*`` families, by gRPC status.
    """

    def __init__(self, dst, route, labels="", grpc=False):
        self.dst = dst
        self.route = route
        self.labels = labels
        self.grpc = grpc
        self.requests = 0
        self.retries = 0
        self.successes = 0
        self.failures = 0
        self.latency_buckets = _zeros(_NBUCKETS + 1)
        self.bounds = _bounds()
        self.latency_sum_ms = 0.0
        self.latency_count = 0
        self.keys = _zeros(RESPONSE_SLOTS)
        self.counts = _zeros(RESPONSE_SLOTS)
        self.other_outcomes = 0
        self.retry_successes = 0
        self.retry_overflow = 0
        self.retry_limit_exceeded = 0
        self.duration_buckets = _zeros(_NROUTE + 1)
        self.duration_sum_ms = 0.0
        self.duration_count = 0

    def record(self, latency_ms, failure):
        if failure:
            self.failures += 1
        else:
            self.successes += 1
        self.latency_buckets[_bucket(self.bounds, latency_ms)] += 1
        self.latency_sum_ms += latency_ms
        self.latency_count += 1

    def end(self, duration_ms, status, grpc, error):
        """A counted request's response ended (its last byte or trailers went to the client, or the
        stream was reset) ``duration_ms`` after its request head: Linkerd's request duration, and its
        status as Linkerd counts it then: ``status`` (the head's, 0: none came) with ``grpc`` (its gRPC
        status, -1: none) and ``error`` (a ``ROUTE_ERRORS`` index: how the stream failed, 0: it did not)."""
        key: cython.longlong = _outcome_key(status, grpc, error)
        if not _tally(self.keys, self.counts, key, key % RESPONSE_SLOTS):
            self.other_outcomes += 1
        i: cython.int = 0
        while i < _NROUTE and duration_ms > _ROUTE_BOUNDS[i]:
            i += 1
        self.duration_buckets[i] += 1
        self.duration_sum_ms += duration_ms
        self.duration_count += 1

    def outcomes(self):
        """(status, gRPC status or -1, error index, count) per outcome seen; for rendering."""
        return _outcomes(self.keys, self.counts)


def _outcome_key(status, grpc, error):
    """A route or backend outcome packed into one table key (never 0: a free slot)."""
    key: cython.longlong
    if status < 0 or status > 999:
        status = 0
    if grpc < -1 or grpc > 16:
        grpc = 2  # UNKNOWN: not a status gRPC defines
    key = 1 + status + (error << 10) + ((grpc + 1) << 15)
    return key


def _outcomes(keys, counts):
    out = [(key & 1023, ((key >> 15) & 31) - 1, (key >> 10) & 31, n) for key, n in _filled(keys, counts)]
    out.sort()
    return out


# Recent Linkerd's backend response-duration buckets, in milliseconds (its 0.025 s .. 10 s).
BACKEND_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 10000)
_NBACKEND = cython.declare(cython.int, len(BACKEND_BUCKETS_MS))
# Its route request-duration buckets (fewer: they overlap the backends'), in milliseconds (0.05 s .. 10 s).
ROUTE_BUCKETS_MS = (50, 500, 1000, 10000)
_NROUTE = cython.declare(cython.int, len(ROUTE_BUCKETS_MS))
_ROUTE_BOUNDS = memoryview(array.array("d", ROUTE_BUCKETS_MS))
# Its backend response-frame-size buckets, in bytes.
FRAME_BUCKETS = (128, 1024, 10240)
_NFRAME = cython.declare(cython.int, len(FRAME_BUCKETS))
_FRAME_BOUNDS = memoryview(array.array("q", FRAME_BUCKETS))


class BackendStats:
    """One (route, backend) pair of a service's policy: the requests sent to the backend the split chose
    (each attempt: a retry may pick another) and their outcomes, for recent Linkerd's
    ``outbound_{http,grpc}_route_backend_*`` families. ``labels`` is their ``parent_*``, ``route_*``
    and ``backend_*`` label text, made once when the policy was loaded; the router bumps ``requests``
    when it picks the backend and hands the object to the exchange, which ``finish``es the attempt."""

    def __init__(self, labels, grpc=False):
        self.labels = labels
        self.grpc = grpc
        self.requests = 0
        self.duration_buckets = _zeros(_NBACKEND + 1)
        self.bounds = memoryview(array.array("d", BACKEND_BUCKETS_MS))
        self.duration_sum_ms = 0.0
        self.duration_count = 0
        self.keys = _zeros(RESPONSE_SLOTS)
        self.counts = _zeros(RESPONSE_SLOTS)
        self.other_outcomes = 0
        self.frame_buckets = _zeros(_NFRAME + 1)
        self.frame_sum = 0
        self.frame_count = 0

    def end(self, latency_ms, status, grpc, error):
        """One attempt's response ended (last byte, trailers, reset, or given up) ``latency_ms`` after it was
        sent, with its status as Linkerd counts it then (see RouteStats.end)."""
        key: cython.longlong = _outcome_key(status, grpc, error)
        if not _tally(self.keys, self.counts, key, key % RESPONSE_SLOTS):
            self.other_outcomes += 1
        i: cython.int = 0
        while i < _NBACKEND and latency_ms > self.bounds[i]:
            i += 1
        self.duration_buckets[i] += 1
        self.duration_sum_ms += latency_ms
        self.duration_count += 1

    def frame(self, size):
        """One response body chunk of ``size`` bytes from this backend, as it came off the wire."""
        i: cython.int = 0
        while i < _NFRAME and size > _FRAME_BOUNDS[i]:
            i += 1
        self.frame_buckets[i] += 1
        self.frame_sum += size
        self.frame_count += 1

    def outcomes(self):
        """(status, gRPC status or -1, error index, count) per outcome seen; for rendering."""
        return _outcomes(self.keys, self.counts)


# The ``error`` label of recent Linkerd's route families (its names), by ``ERROR_LABELS`` index:
# a response the proxy made itself has no ``http_status`` but one of these.
ROUTE_ERRORS = ("", "FAIL_FAST", "LOAD_SHED", "RESPONSE_HEADERS_TIMEOUT", "IO", "IO", "IO", "UNKNOWN", "UNKNOWN",
                "REQUEST_TIMEOUT", "IDLE_TIMEOUT", "RESET", "CANCEL", "REFUSED", "ENHANCE_YOUR_CALM", "GO_AWAY",
                "UNKNOWN")
