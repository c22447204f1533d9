"""Readers for Linkerd's inbound policy documents and the compact ``servers``/``ports`` keys.

Each reader checks one document and records what it says. Nothing is resolved
here, because a document may name another that comes later in the file:
_authz_link.py resolves the names once every document has been read.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from proxy.identity import names
from proxy.policy import _ratelimit_docs
from proxy.policy._fields import Doc
from proxy.policy._gateway import _match as route_match
from proxy.policy._grpc_route import grpc_match as _grpc_match
from proxy.policy.authz_model import ACCESS_POLICIES, ALL_NETWORKS, PROTOCOLS, Authorization, Network, Requirement
from proxy.policy.model import Route

POLICY_GROUP = "policy.linkerd.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
CORE_GROUPS = ("", "core")
VERSIONS = {
    "Server": {f"{POLICY_GROUP}/v1beta1", f"{POLICY_GROUP}/v1beta2", f"{POLICY_GROUP}/v1beta3"},
    "ServerAuthorization": {f"{POLICY_GROUP}/v1beta1"},
    "AuthorizationPolicy": {f"{POLICY_GROUP}/v1alpha1"},
    "MeshTLSAuthentication": {f"{POLICY_GROUP}/v1alpha1"},
    "NetworkAuthentication": {f"{POLICY_GROUP}/v1alpha1"},
    _ratelimit_docs.KIND: _ratelimit_docs.VERSIONS,
}
COMPACT_KEYS = {"servers", "ports"}

_DNS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")  # Kubernetes IANA_SVC_NAME
_SELECTOR_OPS = ("In", "NotIn", "Exists", "DoesNotExist")

# matchLabels, then (key, operator, values) requirements: all must hold.
Selector = tuple[dict[str, str], tuple[tuple[str, str, tuple[str, ...]], ...]]


# ---- what the documents said ---------------------------------------------------


@dataclass
class ServerRec:
    doc: Doc
    at: str  # field path of the server's body: "spec" or "servers.<name>"
    name: str
    namespace: str
    labels: dict[str, str]
    port: int | str
    protocol: str | None
    access_policy: str
    authorizations: tuple[Authorization, ...] = ()


@dataclass
class RouteRec:
    doc: Doc
    kind: str  # HTTPRoute or GRPCRoute
    name: str
    namespace: str
    group: str
    parents: list[tuple[int, str, str]]  # (parentRefs index, namespace, Server name)
    hostnames: tuple[str, ...]
    rules: tuple[Route, ...]
    backends_at: str | None  # first rule with backendRefs (an error unless a Service parent exists)
    service_parent: bool


@dataclass
class ServerAuthzRec:
    doc: Doc
    name: str
    namespace: str
    server: str | Selector
    requires: tuple[Requirement, ...]


@dataclass
class PolicyRec:
    doc: Doc
    name: str
    namespace: str
    target: tuple[str, str, str, str]  # kind, group, namespace, name
    refs: list[tuple[str, tuple[str, str, str] | Requirement]]  # field path, (kind, ns, name) or a resolved one


@dataclass
class Collector:
    """Everything the inbound documents of one file said, in document order."""

    trust_domain: str
    servers: list[ServerRec] = field(default_factory=list)
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)  # port name -> (number, document index)
    routes: list[RouteRec] = field(default_factory=list)
    outbound_routes: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, namespace, name)
    server_authzs: list[ServerAuthzRec] = field(default_factory=list)
    policies: list[PolicyRec] = field(default_factory=list)
    authentications: dict[tuple[str, str, str], Requirement] = field(default_factory=dict)
    rate_limits: list[_ratelimit_docs.RateLimitRec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seen: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A bad trust domain is the caller's mistake, not a document's: say so before reading any.
        names.check_trust_domain(self.trust_domain)

    def read(self, doc: Doc) -> None:
        """One Linkerd policy document (kind in VERSIONS, apiVersion already checked)."""
        doc.string(doc.name, "metadata.name")
        self._once(doc, doc.kind)
        {
            "Server": self._server, "ServerAuthorization": self._server_authz,
            "AuthorizationPolicy": self._policy, "MeshTLSAuthentication": self._mesh_authn,
            "NetworkAuthentication": self._network_authn,
            _ratelimit_docs.KIND: self._rate_limit,
        }[doc.kind](doc)

    def _rate_limit(self, doc: Doc) -> None:
        self.rate_limits.append(_ratelimit_docs.read(self, doc, namespace(doc)))

    def _once(self, doc: Doc, kind: str, name: str | None = None, at: str = "metadata.name") -> None:
        key = (kind, namespace(doc), doc.name if name is None else name)
        if key in self.seen:
            raise doc.fail(at, f"{kind} {key[1]}/{key[2]} is already defined (document {self.seen[key]})")
        self.seen[key] = doc.index

    def sa_identity(self, doc: Doc, name: Any, ns: Any, at: str) -> str:
        """A ServiceAccount's mesh identity: ``<sa>.<ns>.serviceaccount.identity.<trust domain>``."""
        try:
            return names.make(doc.string(name, f"{at}.name"), str(ns), self.trust_domain).name
        except ValueError as err:
            raise doc.fail(at, str(err)) from None

    def namespace_identities(self, doc: Doc, ns: Any, at: str) -> str:
        """Every ServiceAccount of a namespace, as an identity suffix pattern."""
        try:
            names.make("any", str(ns), self.trust_domain)  # for its namespace check
        except ValueError as err:
            raise doc.fail(at, str(err)) from None
        return f"*.{ns}.serviceaccount.identity.{self.trust_domain}"

    # ---- Server --------------------------------------------------------------

    def _server(self, doc: Doc) -> None:
        version = doc.body["apiVersion"].rsplit("/", 1)[1]
        raw = doc.mapping(doc.body.get("spec"), "spec")
        if "accessPolicy" in raw and version != "v1beta3":
            raise doc.fail("spec.accessPolicy", f"needs apiVersion {POLICY_GROUP}/v1beta3")
        allowed = {"podSelector", "port", "proxyProtocol"}
        if version != "v1beta1":
            allowed |= {"externalWorkloadSelector", "accessPolicy"}
        spec = doc.mapping(raw, "spec", allowed)
        # A sidecar sees only its own pod: this file was written for it, so whatever
        # selects the Server selects us. Selectors are checked for shape and ignored.
        selectors = [k for k in ("podSelector", "externalWorkloadSelector") if k in spec]
        if len(selectors) != 1:
            raise doc.fail("spec.podSelector", "give exactly one of podSelector, externalWorkloadSelector")
        selector(doc, spec[selectors[0]], f"spec.{selectors[0]}")
        meta = doc.mapping(doc.body.get("metadata"), "metadata")
        labels = {str(k): str(v) for k, v in doc.mapping(meta.get("labels") or {}, "metadata.labels").items()}
        self.servers.append(ServerRec(
            doc, "spec", doc.name, namespace(doc), labels, port(doc, spec.get("port"), "spec.port"),
            protocol(doc, spec.get("proxyProtocol", "unknown"), "spec.proxyProtocol"),
            access_policy(doc, spec.get("accessPolicy", "deny"), "spec.accessPolicy")))

    # ---- ServerAuthorization ---------------------------------------------------

    def _server_authz(self, doc: Doc) -> None:
        spec = doc.mapping(doc.body.get("spec"), "spec", {"server", "client"})
        ref = doc.mapping(spec.get("server"), "spec.server", {"name", "selector"})
        if ("name" in ref) == ("selector" in ref):
            raise doc.fail("spec.server", "give exactly one of name, selector")
        target = doc.string(ref["name"], "spec.server.name") if "name" in ref else \
            selector(doc, ref["selector"], "spec.server.selector")
        client = doc.mapping(spec.get("client"), "spec.client", {"meshTLS", "unauthenticated", "networks"})
        unauthenticated = doc.boolean(client.get("unauthenticated", False), "spec.client.unauthenticated")
        if ("meshTLS" in client) == unauthenticated:
            raise doc.fail("spec.client", "give exactly one of meshTLS, unauthenticated: true")
        requires: list[Requirement] = []
        if "networks" in client:
            nets = networks(doc, client["networks"], "spec.client.networks")
            if nets != ALL_NETWORKS:
                requires.append(Requirement("network", networks=nets))
        # Without networks Linkerd lets the server choose; we choose every address.
        if "meshTLS" in client:
            requires.append(self._mesh_tls(doc, client["meshTLS"], "spec.client.meshTLS"))
        self.server_authzs.append(ServerAuthzRec(doc, doc.name, namespace(doc), target, tuple(requires)))

    def _mesh_tls(self, doc: Doc, value: Any, at: str) -> Requirement:
        mesh = doc.mapping(value, at, {"unauthenticatedTLS", "identities", "serviceAccounts"})
        tls = doc.boolean(mesh.get("unauthenticatedTLS", False), f"{at}.unauthenticatedTLS")
        ids = [identity(doc, v, f"{at}.identities[{i}]") for i, v in enumerate(doc.seq(mesh.get("identities"),
                                                                                         f"{at}.identities"))]
        for i, sa in enumerate(doc.seq(mesh.get("serviceAccounts"), f"{at}.serviceAccounts")):
            p = f"{at}.serviceAccounts[{i}]"
            body = doc.mapping(sa, p, {"name", "namespace"})
            ids.append(self.sa_identity(doc, body.get("name"), body.get("namespace") or namespace(doc), p))
        if tls and ids:
            raise doc.fail(at, "unauthenticatedTLS excludes identities and serviceAccounts")
        if not tls and not ids:
            raise doc.fail(at, "give identities, serviceAccounts or unauthenticatedTLS: true")
        return Requirement("tls") if tls else Requirement("identity", identities=tuple(ids))

    # ---- AuthorizationPolicy and its authentications ---------------------------------

    def _policy(self, doc: Doc) -> None:
        spec = doc.mapping(doc.body.get("spec"), "spec", {"targetRef", "requiredAuthenticationRefs"})
        ref = doc.mapping(spec.get("targetRef"), "spec.targetRef", {"group", "kind", "name", "namespace"})
        kind, group = ref.get("kind"), str(ref.get("group") or "")
        groups = {"Server": (POLICY_GROUP,), "HTTPRoute": (POLICY_GROUP, GATEWAY_GROUP), "GRPCRoute": (GATEWAY_GROUP,),
                  "Namespace": CORE_GROUPS}
        if kind not in groups:
            raise doc.fail("spec.targetRef.kind", f"expected Server, HTTPRoute, GRPCRoute or Namespace, got {kind!r}")
        if group not in groups[kind]:
            raise doc.fail("spec.targetRef.group", f"{kind} is in group {' or '.join(groups[kind]) or 'core'}")
        name = doc.string(ref.get("name"), "spec.targetRef.name")
        target = (kind, group, str(ref.get("namespace") or namespace(doc)), name)
        if "requiredAuthenticationRefs" not in spec:
            raise doc.fail("spec.requiredAuthenticationRefs", "required (an empty list admits every client)")
        refs: list[tuple[str, tuple[str, str, str] | Requirement]] = []
        for i, item in enumerate(doc.seq(spec["requiredAuthenticationRefs"], "spec.requiredAuthenticationRefs")):
            p = f"spec.requiredAuthenticationRefs[{i}]"
            body = doc.mapping(item, p, {"group", "kind", "name", "namespace"})
            kind, group = body.get("kind"), str(body.get("group") or "")
            ns = body.get("namespace") or namespace(doc)
            if kind in ("MeshTLSAuthentication", "NetworkAuthentication"):
                if group != POLICY_GROUP:
                    raise doc.fail(f"{p}.group", f"{kind} is in group {POLICY_GROUP}")
                refs.append((p, (kind, str(ns), doc.string(body.get("name"), f"{p}.name"))))
            elif kind == "ServiceAccount" and group in CORE_GROUPS:
                refs.append((p, Requirement("identity", identities=(self.sa_identity(doc, body.get("name"), ns, p),))))
            else:
                raise doc.fail(f"{p}.kind", "expected MeshTLSAuthentication, NetworkAuthentication or ServiceAccount"
                                            f" (core group), got {kind!r}")
        self.policies.append(PolicyRec(doc, doc.name, namespace(doc), target, refs))

    def _mesh_authn(self, doc: Doc) -> None:
        spec = doc.mapping(doc.body.get("spec"), "spec", {"identities", "identityRefs"})
        ids = [identity(doc, v, f"spec.identities[{i}]")
               for i, v in enumerate(doc.seq(spec.get("identities"), "spec.identities"))]
        for i, item in enumerate(doc.seq(spec.get("identityRefs"), "spec.identityRefs")):
            p = f"spec.identityRefs[{i}]"
            body = doc.mapping(item, p, {"group", "kind", "name", "namespace"})
            kind, group = body.get("kind"), str(body.get("group") or "")
            if group not in CORE_GROUPS or kind not in ("ServiceAccount", "Namespace"):
                raise doc.fail(f"{p}.kind", f"expected ServiceAccount or Namespace (core group), got {kind!r}")
            if kind == "Namespace":
                ids.append(self.namespace_identities(doc, doc.string(body.get("name"), f"{p}.name"), p))
            elif body.get("name") is None:  # the CRD: no name means every ServiceAccount of the namespace
                ids.append(self.namespace_identities(doc, body.get("namespace") or namespace(doc), p))
            else:
                ids.append(self.sa_identity(doc, body["name"], body.get("namespace") or namespace(doc), p))
        if not ids:
            raise doc.fail("spec", "give identities or identityRefs")
        self.authentications[(doc.kind, namespace(doc), doc.name)] = Requirement("identity", identities=tuple(ids))

    def _network_authn(self, doc: Doc) -> None:
        spec = doc.mapping(doc.body.get("spec"), "spec", {"networks"})
        if "networks" not in spec:
            raise doc.fail("spec.networks", "required")
        self.authentications[(doc.kind, namespace(doc), doc.name)] = Requirement(
            "network", networks=networks(doc, spec["networks"], "spec.networks"))

    # ---- HTTPRoute and GRPCRoute with Server parents ------------------------------

    def server_route(self, doc: Doc) -> Doc | None:
        """Take the inbound part of an HTTPRoute or GRPCRoute; return what the outbound reader should see, if anything.

        A route without Server parents is returned unchanged. One with Server
        parents is recorded; if it also has Service parents, the same document
        minus the Server parents is returned for the outbound reader.
        """
        spec = doc.body.get("spec")
        refs = spec.get("parentRefs") if isinstance(spec, dict) else None
        if not isinstance(refs, list) or not any(isinstance(r, dict) and r.get("kind") == "Server" for r in refs):
            self.outbound_routes.add((doc.kind, namespace(doc), doc.name))
            return doc
        doc.string(doc.name, "metadata.name")
        self._once(doc, doc.kind)
        spec = doc.mapping(spec, "spec", {"parentRefs", "hostnames", "rules"})
        parents: list[tuple[int, str, str]] = []
        others: list[Any] = []
        service = False
        for i, ref in enumerate(refs):
            p = f"spec.parentRefs[{i}]"
            body = doc.mapping(ref, p, {"group", "kind", "name", "namespace", "port", "sectionName"})
            name = doc.string(body.get("name"), f"{p}.name")
            if body.get("kind") != "Server":
                if "port" in body:
                    doc.integer(body["port"], f"{p}.port", 1, 65535)
                service = service or (body.get("kind") == "Service" and body.get("group", "core") in CORE_GROUPS)
                others.append(ref)
                continue
            if body.get("group") != POLICY_GROUP:
                raise doc.fail(f"{p}.group", f"a Server parent is in group {POLICY_GROUP}")
            for key in ("port", "sectionName"):
                if key in body:
                    raise doc.fail(f"{p}.{key}", "not used with a Server parent (the Server names the port)")
            parents.append((i, str(body.get("namespace") or namespace(doc)), name))
        ident = f"{namespace(doc)}/{doc.name}"
        hostnames = tuple(hostname(doc, h, f"spec.hostnames[{i}]")
                          for i, h in enumerate(doc.seq(spec.get("hostnames"), "spec.hostnames")))
        rules, backends_at = self._inbound_rules(doc, spec, ident)
        group = str(doc.body.get("apiVersion", "")).rsplit("/", 1)[0]
        self.routes.append(RouteRec(doc, doc.kind, doc.name, namespace(doc), group, parents, hostnames, rules,
                                    backends_at, service))
        if service:
            self.outbound_routes.add((doc.kind, namespace(doc), doc.name))
            body = dict(doc.body, spec=dict(spec, parentRefs=others))
            return Doc(doc.index, body)
        if others:
            self.warnings.append(f"{doc.kind}/{ident}: parents other than Server and Service ignored")
        return None

    def _inbound_rules(self, doc: Doc, spec: dict, ident: str) -> tuple[tuple[Route, ...], str | None]:
        stamp = str((doc.body.get("metadata") or {}).get("creationTimestamp") or "")
        grpc = doc.kind == "GRPCRoute"
        # A GRPCRoute matches gRPC's service and method (as POST /<service>/<method>) and has no timeouts.
        keys = {"name", "matches", "filters", "backendRefs"} | (set() if grpc else {"timeouts"})
        read_match = _grpc_match if grpc else route_match
        rules: list[Route] = []
        backends_at: str | None = None
        ignored: set[str] = set()
        for i, item in enumerate(doc.seq(spec.get("rules"), "spec.rules") or [{}]):
            p = f"spec.rules[{i}]"
            rule = doc.mapping(item, p, keys)
            if rule.get("backendRefs") and backends_at is None:
                backends_at = f"{p}.backendRefs"
            ignored.update(k for k in ("filters", "timeouts") if rule.get(k))
            rules.append(Route(
                name=str(rule.get("name") or f"{ident}#{i}"),
                matches=tuple(read_match(doc, m, f"{p}.matches[{j}]")
                              for j, m in enumerate(doc.seq(rule.get("matches"), f"{p}.matches"))),
                source=f"{doc.kind}/{ident}",
                order=(stamp, ident, i),
            ))
        if ignored:
            # Authorization is what inbound routes are for here; the data plane does not apply these.
            self.warnings.append(f"{doc.kind}/{ident}: {' and '.join(sorted(ignored))} not applied on inbound routes")
        return tuple(rules), backends_at

    # ---- the compact format ------------------------------------------------------

    def compact(self, doc: Doc) -> None:
        """The ``servers`` and ``ports`` keys of a compact document (see parse.py's docstring)."""
        for name, number in doc.mapping(doc.body.get("ports") or {}, "ports").items():
            at = f"ports.{name}"
            if not isinstance(name, str) or not _is_port_name(name):
                raise doc.fail(at, "a port name is up to 15 lowercase letters, digits and '-', with a letter")
            number = doc.integer(number, at, 1, 65535)
            if name in self.ports and self.ports[name][0] != number:
                raise doc.fail(at, f"already {self.ports[name][0]} (document {self.ports[name][1]})")
            self.ports[name] = (number, doc.index)
        for name, body in doc.mapping(doc.body.get("servers") or {}, "servers").items():
            at = f"servers.{name}"
            body = doc.mapping(body, at, {"port", "protocol", "accessPolicy", "allow"})
            self._once(doc, "Server", str(name), at)
            allow = tuple(self._allow(doc, item, f"{at}.allow[{i}]", f"{name}#{i}")
                          for i, item in enumerate(doc.seq(body.get("allow"), f"{at}.allow")))
            self.servers.append(ServerRec(
                doc, at, str(name), "default", {}, port(doc, body.get("port"), f"{at}.port"),
                protocol(doc, body.get("protocol", "unknown"), f"{at}.protocol"),
                access_policy(doc, body.get("accessPolicy", "deny"), f"{at}.accessPolicy"), allow))

    def _allow(self, doc: Doc, value: Any, at: str, default_name: str) -> Authorization:
        body = doc.mapping(value, at, {"name", "identities", "networks", "unauthenticated"})
        ids = tuple(identity(doc, v, f"{at}.identities[{i}]")
                    for i, v in enumerate(doc.seq(body.get("identities"), f"{at}.identities")))
        unauthenticated = doc.boolean(body.get("unauthenticated", False), f"{at}.unauthenticated")
        if bool(ids) == unauthenticated:
            raise doc.fail(at, "give identities or unauthenticated: true (one of them)")
        requires: tuple[Requirement, ...] = (Requirement("identity", identities=ids),) if ids else ()
        if "networks" in body:
            requires += (Requirement("network", networks=networks(doc, body["networks"], f"{at}.networks", True)),)
        name = doc.string(body["name"], f"{at}.name") if "name" in body else default_name
        return Authorization("compact", name, requires)


