"""Where a request or connection is sent: an immutable, hashable address and what the relays must know (compiled).

Hashable by address, with the hash computed once: it keys connection pools
on every request. ``via_connect`` marks a target named by a ``CONNECT
host:port`` the proxy tunnels itself. ``mesh_port`` non-zero: ``host:port``
is a peer proxy's inbound listener and this is the app port behind it (sent
in the transport header; part of the pool key). ``identity``: the peer
proxy's identity when discovery named one, so the connection is mutual TLS
and the server must prove this name (part of the pool key). ``protocol``:
discovery's hint for the endpoint ("http1", "h2", "opaque" or None).
``service`` and ``endpoint`` are set when a balancer picked this target:
every pick is settled through ``service.settle`` (they take no part in
equality, so balanced and passthrough traffic to one address share a pool).
``stats`` caches the target's metric label set (``proxy.telemetry.labels``),
so a request to a known endpoint finds its counters without a lookup.
"""


class Target:
    def __init__(self, host, port, via_connect=False, mesh_port=0, identity=None, protocol=None, service=None,
                 endpoint=None):
        self.host = host
        self.port = port
        self.via_connect = via_connect
        self.mesh_port = mesh_port
        self.identity = identity
        self.protocol = protocol
        self.service = service
        self.endpoint = endpoint
        self.stats = None
        self._hash = hash((host, port, via_connect, mesh_port, identity))

    @property
    def needs_header(self):
        """A peer proxy's inbound port is addressed directly: a transport header must name the app port.

        When the app port itself is addressed, the peer's iptables redirect
        tells its proxy the port (SO_ORIGINAL_DST) and no header is sent.
        """
        return self.mesh_port != 0 and self.mesh_port != self.port

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if not isinstance(other, Target):
            return NotImplemented
        o: Target = other
        return (self._hash == o._hash and self.port == o.port and self.host == o.host
                and self.via_connect == o.via_connect and self.mesh_port == o.mesh_port
                and self.identity == o.identity)

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __str__(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __repr__(self):
        return (f"Target(host={self.host!r}, port={self.port}, via_connect={self.via_connect}, "
                f"mesh_port={self.mesh_port}, identity={self.identity!r}, protocol={self.protocol!r})")

    def __reduce__(self):
        return (Target, (self.host, self.port, self.via_connect, self.mesh_port, self.identity, self.protocol))
