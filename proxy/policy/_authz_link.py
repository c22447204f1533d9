"""Resolve the names inbound policy documents use for each other into one AuthzSet.

References by name (a Server, an HTTPRoute, a MeshTLSAuthentication...) must
resolve within the file: Linkerd silently ignores an authorization whose
target or authentication is missing, but this file is the whole inbound
policy of one pod, so a dangling name is a typo and an error naming the
referring document is more useful than a quiet denial. Label selectors
(ServerAuthorization ``spec.server.selector``, a Namespace target) may
legitimately select nothing: that is a warning.
"""

from __future__ import annotations

from proxy.policy._authz_docs import Collector, RouteRec, Selector, ServerRec
from proxy.policy._fields import Doc
from proxy.policy.authz_model import Authorization, AuthzSet, InboundRoute, RateLimit, Requirement, Server

Key = tuple[str, str]  # (namespace, name)
RouteKey = tuple[str, str, str]  # (kind, namespace, name)
# The routes a Server's proxyProtocol uses, as in Linkerd's policy controller: gRPC Servers their
# GRPCRoutes, every other HTTP Server its HTTPRoutes.
_ROUTE_KIND = {"grpc": "GRPCRoute"}


def link(found: Collector) -> tuple[AuthzSet, list[str]]:
    """The AuthzSet and its warnings; raises ParseError naming the document with a bad reference."""
    warnings = list(found.warnings)
    servers = _servers(found)
    routes = _routes(found, servers)
    server_authz: dict[Key, list[Authorization]] = {key: list(rec.authorizations) for key, rec in servers.items()}
    route_authz: dict[RouteKey, list[Authorization]] = {key: [] for key in routes}

    for sa in found.server_authzs:
        authz = Authorization("serverauthorization", sa.name, sa.requires)
        if isinstance(sa.server, str):
            if (sa.namespace, sa.server) not in servers:
                raise sa.doc.fail("spec.server.name", f"no Server {sa.namespace}/{sa.server} in this policy file")
            server_authz[(sa.namespace, sa.server)].append(authz)
            continue
        chosen = [key for key, rec in servers.items() if key[0] == sa.namespace and selects(sa.server, rec.labels)]
        if not chosen:
            warnings.append(f"ServerAuthorization/{sa.namespace}/{sa.name}: spec.server.selector selects no Server")
        for key in chosen:
            server_authz[key].append(authz)

    for pol in found.policies:
        requires = tuple(_requirement(found, pol.doc, at, ref) for at, ref in pol.refs)
        authz = Authorization("authorizationpolicy", pol.name, requires)
        kind, group, ns, name = pol.target
        if kind == "Server":
            if (ns, name) not in servers:
                raise pol.doc.fail("spec.targetRef.name", f"no Server {ns}/{name} in this policy file")
            server_authz[(ns, name)].append(authz)
        elif kind in ("HTTPRoute", "GRPCRoute"):
            route = routes.get((kind, ns, name))
            if route is None:
                why = "has no Server parent (only inbound routes are authorized)" \
                    if (kind, ns, name) in found.outbound_routes else "is not in this policy file"
                raise pol.doc.fail("spec.targetRef.name", f"{kind} {ns}/{name} {why}")
            if route.group != group:
                raise pol.doc.fail("spec.targetRef.group", f"{kind} {ns}/{name} is in group {route.group}")
            route_authz[(kind, ns, name)].append(authz)
        else:  # Namespace: every Server there, hence every route on them.
            chosen = [key for key in servers if key[0] == name]
            if not chosen:
                warnings.append(f"AuthorizationPolicy/{pol.namespace}/{pol.name}: namespace {name} has no Server")
            for key in chosen:
                server_authz[key].append(authz)

    limits = _rate_limits(found, servers)
    out = []
    for key, rec in servers.items():
        parented = [(rkey, route) for rkey, route in routes.items()
                    if any((ns, name) == key for _, ns, name in route.parents)]
        used = _ROUTE_KIND.get(rec.protocol or "", "HTTPRoute")
        attached = tuple(
            InboundRoute(route.name, route.namespace, route.rules, route.hostnames, tuple(route_authz[rkey]),
                         route.group, route.kind)
            for rkey, route in parented if route.kind == used)
        kinds = sorted({route.kind for _, route in parented})
        if parented and rec.protocol in ("opaque", "tls"):
            warnings.append(f"Server/{key[0]}/{key[1]}: proxyProtocol is not HTTP, its {'s and '.join(kinds)}s "
                            "are unused")
        elif unused := [kind for kind in kinds if kind != used]:
            warnings.append(f"Server/{key[0]}/{key[1]}: its {' and '.join(unused)}s are unused (a Server with "
                            f"proxyProtocol gRPC uses GRPCRoutes, any other HTTP Server HTTPRoutes)")
        out.append(Server(rec.name, rec.namespace, _port_number(found, rec), rec.protocol, rec.access_policy,
                          tuple(server_authz[key]), attached, rate_limit=limits.get(key)))
    return AuthzSet(tuple(out)), warnings


