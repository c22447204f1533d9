"""Frozen values describing inbound authorization: servers (ports), their HTTP routes, who may use them.

parse.py builds an ``AuthzSet`` from Linkerd's policy documents with every
reference already resolved (an authorization sits on the server or route it
targets); authz.py compiles it into per-port matchers. Nothing here matches
anything: these are the words, authz.py is the grammar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.record import record

if TYPE_CHECKING:  # model.py imports this module for PolicySet: no import back at run time.
    from proxy.policy.model import Route

# Linkerd's default inbound policies (proxy.defaultInboundPolicy, Server v1beta3
# accessPolicy). ``audit`` admits everyone but labels the decision so would-be
# denials show up in metrics.
ACCESS_POLICIES = (
    "all-unauthenticated", "all-authenticated", "cluster-unauthenticated", "cluster-authenticated", "deny", "audit",
)

# The API group of Linkerd's policy documents (the ``*_group`` metric labels of what they define).
POLICY_GROUP = "policy.linkerd.io"

# Server spec.proxyProtocol -> the name the data plane uses (None: detect).
PROTOCOLS = {"unknown": None, "HTTP/1": "http1", "HTTP/2": "h2", "gRPC": "grpc", "opaque": "opaque", "TLS": "tls"}


@record
class Network:
    """Client addresses in ``cidr`` but in none of ``exclude`` (normalized CIDR strings, same IP version)."""

    cidr: str
    exclude: tuple[str, ...] = ()


ALL_NETWORKS = (Network("0.0.0.0/0"), Network("::/0"))


@record
class Requirement:
    """One condition on the client; ``kind`` says which field matters.

    * ``identity``: a verified mesh identity matching one of ``identities``:
      an exact name, ``*.<suffix>`` (any name ending in ``.<suffix>``) or ``*``
      (any authenticated client);
    * ``tls``: the connection is mesh TLS terminated by us, with or without a
      client identity (ServerAuthorization ``unauthenticatedTLS``);
    * ``network``: the client address is in one of ``networks``.
    """

    kind: str
    identities: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()


@record
class Authorization:
    """Admits a client meeting every one of ``requires`` (none: every client).

    ``kind`` and ``name`` become the ``authz_kind``/``authz_name`` metric labels:
    ``serverauthorization``, ``authorizationpolicy`` or ``compact`` and the
    document's name; ``group`` the ``authz_group`` (Linkerd's documents are
    ``policy.linkerd.io``; the compact format has none).
    """

    kind: str
    name: str
    requires: tuple[Requirement, ...] = ()

    @property
    def group(self) -> str:
        return "" if self.kind == "compact" else POLICY_GROUP


@record
class InboundRoute:
    """An HTTPRoute or GRPCRoute (``kind``) attached to a Server: requests matching ``rules`` are this route's.

    ``rules`` are model.Route values (one per HTTPRoute rule, ``order`` set) so
    routes.RouteTable applies Gateway API precedence across all routes of a
    server; their ``source`` is ``<kind>/<ns>/<name>`` for every rule.
    ``hostnames`` empty means any Host. ``authorizations`` target this route only.
    """

    name: str
    namespace: str
    rules: tuple[Route, ...]
    hostnames: tuple[str, ...] = ()
    authorizations: tuple[Authorization, ...] = ()
    # The ``route_group``/``route_kind`` labels: the document's API group and Kubernetes kind, as
    # Linkerd's policy controller names an inbound route's resource.
    group: str = "policy.linkerd.io"
    kind: str = "HTTPRoute"

    @property
    def source(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@record
class RateLimit:
    """An HTTPLocalRateLimitPolicy on a Server: requests per second in ``total`` (all clients), per
    client ``identity`` (unmeshed clients share one bucket), and ``overrides``: (rate, identities),
    each entry one bucket shared by its identities. None: no such limit."""

    name: str
    namespace: str
    total: int | None = None
    identity: int | None = None
    overrides: tuple[tuple[int, tuple[str, ...]], ...] = ()


@record
class Server:
    """One port of this pod under explicit policy.

    ``authorizations`` cover the whole server (every route). With no
    authorization admitting a client, ``access_policy`` decides: ``deny``
    unless a v1beta3 Server says otherwise, so a Server nobody authorizes
    denies everything, as in Linkerd. ``routes`` non-empty means a request
    matching none of them is refused.
    """

    name: str
    namespace: str
    port: int
    protocol: str | None = None
    access_policy: str = "deny"
    authorizations: tuple[Authorization, ...] = ()
    routes: tuple[InboundRoute, ...] = ()
    kind: str = "server"
    rate_limit: RateLimit | None = None


@record
class AuthzSet:
    """Every Server of this pod's policy file, references resolved; ports are distinct."""

    servers: tuple[Server, ...] = ()
