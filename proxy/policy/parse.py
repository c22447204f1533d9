"""Read a policy file (YAML, multi-document) into a PolicySet: service authority -> ServicePolicy,
plus the inbound authorization policy (``PolicySet.authz``).

Each document is either meshproxy's compact format (a mapping with a
``services``, ``servers`` or ``ports`` key and no ``kind``) or a
Linkerd/Kubernetes object, unchanged: ``ServiceProfile`` (linkerd.io/v1alpha2),
``TrafficSplit`` (split.smi-spec.io/v1alpha1..4), ``HTTPRoute``
(policy.linkerd.io/v1beta1..3 and gateway.networking.k8s.io/v1, with Linkerd's
``retry.linkerd.io/*`` and ``timeout.linkerd.io/*`` annotations). Anything
else raises ``ParseError`` naming the document (index, kind, metadata.name)
and the field path.

Inbound (authorization) documents: ``Server`` (policy.linkerd.io/v1beta1..3),
``ServerAuthorization`` (v1beta1), ``AuthorizationPolicy``,
``MeshTLSAuthentication`` and ``NetworkAuthentication`` (v1alpha1), and
HTTPRoutes and GRPCRoutes whose parentRefs name a Server (a route with Service
parents is outbound; one with both is read as both). As in Linkerd, a Server
with ``proxyProtocol: gRPC`` is routed by its GRPCRoutes, any other HTTP Server
by its HTTPRoutes.

``GRPCRoute`` (gateway.networking.k8s.io/v1, v1alpha2) with Service parents is
outbound policy like an HTTPRoute (_grpc_route.py: method and header matches,
weighted backendRefs, header and mirror filters, Linkerd's ``timeout.linkerd.io/*``
and ``retry.linkerd.io/grpc`` annotations); on a parent that also has
HTTPRoutes, the GRPCRoutes win and the HTTPRoutes are reported, as Linkerd does.

Egress documents (_egress_docs.py): ``EgressNetwork`` (policy.linkerd.io/v1alpha1)
and ``HTTPRoute``, ``GRPCRoute``, ``TLSRoute``, ``TCPRoute`` whose parentRefs
name an EgressNetwork. They are read by _authz_docs.py
and linked by _authz_link.py, which documents how references resolve: a name
that does not resolve in the file is an error. ServiceAccounts become
identities ``<sa>.<ns>.serviceaccount.identity.<trust_domain>``.

The compact inbound keys::

    ports: {http: 8080, admin-http: 9990}   # resolves Server spec.port names (we cannot see the pod spec)
    servers:
      web-http:                             # a Server named web-http in namespace default
        port: 8080                          # a number or a name from ``ports``
        protocol: HTTP/1                    # proxyProtocol: unknown (default), HTTP/1, HTTP/2, gRPC, opaque, TLS
        accessPolicy: deny                  # when no allow entry admits (default deny)
        allow:                              # any entry admits; all keys of an entry must hold
          - name: shop                      # authz_name label (default web-http#0)
            identities: ['*.shop.serviceaccount.identity.cluster.local']
          - unauthenticated: true           # no identity needed ...
            networks: [10.0.0.0/8, {cidr: 10.1.0.0/16, except: [10.1.9.0/24]}]   # ... from these

The compact format::

    services:
      web.shop.svc.cluster.local:80:          # authority as clients address it
        retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
        failureAccrual: {consecutiveFailures: 7, minBackoff: 1s, maxBackoff: 60s}
        backends:                             # weighted split (default: the service itself)
          - {authority: web-v1.shop.svc.cluster.local:80, weight: 90}
          - {authority: web-v2.shop.svc.cluster.local:80, weight: 10}
        routes:                               # first match wins; no match = default route
          - name: get-book
            match: {method: GET, pathRegex: '/books/[^/]+'}   # or a list of matches (any)
            timeout: 2s                       # whole request, retries included
            backendTimeout: 500ms             # one attempt
            idleTimeout: 10s                  # no byte either way for this long
            retry: {http: 5xx, grpc: [unavailable], limit: 2, timeout: 300ms}
            responseClasses:
              - {status: 500-599, isFailure: true}
              - {grpc: [unavailable, 4], isFailure: true}
          - name: canary
            match: {pathPrefix: /api, headers: {x-canary: "1"}, headerRegex: {x-user: 'qa-.*'}}
            isRetryable: true                 # retry what the response classes call failure
            backends: [{authority: web-v2.shop.svc.cluster.local:80, weight: 1}]
            rewrite: {hostname: api.internal, pathPrefix: /v2}   # URLRewrite (or path: replaces it all)
            mirror: {authority: web-next.shop.svc.cluster.local:80, percent: 10}   # or a list; or fraction
      db.shop.svc.cluster.local:5432:
        failover:                             # instead of backends: the primary while ready, else in order
          primary: db-east.shop.svc.cluster.local:5432
          secondaries: [db-west.shop.svc.cluster.local:5432]
          minSuccessRate: 0.9                 # optional, with window (10s) and minRequests (20)

A ``match`` takes one of ``path`` (exact), ``pathPrefix`` or ``pathRegex``,
plus ``method``, ``headers`` (exact) and ``headerRegex``. Durations are
``300ms``, ``10s``, ``1m30s``.

Merging documents for the same service (precedence, highest first):

* routes: compact routes, then ServiceProfile routes (first match wins over
  both); HTTPRoutes are used only when neither exists (Linkerd ignores
  HTTPRoutes when a ServiceProfile exists); the shadowing is reported in
  ``PolicySet.warnings``;
* backends: compact ``backends`` > TrafficSplit > ServiceProfile ``dstOverrides``;
* retry budget: compact > ServiceProfile > defaults (0.2, 10/s, 10 s);
* a service named with a port (``web...:80``, e.g. from an HTTPRoute
  parentRef port) takes budget, backends, accrual and ordered routes it lacks
  from the same service named without a port (ServiceProfile, TrafficSplit).

Two documents of the same rank for one service (two ServiceProfiles, two
TrafficSplits, a service twice in compact documents) are an error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from proxy.policy import _authz_docs, _authz_link, _egress_docs, _gateway, _grpc_route, _linkerd
from proxy.policy._fields import Doc, ParseError
from proxy.policy._linkerd import Piece
from proxy.policy.authz_model import AuthzSet
from proxy.policy.model import (
    Backend,
    Failover,
    FailureAccrual,
    HeaderMatch,
    Mirror,
    PathMatch,
    PolicySet,
    RequestMatch,
    ResponseClass,
    RetryPolicy,
    Rewrite,
    Route,
    ServicePolicy,
)

__all__ = ["ParseError", "parse", "parse_file"]

_SERVICE_KEYS = {"routes", "retryBudget", "backends", "failureAccrual", "failover"}
_ROUTE_KEYS = {"name", "match", "timeout", "backendTimeout", "idleTimeout", "isRetryable", "retry", "responseClasses",
               "backends", "rewrite", "mirror"}
_MATCH_KEYS = {"method", "path", "pathPrefix", "pathRegex", "headers", "headerRegex"}


def _backends(doc: Doc, value: Any, path: str) -> tuple[Backend, ...]:
    out = []
    for i, item in enumerate(doc.seq(value, path)):
        body = doc.mapping(item, f"{path}[{i}]", {"authority", "weight"})
        out.append(Backend(doc.string(body.get("authority"), f"{path}[{i}].authority"),
                           doc.number(body.get("weight", 1), f"{path}[{i}].weight")))
    if out and not any(b.weight > 0 for b in out):
        raise doc.fail(path, "every weight is zero")
    return tuple(out)


def _compact_match(doc: Doc, value: Any, path: str) -> RequestMatch:
    body = doc.mapping(value, path, _MATCH_KEYS)
    paths = [k for k in ("path", "pathPrefix", "pathRegex") if k in body]
    if len(paths) > 1:
        raise doc.fail(path, f"give only one of path, pathPrefix, pathRegex (got {', '.join(paths)})")
    path_match = None
    if paths:
        key = paths[0]
        text = doc.regex(body[key], f"{path}.{key}") if key == "pathRegex" else doc.string(body[key], f"{path}.{key}")
        path_match = PathMatch({"path": "exact", "pathPrefix": "prefix", "pathRegex": "regex"}[key], text)
    headers = []
    for key, kind in (("headers", "exact"), ("headerRegex", "regex")):
        for name, want in doc.mapping(body.get(key, {}), f"{path}.{key}").items():
            field = f"{path}.{key}.{name}"
            if kind == "regex":
                text = doc.regex(want, field)
            else:
                text = doc.string(str(want) if isinstance(want, int) else want, field)
            headers.append(HeaderMatch(str(name).lower(), kind, text))
    method = doc.string(body["method"], f"{path}.method").upper() if "method" in body else None
    return RequestMatch(method=method, path=path_match, headers=tuple(headers))


def _compact_class(doc: Doc, value: Any, path: str) -> ResponseClass:
    body = doc.mapping(value, path, {"status", "grpc", "isFailure"})
    lo = hi = None
    if "status" in body:
        ((lo, hi),) = doc.status_ranges(body["status"], f"{path}.status")[:1] or ((None, None),)
    codes = None
    if "grpc" in body:
        codes = frozenset(doc.grpc_code(c, f"{path}.grpc[{i}]")
                          for i, c in enumerate(doc.seq(body["grpc"], f"{path}.grpc")))
    return ResponseClass(doc.boolean(body.get("isFailure", True), f"{path}.isFailure"), lo, hi, codes)


def _compact_route(doc: Doc, value: Any, path: str, service: str) -> Route:
    body = doc.mapping(value, path, _ROUTE_KEYS)
    raw = body.get("match", {})
    matches = tuple(_compact_match(doc, m, f"{path}.match[{i}]") for i, m in enumerate(doc.seq(raw, f"{path}.match"))) \
        if isinstance(raw, list) else (_compact_match(doc, raw, f"{path}.match"),)
    retry = None
    if "retry" in body:
        r = doc.mapping(body["retry"], f"{path}.retry", {"http", "grpc", "limit", "timeout"})
        retry = RetryPolicy(
            limit=doc.integer(r.get("limit", 1), f"{path}.retry.limit"),
            http_statuses=doc.status_ranges(r["http"], f"{path}.retry.http") if "http" in r else (),
            grpc_codes=frozenset(doc.grpc_code(c, f"{path}.retry.grpc[{i}]")
                                 for i, c in enumerate(doc.seq(r.get("grpc"), f"{path}.retry.grpc"))),
            timeout=doc.duration(r["timeout"], f"{path}.retry.timeout") if "timeout" in r else None,
        )
    rewrite = _compact_rewrite(doc, body["rewrite"], f"{path}.rewrite", matches) if "rewrite" in body else None
    raw_mirrors = body.get("mirror")
    mirrors = tuple(_compact_mirror(doc, m, f"{path}.mirror[{i}]")
                    for i, m in enumerate(doc.seq(raw_mirrors, f"{path}.mirror"))) \
        if isinstance(raw_mirrors, list) else (_compact_mirror(doc, raw_mirrors, f"{path}.mirror"),) \
        if raw_mirrors is not None else ()
    return Route(
        name=doc.string(body.get("name"), f"{path}.name"),
        matches=matches,
        rewrite=rewrite,
        mirrors=mirrors,
        timeout=doc.duration(body["timeout"], f"{path}.timeout") if "timeout" in body else None,
        backend_timeout=(doc.duration(body["backendTimeout"], f"{path}.backendTimeout")
                         if "backendTimeout" in body else None),
        idle_timeout=doc.duration(body["idleTimeout"], f"{path}.idleTimeout") if "idleTimeout" in body else None,
        is_retryable=retry is not None or doc.boolean(body.get("isRetryable", False), f"{path}.isRetryable"),
        retry=retry,
        response_classes=tuple(_compact_class(doc, rc, f"{path}.responseClasses[{i}]")
                               for i, rc in enumerate(doc.seq(body.get("responseClasses"), f"{path}.responseClasses"))),
        backends=_backends(doc, body.get("backends"), f"{path}.backends"),
        source=f"policy/{service}",
    )


def _compact_rewrite(doc: Doc, value: Any, path: str, matches: tuple[RequestMatch, ...]) -> Rewrite:
    """``{hostname, path | pathPrefix}``: ``path`` replaces the whole path, ``pathPrefix`` the matched prefix."""
    body = doc.mapping(value, path, {"hostname", "path", "pathPrefix"})
    if not body:
        raise doc.fail(path, "give hostname, path or pathPrefix")
    if "path" in body and "pathPrefix" in body:
        raise doc.fail(f"{path}.pathPrefix", "give path or pathPrefix, not both")
    path_kind = new_path = None
    if "path" in body or "pathPrefix" in body:
        kind = "ReplaceFullPath" if "path" in body else "ReplacePrefixMatch"
        key = "path" if "path" in body else "pathPrefix"
        path_kind, new_path = _gateway.path_modifier(
            doc, {"type": kind, ("replaceFullPath" if key == "path" else "replacePrefixMatch"): body[key]}, path)
        _gateway.prefix_only(doc, path_kind, matches, f"{path}.pathPrefix")
    return Rewrite(_gateway.hostname(doc, body.get("hostname"), f"{path}.hostname"), path_kind, new_path)


def _compact_mirror(doc: Doc, value: Any, path: str) -> Mirror:
    body = doc.mapping(value, path, {"authority", "percent", "fraction"})
    return Mirror(doc.string(body.get("authority"), f"{path}.authority"), _gateway.mirror_fraction(doc, body, path))


def _compact_failover(doc: Doc, value: Any, path: str) -> Failover:
    body = doc.mapping(value, path, {"primary", "secondaries", "minSuccessRate", "window", "minRequests"})
    primary = doc.string(body.get("primary"), f"{path}.primary")
    secondaries = tuple(doc.string(a, f"{path}.secondaries[{i}]")
                        for i, a in enumerate(doc.seq(body.get("secondaries"), f"{path}.secondaries")))
    if not secondaries:
        raise doc.fail(f"{path}.secondaries", "at least one secondary is required")
    if len({primary, *secondaries}) != 1 + len(secondaries):
        raise doc.fail(f"{path}.secondaries", "a service is listed twice")
    rate = None
    if "minSuccessRate" in body:
        rate = doc.number(body["minSuccessRate"], f"{path}.minSuccessRate")
        if not 0 < rate <= 1:
            raise doc.fail(f"{path}.minSuccessRate", "expected a fraction in (0, 1]")
    window = doc.duration(body.get("window", 10), f"{path}.window")
    if not 1 <= window <= 3600:
        raise doc.fail(f"{path}.window", "expected 1s to 1h")
    return Failover(primary, secondaries, rate, window, doc.integer(body.get("minRequests", 20),
                                                                    f"{path}.minRequests", 1))


def _compact(doc: Doc) -> list[Piece]:
    doc.mapping(doc.body, "", {"services"})
    pieces = []
    for service, body in doc.mapping(doc.body.get("services") or {}, "services").items():
        path = f"services.{service}"
        body = doc.mapping(body or {}, path, _SERVICE_KEYS)
        piece = Piece(str(service), f"policy/{service}", backends_rank=3)
        piece.ordered_routes = tuple(_compact_route(doc, r, f"{path}.routes[{i}]", str(service))
                                     for i, r in enumerate(doc.seq(body.get("routes"), f"{path}.routes")))
        if "retryBudget" in body:
            piece.budget = _linkerd.retry_budget(doc, body["retryBudget"], f"{path}.retryBudget")
        if "backends" in body:
            piece.backends = _backends(doc, body["backends"], f"{path}.backends")
        if "failover" in body:
            if "backends" in body:
                raise doc.fail(f"{path}.failover", "give backends or failover, not both")
            piece.failover = _compact_failover(doc, body["failover"], f"{path}.failover")
            piece.backends = tuple(Backend(a) for a in (piece.failover.primary, *piece.failover.secondaries))
        if "failureAccrual" in body:
            fa = doc.mapping(body["failureAccrual"], f"{path}.failureAccrual",
                             {"consecutiveFailures", "minBackoff", "maxBackoff"})
            piece.accrual = FailureAccrual(
                doc.integer(fa["consecutiveFailures"], f"{path}.failureAccrual.consecutiveFailures", 1)
                if "consecutiveFailures" in fa else None,
                doc.duration(fa["minBackoff"], f"{path}.failureAccrual.minBackoff") if "minBackoff" in fa else None,
                doc.duration(fa["maxBackoff"], f"{path}.failureAccrual.maxBackoff") if "maxBackoff" in fa else None)
        pieces.append(piece)
    return pieces


def _read(doc: Doc, domain: str, inbound: _authz_docs.Collector, egress: _egress_docs.Collector) -> list[Piece]:
    body = doc.body
    if not isinstance(body, dict):
        raise doc.fail("", f"expected a mapping, got {type(body).__name__}")
    if "kind" not in body:
        keys = _authz_docs.COMPACT_KEYS | {"services"}
        if not body.keys() & keys:
            raise doc.fail("kind", "missing (and no compact-format 'services', 'servers' or 'ports' key)")
        unknown = sorted(str(k) for k in body.keys() - keys)
        if unknown:
            raise doc.fail(unknown[0], "unknown field (the compact format has services, servers and ports)")
        inbound.compact(doc)
        return _compact(Doc(doc.index, {"services": body["services"]})) if "services" in body else []
    version = str(body.get("apiVersion", ""))
    known = {"ServiceProfile": _linkerd.PROFILE_VERSIONS, "TrafficSplit": _linkerd.SPLIT_VERSIONS,
             "HTTPRoute": _gateway.ROUTE_VERSIONS, **_authz_docs.VERSIONS, **_egress_docs.VERSIONS}
    if doc.kind not in known:
        raise doc.fail("kind", f"unknown kind (expected {', '.join(known)} or the compact format)")
    if version not in known[doc.kind]:
        raise doc.fail("apiVersion", f"unsupported apiVersion {version!r} for {doc.kind}")
    doc.mapping(body.get("metadata"), "metadata")
    if doc.kind == "ServiceProfile":
        return [_linkerd.service_profile(doc, domain)]
    if doc.kind == "TrafficSplit":
        return [_linkerd.traffic_split(doc, domain)]
    if doc.kind in _authz_docs.VERSIONS:
        inbound.read(doc)
        return []
    if doc.kind in _egress_docs.VERSIONS and (doc.kind != "GRPCRoute" or _egress_docs.egress_parent(doc)) \
            or _egress_docs.egress_parent(doc):
        egress.read(doc, domain)
        return []
    outbound = inbound.server_route(doc)  # the Server parents' part is inbound policy
    if outbound is None:
        return []
    return (_grpc_route.grpc_route if doc.kind == "GRPCRoute" else _gateway.http_route)(outbound, domain)


def parse(text: str, cluster_domain: str = "cluster.local", trust_domain: str = "cluster.local") -> PolicySet:
    """Parse a whole policy file's text; raises ParseError (YAML syntax errors too).

    ``trust_domain`` names ServiceAccount identities in authorization documents.
    """
    try:
        bodies = [b for b in yaml.safe_load_all(text)]
    except yaml.YAMLError as err:
        raise ParseError(0, "", "", "", f"not valid YAML: {err}") from None
    merged: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    inbound = _authz_docs.Collector(trust_domain)
    egress = _egress_docs.Collector()
    for index, body in enumerate(bodies):
        if body is None:
            continue
        doc = Doc(index, body)
        for piece in _read(doc, cluster_domain, inbound, egress):
            _merge(merged.setdefault(piece.authority, {"sources": [], "ranks": {}}), piece, doc)
            warnings.extend(piece.warnings)
    authz, notes = _authz_link.link(inbound)
    return dataclasses.replace(_finish(merged, warnings + notes, authz), egress=egress.link())


def _merge(acc: dict[str, Any], piece: Piece, doc: Doc) -> None:
    acc["sources"].append(piece.source)
    kind = "compact" if piece.backends_rank == 3 else doc.kind
    if kind in ("compact", "ServiceProfile", "TrafficSplit") and kind in acc["ranks"]:
        raise doc.fail("metadata.name" if doc.kind else f"services.{piece.authority}",
                       f"{piece.authority} already has a {kind} ({acc['ranks'][kind]})")
    if kind != "HTTPRoute":
        acc["ranks"][kind] = piece.source
    key = "compact_routes" if kind == "compact" else "profile_routes"
    acc[key] = acc.get(key, ()) + piece.ordered_routes
    acc["gateway"] = acc.get("gateway", ()) + piece.gateway_routes
    if piece.budget is not None and (acc.get("budget_rank", -1) < piece.backends_rank):
        acc["budget"], acc["budget_rank"] = piece.budget, piece.backends_rank
    if piece.backends is not None and acc.get("backends_rank", -1) < piece.backends_rank:
        acc["backends"], acc["backends_rank"] = piece.backends, piece.backends_rank
        acc["failover"] = piece.failover
    if piece.accrual is not None:
        acc["accrual"] = piece.accrual


def _finish(merged: dict[str, dict[str, Any]], warnings: list[str], authz: AuthzSet) -> PolicySet:
    services: dict[str, ServicePolicy] = {}
    for authority, acc in merged.items():
        base = merged.get(authority.rsplit(":", 1)[0]) if ":" in authority else None
        if base is not None and base is not acc:
            for key in ("budget", "backends", "accrual", "compact_routes", "profile_routes"):
                if not acc.get(key) and base.get(key):
                    acc[key] = base[key]
                    if key == "backends":
                        acc["failover"] = base.get("failover")
        ordered = acc.get("compact_routes", ()) + acc.get("profile_routes", ())
        gateway = acc.get("gateway", ())
        grpc = tuple(r for r in gateway if r.source.startswith("GRPCRoute/"))
        if grpc and len(grpc) < len(gateway):
            # Gateway API (GEP-1426), as Linkerd: a GRPCRoute and an HTTPRoute on one parent conflict;
            # the HTTPRoute loses.
            ignored = sorted({r.source for r in gateway if not r.source.startswith("GRPCRoute/")})
            warnings.append(f"{authority}: {', '.join(ignored)} ignored because GRPCRoutes attach to the same parent")
            gateway = grpc
        if ordered and gateway:
            warnings.append(f"{authority}: HTTPRoutes ignored because ServiceProfile/compact routes exist")
        policy = ServicePolicy(authority=authority, ordered_routes=ordered, gateway_routes=gateway,
                               backends=acc.get("backends", ()), failure_accrual=acc.get("accrual"),
                               failover=acc.get("failover"),
                               sources=tuple(acc["sources"]))
        if "budget" in acc:
            policy = dataclasses.replace(policy, retry_budget=acc["budget"])
        services[authority] = policy
    return PolicySet(services, tuple(warnings), authz)


def parse_file(path: str, cluster_domain: str = "cluster.local", trust_domain: str = "cluster.local") -> PolicySet:
    with open(path, encoding="utf-8") as fh:
        return parse(fh.read(), cluster_domain, trust_domain)
