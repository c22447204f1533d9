"""Reader for Linkerd's HTTPLocalRateLimitPolicy (policy.linkerd.io/v1alpha1), unchanged from the cluster.

The document's Server is named, not resolved: _authz_link.py attaches the
limit to its Server once every document has been read (a missing Server, or
a second policy for one Server, is an error naming the document, as Linkerd
accepts one HTTPLocalRateLimitPolicy per Server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.policy._fields import Doc
from proxy.policy.authz_model import POLICY_GROUP, RateLimit

if TYPE_CHECKING:
    from proxy.policy._authz_docs import Collector

KIND = "HTTPLocalRateLimitPolicy"
VERSIONS = {f"{POLICY_GROUP}/v1alpha1"}
_MAX_RPS = 2**31 - 1  # the CRD's int32


@dataclass
class RateLimitRec:
    doc: Doc
    server: str  # the targetRef's Server name, in the document's namespace
    limit: RateLimit


def _rps(doc: Doc, value: Any, at: str, total: int | None) -> int:
    body = doc.mapping(value, at, {"requestsPerSecond"})
    if "requestsPerSecond" not in body:
        raise doc.fail(f"{at}.requestsPerSecond", "required")
    rps = doc.integer(body["requestsPerSecond"], f"{at}.requestsPerSecond", 1, _MAX_RPS)
    if total is not None and rps > total:
        raise doc.fail(f"{at}.requestsPerSecond", f"{rps} is greater than total.requestsPerSecond ({total})")
    return rps


def read(found: Collector, doc: Doc, namespace: str) -> RateLimitRec:
    spec = doc.mapping(doc.body.get("spec"), "spec", {"targetRef", "total", "identity", "overrides"})
    ref = doc.mapping(spec.get("targetRef"), "spec.targetRef", {"group", "kind", "name"})
    if ref.get("kind") != "Server":
        raise doc.fail("spec.targetRef.kind", f"expected Server, got {ref.get('kind')!r}")
    if ref.get("group") != POLICY_GROUP:
        raise doc.fail("spec.targetRef.group", f"a Server is in group {POLICY_GROUP}")
    server = doc.string(ref.get("name"), "spec.targetRef.name")
    total = _rps(doc, spec["total"], "spec.total", None) if "total" in spec else None
    identity = _rps(doc, spec["identity"], "spec.identity", total) if "identity" in spec else None
    overrides = []
    seen: dict[str, int] = {}
    for i, item in enumerate(doc.seq(spec.get("overrides"), "spec.overrides")):
        at = f"spec.overrides[{i}]"
        body = doc.mapping(item, at, {"requestsPerSecond", "clientRefs"})
        rps = _rps(doc, {"requestsPerSecond": body.get("requestsPerSecond")}, at, total)
        ids = []
        refs = doc.seq(body.get("clientRefs"), f"{at}.clientRefs")
        if not refs:
            raise doc.fail(f"{at}.clientRefs", "required: the ServiceAccounts this override is for")
        for j, client in enumerate(refs):
            p = f"{at}.clientRefs[{j}]"
            cref = doc.mapping(client, p, {"group", "kind", "name", "namespace"})
            if cref.get("kind") != "ServiceAccount" or str(cref.get("group") or "") not in ("", "core"):
                raise doc.fail(f"{p}.kind", f"expected ServiceAccount (core group), got {cref.get('kind')!r}")
            name = found.sa_identity(doc, cref.get("name"), cref.get("namespace") or namespace, p)
            if name in seen:
                raise doc.fail(f"{p}.name", f"{name} already has an override (overrides[{seen[name]}])")
            seen[name] = i
            ids.append(name)
        overrides.append((rps, tuple(ids)))
    if total is None and identity is None and not overrides:
        raise doc.fail("spec", "give total, identity or overrides (a policy without one limits nothing)")
    return RateLimitRec(doc, server, RateLimit(doc.name, namespace, total, identity, tuple(overrides)))