# ---- field readers ---------------------------------------------------------------


def namespace(doc: Doc) -> str:
    return doc.namespace or "default"


def identity(doc: Doc, value: Any, at: str) -> str:
    """A mesh identity as written in policy: a DNS name, ``*.<suffix>`` or ``*``; returned lower case."""
    text = doc.string(value, at).strip().lower()
    body = text[2:] if text.startswith("*.") else text
    if text != "*" and (len(body) > 253 or not _DNS_NAME.fullmatch(body)):
        raise doc.fail(at, f"bad identity {value!r} (expected a DNS name, *.<suffix> or *)")
    return text


def hostname(doc: Doc, value: Any, at: str) -> str:
    text = doc.string(value, at).lower()
    body = text[2:] if text.startswith("*.") else text
    if len(body) > 253 or not _DNS_NAME.fullmatch(body):
        raise doc.fail(at, f"bad hostname {value!r} (expected a DNS name or *.<suffix>)")
    return text


def cidr(doc: Doc, value: Any, at: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = doc.string(value, at).strip()
    try:
        return ipaddress.ip_network(text)  # strict: 10.0.0.1/8 is a typo more often than a network
    except ValueError as err:
        raise doc.fail(at, f"bad CIDR: {err}") from None


def networks(doc: Doc, value: Any, at: str, compact: bool = False) -> tuple[Network, ...]:
    """``[{cidr, except: [...]}]``; the compact format also takes a bare CIDR string per entry."""
    out: list[Network] = []
    for i, item in enumerate(doc.seq(value, at)):
        p = f"{at}[{i}]"
        body = {"cidr": item} if compact and isinstance(item, str) else doc.mapping(item, p, {"cidr", "except"})
        net = cidr(doc, body.get("cidr"), f"{p}.cidr")
        excluded: list[str] = []
        for j, sub in enumerate(doc.seq(body.get("except"), f"{p}.except")):
            part = cidr(doc, sub, f"{p}.except[{j}]")
            if part.version != net.version or not part.subnet_of(net):  # type: ignore[arg-type]
                raise doc.fail(f"{p}.except[{j}]", f"{part} is not inside {net}")
            excluded.append(str(part))
        out.append(Network(str(net), tuple(excluded)))
    if not out:
        raise doc.fail(at, "empty: no client address could match")
    return tuple(out)


def selector(doc: Doc, value: Any, at: str) -> Selector:
    body = doc.mapping(value if value is not None else {}, at, {"matchLabels", "matchExpressions"})
    labels = {str(k): str(v) for k, v in doc.mapping(body.get("matchLabels") or {}, f"{at}.matchLabels").items()}
    exprs: list[tuple[str, str, tuple[str, ...]]] = []
    for i, item in enumerate(doc.seq(body.get("matchExpressions"), f"{at}.matchExpressions")):
        p = f"{at}.matchExpressions[{i}]"
        expr = doc.mapping(item, p, {"key", "operator", "values"})
        op = expr.get("operator")
        if op not in _SELECTOR_OPS:
            raise doc.fail(f"{p}.operator", f"expected one of {', '.join(_SELECTOR_OPS)}, got {op!r}")
        values = tuple(str(v) for v in doc.seq(expr.get("values"), f"{p}.values"))
        if (op in ("In", "NotIn")) != bool(values):
            raise doc.fail(f"{p}.values", "required with In/NotIn, not allowed with Exists/DoesNotExist")
        exprs.append((doc.string(expr.get("key"), f"{p}.key"), str(op), values))
    return labels, tuple(exprs)


def port(doc: Doc, value: Any, at: str) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        return doc.integer(value, at, 1, 65535)
    if isinstance(value, str) and _is_port_name(value):
        return value
    raise doc.fail(at, f"expected a port number (1-65535) or a port name, got {value!r}")


def protocol(doc: Doc, value: Any, at: str) -> str | None:
    if value not in PROTOCOLS:
        raise doc.fail(at, f"unknown protocol {value!r} (use {', '.join(PROTOCOLS)})")
    return PROTOCOLS[value]


def access_policy(doc: Doc, value: Any, at: str) -> str:
    if value not in ACCESS_POLICIES:
        raise doc.fail(at, f"unknown policy {value!r} (use {', '.join(ACCESS_POLICIES)})")
    return str(value)


def _is_port_name(text: str) -> bool:
    return bool(_PORT_NAME.fullmatch(text)) and any(c.isalpha() for c in text)
