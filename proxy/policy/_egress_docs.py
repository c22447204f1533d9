"""Readers for egress documents: Linkerd's EgressNetwork and the Gateway API routes attached to one.

``EgressNetwork`` (policy.linkerd.io/v1alpha1) and ``HTTPRoute``,
``GRPCRoute``, ``TLSRoute`` and ``TCPRoute`` documents whose parentRefs name
an EgressNetwork (group policy.linkerd.io). A route's backendRefs name either
the EgressNetwork itself (the original destination, as Linkerd's egress
guide writes them) or Services. Names resolve within the file once every
document has been read (``link``); a dangling one is an error naming the
route, as for the inbound documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from proxy.policy import _gateway
from proxy.policy._authz_docs import networks
from proxy.policy._fields import Doc
from proxy.policy._grpc_route import grpc_match
from proxy.policy._linkerd import service_authority
from proxy.policy.authz_model import POLICY_GROUP
from proxy.policy.egress_model import ORIGINAL_DST, TRAFFIC_POLICIES, EgressNetwork, EgressRoute
from proxy.policy.model import Backend, Route

GATEWAY = "gateway.networking.k8s.io"
NETWORK_VERSIONS = {f"{POLICY_GROUP}/v1alpha1"}
VERSIONS = {
    "EgressNetwork": NETWORK_VERSIONS,
    "GRPCRoute": {f"{GATEWAY}/v1", f"{GATEWAY}/v1alpha2"},
    "TLSRoute": {f"{GATEWAY}/v1alpha2", f"{GATEWAY}/v1alpha3"},
    "TCPRoute": {f"{GATEWAY}/v1alpha2"},
}
_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def egress_parent(doc: Doc) -> bool:
    """Whether a route document names an EgressNetwork among its parentRefs."""
    spec = doc.body.get("spec")
    refs = spec.get("parentRefs") if isinstance(spec, dict) else None
    return isinstance(refs, list) and any(isinstance(r, dict) and r.get("kind") == "EgressNetwork" for r in refs)


@dataclass
class _RouteRec:
    doc: Doc
    parents: list[tuple[str, str, str, int | None]]  # (field path, namespace, name, port)
    self_refs: list[tuple[str, str, str]]  # backendRefs naming an EgressNetwork: (field path, namespace, name)
    route: EgressRoute


@dataclass
class Collector:
    networks: dict[tuple[str, str], tuple[Doc, EgressNetwork]] = field(default_factory=dict)
    routes: list[_RouteRec] = field(default_factory=list)

    def read(self, doc: Doc, domain: str) -> None:
        """An EgressNetwork, or a route with an EgressNetwork parent (``egress_parent``)."""
        doc.string(doc.name, "metadata.name")
        if doc.kind == "EgressNetwork":
            self._network(doc)
        else:
            self._route(doc, domain)

    def _network(self, doc: Doc) -> None:
        spec = doc.mapping(doc.body.get("spec"), "spec", {"networks", "trafficPolicy"})
        policy = spec.get("trafficPolicy")
        if policy not in TRAFFIC_POLICIES:
            raise doc.fail("spec.trafficPolicy", f"expected Allow or Deny, got {policy!r}")
        nets = networks(doc, spec["networks"], "spec.networks") if spec.get("networks") else None
        key = (doc.namespace or "default", doc.name)
        if key in self.networks:
            raise doc.fail("metadata.name", f"EgressNetwork {key[0]}/{key[1]} is already defined "
                                            f"(document {self.networks[key][0].index})")
        self.networks[key] = (doc, EgressNetwork(doc.name, key[0], policy, nets))

    def _route(self, doc: Doc, domain: str) -> None:
        ns = doc.namespace or "default"
        spec = doc.mapping(doc.body.get("spec"), "spec")
        parents = []
        for i, ref in enumerate(doc.seq(spec.get("parentRefs"), "spec.parentRefs")):
            at = f"spec.parentRefs[{i}]"
            body = doc.mapping(ref, at, {"group", "kind", "name", "namespace", "port", "sectionName"})
            if body.get("kind") != "EgressNetwork":
                raise doc.fail(f"{at}.kind", "a route with an EgressNetwork parent may have no other kind of parent")
            if body.get("group") != POLICY_GROUP:
                raise doc.fail(f"{at}.group", f"an EgressNetwork is in group {POLICY_GROUP}")
            if "sectionName" in body:
                raise doc.fail(f"{at}.sectionName", "an EgressNetwork has no sections")
            port = doc.integer(body["port"], f"{at}.port", 1, 65535) if "port" in body else None
            parents.append((at, str(body.get("namespace") or ns), doc.string(body.get("name"), f"{at}.name"), port))
        self_refs: list[tuple[str, str, str]] = []
        if doc.kind in ("HTTPRoute", "GRPCRoute"):
            spec = doc.mapping(spec, "spec", {"parentRefs", "hostnames", "rules"})
            clean = self._strip_self_refs(doc, spec, self_refs)
            rules = _gateway.http_rules(Doc(doc.index, clean), domain) if doc.kind == "HTTPRoute" else \
                self._grpc_rules(doc, spec, domain, self_refs)
        else:
            spec = doc.mapping(spec, "spec", {"parentRefs", "hostnames", "rules"} if doc.kind == "TLSRoute"
                               else {"parentRefs", "rules"})
            rules = self._connection_rules(doc, spec, domain, self_refs)
        hostnames = tuple(_hostname(doc, h, f"spec.hostnames[{i}]")
                          for i, h in enumerate(doc.seq(spec.get("hostnames"), "spec.hostnames")))
        if doc.kind == "TLSRoute" and not hostnames:
            raise doc.fail("spec.hostnames", "required: the SNI names this route is for")
        group = str(doc.body.get("apiVersion", "")).rsplit("/", 1)[0]
        for at, pns, name, port in parents:
            route = EgressRoute(doc.kind, group, ns, doc.name, port, hostnames, tuple(rules))
            self.routes.append(_RouteRec(doc, [(at, pns, name, port)], self_refs, route))

    def _strip_self_refs(self, doc: Doc, spec: dict, self_refs: list) -> dict:
        """The document with backendRefs naming an EgressNetwork taken out (recorded in ``self_refs``):
        _gateway reads Service backends only; a rule left without backends goes to the original destination."""
        rules = []
        for i, item in enumerate(doc.seq(spec.get("rules"), "spec.rules")):
            rule = doc.mapping(item, f"spec.rules[{i}]")
            refs = doc.seq(rule.get("backendRefs"), f"spec.rules[{i}].backendRefs")
            kept = [r for r in refs if not (isinstance(r, dict) and r.get("kind") == "EgressNetwork")]
            for j, ref in enumerate(refs):
                if isinstance(ref, dict) and ref.get("kind") == "EgressNetwork":
                    self._self_ref(doc, ref, f"spec.rules[{i}].backendRefs[{j}]", self_refs)
                    if kept:
                        raise doc.fail(f"spec.rules[{i}].backendRefs[{j}]",
                                       "give either the EgressNetwork or Services as backends, not both")
            rules.append(dict(rule, backendRefs=kept) if "backendRefs" in rule else rule)
        return dict(doc.body, spec=dict(spec, rules=rules, parentRefs=[]))

    def _self_ref(self, doc: Doc, ref: dict, at: str, self_refs: list) -> Backend:
        body = doc.mapping(ref, at, {"group", "kind", "name", "namespace", "port", "weight"})
        if body.get("group") != POLICY_GROUP:
            raise doc.fail(f"{at}.group", f"an EgressNetwork is in group {POLICY_GROUP}")
        name = doc.string(body.get("name"), f"{at}.name")
        self_refs.append((at, str(body.get("namespace") or doc.namespace or "default"), name))
        if "port" in body:
            doc.integer(body["port"], f"{at}.port", 1, 65535)
        return Backend(ORIGINAL_DST, float(doc.integer(body.get("weight", 1), f"{at}.weight", 0, 1_000_000)))

    def _backends(self, doc: Doc, refs: Any, at: str, domain: str, self_refs: list) -> tuple[Backend, ...]:
        out = []
        for j, ref in enumerate(doc.seq(refs, at)):
            p = f"{at}[{j}]"
            body = doc.mapping(ref, p)
            if body.get("kind") == "EgressNetwork":
                out.append(self._self_ref(doc, body, p, self_refs))
                continue
            body = doc.mapping(ref, p, {"group", "kind", "name", "namespace", "port", "weight"})
            if body.get("kind", "Service") != "Service" or str(body.get("group") or "") not in ("", "core"):
                raise doc.fail(f"{p}.kind", f"expected EgressNetwork or Service, got {body.get('kind')!r}")
            if "port" not in body:
                raise doc.fail(f"{p}.port", "required for a Service backend")
            out.append(Backend(service_authority(doc.string(body.get("name"), f"{p}.name"),
                                                 str(body.get("namespace") or doc.namespace or "default"), domain,
                                                 doc.integer(body["port"], f"{p}.port", 1, 65535)),
                               float(doc.integer(body.get("weight", 1), f"{p}.weight", 0, 1_000_000))))
        if len({b.authority == ORIGINAL_DST for b in out}) > 1:
            raise doc.fail(at, "give either the EgressNetwork or Services as backends, not both")
        if out and not any(b.weight > 0 for b in out):
            raise doc.fail(at, "every weight is zero")
        return tuple(b for b in out if b.authority != ORIGINAL_DST)

    def _grpc_rules(self, doc: Doc, spec: dict, domain: str, self_refs: list) -> list[Route]:
        ident = f"{doc.namespace or 'default'}/{doc.name}"
        group = str(doc.body.get("apiVersion", "")).rsplit("/", 1)[0]
        out = []
        for i, item in enumerate(doc.seq(spec.get("rules"), "spec.rules") or [{}]):
            at = f"spec.rules[{i}]"
            rule = doc.mapping(item, at, {"name", "matches", "backendRefs"})
            matches = tuple(grpc_match(doc, m, f"{at}.matches[{j}]")
                            for j, m in enumerate(doc.seq(rule.get("matches"), f"{at}.matches")))
            out.append(Route(name=str(rule.get("name") or f"{ident}#{i}"), matches=matches,
                             backends=self._backends(doc, rule.get("backendRefs"), f"{at}.backendRefs", domain,
                                                     self_refs),
                             source=f"GRPCRoute/{ident}", order=(str((doc.body.get("metadata") or {}).get(
                                 "creationTimestamp") or ""), ident, i), group=group))
        return out

    def _connection_rules(self, doc: Doc, spec: dict, domain: str, self_refs: list) -> list[Route]:
        items = doc.seq(spec.get("rules"), "spec.rules")
        if len(items) != 1:
            raise doc.fail("spec.rules", f"a {doc.kind} takes exactly one rule (got {len(items)})")
        rule = doc.mapping(items[0], "spec.rules[0]", {"name", "backendRefs"})
        if not rule.get("backendRefs"):
            raise doc.fail("spec.rules[0].backendRefs", "required: where the connection goes")
        ident = f"{doc.namespace or 'default'}/{doc.name}"
        return [Route(name=str(rule.get("name") or ident), source=f"{doc.kind}/{ident}",
                      backends=self._backends(doc, rule["backendRefs"], "spec.rules[0].backendRefs", domain,
                                              self_refs))]

    def link(self) -> tuple[EgressNetwork, ...]:
        """Every EgressNetwork with its routes; raises ParseError for a route naming one not in the file."""
        attached: dict[tuple[str, str], list[EgressRoute]] = {key: [] for key in self.networks}
        for rec in self.routes:
            for at, ns, name, _ in rec.parents:
                if (ns, name) not in self.networks:
                    raise rec.doc.fail(f"{at}.name", f"no EgressNetwork {ns}/{name} in this policy file")
                for ref_at, rns, rname in rec.self_refs:
                    if (rns, rname) != (ns, name):
                        raise rec.doc.fail(f"{ref_at}.name", f"a backend EgressNetwork must be the route's parent "
                                                             f"{ns}/{name}")
                attached[(ns, name)].append(rec.route)
        out = []
        for key, (_, network) in self.networks.items():
            out.append(EgressNetwork(network.name, network.namespace, network.traffic_policy, network.networks,
                                     tuple(attached[key])))
        return tuple(out)


def _hostname(doc: Doc, value: Any, at: str) -> str:
    if not isinstance(value, str) or not _HOSTNAME.fullmatch(value.lower()):
        raise doc.fail(at, f"{value!r} is not a host name (or *.suffix)")
    return value.lower()