def _rate_limits(found: Collector, servers: dict[Key, ServerRec]) -> dict[Key, RateLimit]:
    """Each HTTPLocalRateLimitPolicy on its Server: one per Server, as Linkerd accepts."""
    out: dict[Key, RateLimit] = {}
    owners: dict[Key, int] = {}
    for rec in found.rate_limits:
        key = (rec.limit.namespace, rec.server)
        if key not in servers:
            raise rec.doc.fail("spec.targetRef.name", f"no Server {key[0]}/{key[1]} in this policy file")
        if key in owners:
            raise rec.doc.fail("spec.targetRef.name", f"Server {key[0]}/{key[1]} already has an "
                                                      f"HTTPLocalRateLimitPolicy (document {owners[key]})")
        owners[key] = rec.doc.index
        out[key] = rec.limit
    return out


def _port_number(found: Collector, rec: ServerRec) -> int:
    if isinstance(rec.port, int):
        return rec.port
    if rec.port not in found.ports:
        # The pod spec that names ports is not ours to read: names come from a compact `ports` mapping.
        raise rec.doc.fail(f"{rec.at}.port", f"named port {rec.port!r} is not defined: add "
                                             f"`ports: {{{rec.port}: <number>}}` in a compact document")
    return found.ports[rec.port][0]


def _servers(found: Collector) -> dict[Key, ServerRec]:
    servers: dict[Key, ServerRec] = {}
    owners: dict[int, ServerRec] = {}
    for rec in found.servers:
        number = _port_number(found, rec)
        other = owners.get(number)
        if other is not None:
            # podSelector is not evaluated (the file describes one pod), so two Servers
            # on one port could never both apply.
            raise rec.doc.fail(f"{rec.at}.port", f"port {number} already belongs to Server "
                                                 f"{other.namespace}/{other.name} (document {other.doc.index})")
        owners[number] = rec
        servers[(rec.namespace, rec.name)] = rec
    return servers


def _routes(found: Collector, servers: dict[Key, ServerRec]) -> dict[RouteKey, RouteRec]:
    routes: dict[RouteKey, RouteRec] = {}
    for rec in found.routes:
        for index, ns, name in rec.parents:
            if ns != rec.namespace:
                raise rec.doc.fail("spec.parentRefs", f"parentRefs[{index}]: a Server parent must be in the "
                                                      f"route's namespace {rec.namespace}")
            if (ns, name) not in servers:
                raise rec.doc.fail("spec.parentRefs", f"parentRefs[{index}]: no Server {ns}/{name} in this policy file")
        if rec.backends_at and not rec.service_parent:
            raise rec.doc.fail(rec.backends_at, "backendRefs need a Service parent (an inbound route serves this pod)")
        routes[(rec.kind, rec.namespace, rec.name)] = rec
    return routes


def _requirement(found: Collector, doc: Doc, at: str, ref: tuple[str, str, str] | Requirement) -> Requirement:
    if isinstance(ref, Requirement):
        return ref
    req = found.authentications.get(ref)
    if req is None:
        kind, ns, name = ref
        raise doc.fail(f"{at}.name", f"no {kind} {ns}/{name} in this policy file")
    return req


def selects(selector: Selector, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics: matchLabels and every expression must hold."""
    match_labels, exprs = selector
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for key, op, values in exprs:
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
