"""What every exchange of one direction shares: its router, its upstreams, its counters and limits.

Built whole by ``proxy/inbound/server.py`` or ``proxy/outbound/server.py``
and never patched afterwards. ``upstreams`` is the http layer's dispatcher
(``proxy/http/upstreams.py``): the core asks it for an up end per attempt
and does not know which relay answers. ``labels``
(``proxy/telemetry/labels.py``) finds the counters of a target or a
connection; ``stats``, ``tcp_src`` and ``tcp_dst`` are the direction's own
label sets, for what is answered before a better one is known.
"""


class ExchangeContext:
    def __init__(self, loop, direction, router, upstreams, stats, tcp_src, tcp_dst, limits, max_in_flight=0,
                 labels=None, access_log=None, tracer=None):
        self.loop = loop
        self.direction = direction
        self.inbound = direction == "inbound"
        self.router = router
        self.upstreams = upstreams
        self.stats = stats
        self.tcp_src = tcp_src
        self.tcp_dst = tcp_dst
        self.labels = labels  # None: every request counts on ``stats`` (test rigs)
        self.response_timeout = limits.response_timeout
        self.max_header_bytes = limits.max_header_bytes
        self.header_timeout = limits.header_timeout
        self.write_high = limits.write_buffer_high
        self.pipeline_buffer = limits.pipeline_buffer_bytes
        self.client_idle_timeout = limits.client_idle_timeout
        self.max_in_flight = max_in_flight  # 0: no limit
        self.in_flight = 0
        self.policy_gen = 0  # bumped when the policy changes: per-connection route caches are stale
        self.draining = False
        # Client connections (HTTP/1 and HTTP/2): the idle sweep and the drain walk them.
        self.connections = set()
        # Finished HTTP/1 exchanges, bounded, for any connection's next request (core.take_exchange).
        self.spare_exchanges = []
        # Called with each finished exchange (proxy/telemetry/accesslog.py); None when the access log is off.
        self.access_log = access_log
        # Spans for requests that carry a sampled trace context (None: tracing off).
        self.tracer = tracer
        # The tap hub (proxy/telemetry/tap.py) while a tap is open, else None: a request asks it nothing.
        self.tap = None
        # Each synthesized or cut response is logged; a context whose answers nobody reads (mirrored copies) says no.
        self.log_errors = True

    def sweep(self):
        """Close idle client connections past their timeout and idle upstream ones (about once a second);
        the other idle client connections let go of what they keep for their next request."""
        now = self.loop.time()
        self.upstreams.sweep(now)
        limit = self.client_idle_timeout
        for conn in list(self.connections):
            if conn.in_flight:
                continue
            if limit > 0 and now - conn.idle_since > limit:
                conn.close()
            else:
                conn.idle()

    def drain(self):
        """Stop keeping connections alive: idle ones close now, busy ones after their response."""
        self.draining = True
        self.upstreams.drain()
        for conn in list(self.connections):
            conn.begin_drain()
