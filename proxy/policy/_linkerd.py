"""Readers for Linkerd's ServiceProfile and SMI TrafficSplit documents, unchanged from the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.policy._fields import Doc
from proxy.policy.model import (
    Backend,
    Condition,
    Failover,
    FailureAccrual,
    ResponseClass,
    RetryBudgetSpec,
    Route,
)

PROFILE_VERSIONS = {"linkerd.io/v1alpha1", "linkerd.io/v1alpha2"}
SPLIT_VERSIONS = {f"split.smi-spec.io/v1alpha{n}" for n in (1, 2, 3, 4)}


@dataclass
class Piece:
    """What one document says about one service; parse.py merges pieces by authority."""

    authority: str
    source: str
    ordered_routes: tuple[Route, ...] = ()
    gateway_routes: tuple[Route, ...] = ()
    budget: RetryBudgetSpec | None = None
    backends: tuple[Backend, ...] | None = None
    backends_rank: int = 0  # higher wins: compact 3, TrafficSplit 2, dstOverrides 1
    accrual: FailureAccrual | None = None
    failover: Failover | None = None  # with ``backends``
    warnings: list[str] = field(default_factory=list)


def service_authority(name: str, namespace: str, domain: str, port: int | None = None) -> str:
    """``web`` in ``shop`` -> ``web.shop.svc.cluster.local`` (names with a dot are kept as given)."""
    host = name if "." in name else f"{name}.{namespace or 'default'}.svc.{domain}"
    return f"{host}:{port}" if port else host


FAILOVER_PRIMARY = "failover.linkerd.io/primary-service"
# linkerd-failover's default labelSelector: the documents it manages.
FAILOVER_LABEL = ("app.kubernetes.io/managed-by", "linkerd-failover")


def failover_primary(doc: Doc, domain: str) -> str | None:
    """The primary service's authority (no port) of a document linkerd-failover manages, else None.

    The operator acts only on documents carrying its label; the label without
    the annotation naming the primary is an error (the operator could not act).
    """
    meta = doc.body.get("metadata") or {}
    labels = doc.mapping(meta.get("labels") or {}, "metadata.labels")
    notes = doc.mapping(meta.get("annotations") or {}, "metadata.annotations")
    field = f"metadata.annotations[{FAILOVER_PRIMARY}]"
    if labels.get(FAILOVER_LABEL[0]) != FAILOVER_LABEL[1]:
        return None
    if FAILOVER_PRIMARY not in notes:
        raise doc.fail(field, f"required with the label {FAILOVER_LABEL[0]}: {FAILOVER_LABEL[1]}")
    return service_authority(doc.string(notes[FAILOVER_PRIMARY], field), doc.namespace, domain)


def failover_over(primary: str | None, backends: list[Backend] | tuple[Backend, ...]) -> Failover | None:
    """Failover over ``backends`` when one of them is ``primary`` (ports aside); the others, in
    their listed order, are the secondaries. Weights are ignored: linkerd-failover rewrites them."""
    if primary is None:
        return None
    hosts = [b.authority.rsplit(":", 1)[0] if b.authority.count(":") == 1 else b.authority for b in backends]
    if primary not in hosts:
        return None
    first = backends[hosts.index(primary)].authority
    return Failover(first, tuple(b.authority for b in backends if b.authority != first))


def _condition(doc: Doc, value: Any, path: str) -> Condition:
    body = doc.mapping(value, path, {"method", "pathRegex", "all", "any", "not"})
    parts = []
    if "method" in body:
        parts.append(Condition("method", doc.string(body["method"], f"{path}.method").upper()))
    if "pathRegex" in body:
        parts.append(Condition("path_regex", doc.regex(body["pathRegex"], f"{path}.pathRegex")))
    for key in ("all", "any"):
        if key in body:
            items = doc.seq(body[key], f"{path}.{key}")
            parts.append(Condition(key, children=tuple(
                _condition(doc, item, f"{path}.{key}[{i}]") for i, item in enumerate(items))))
    if "not" in body:
        parts.append(Condition("not", children=(_condition(doc, body["not"], f"{path}.not"),)))
    if not parts:
        raise doc.fail(path, "empty condition (give method, pathRegex, all, any or not)")
    # Several keys in one condition must all hold (Linkerd's semantics).
    return parts[0] if len(parts) == 1 else Condition("all", children=tuple(parts))


def _response_class(doc: Doc, value: Any, path: str) -> ResponseClass:
    body = doc.mapping(value, path, {"condition", "isFailure"})
    cond = doc.mapping(body.get("condition"), f"{path}.condition", {"status"})
    status = doc.mapping(cond.get("status", {}), f"{path}.condition.status", {"min", "max"})
    lo = doc.integer(status["min"], f"{path}.condition.status.min", 100, 599) if "min" in status else None
    hi = doc.integer(status["max"], f"{path}.condition.status.max", 100, 599) if "max" in status else None
    if lo is not None and hi is not None and lo > hi:
        raise doc.fail(f"{path}.condition.status", "min is greater than max")
    failure = doc.boolean(body.get("isFailure", False), f"{path}.isFailure")
    return ResponseClass(failure, lo, hi)


def retry_budget(doc: Doc, value: Any, path: str) -> RetryBudgetSpec:
    body = doc.mapping(value, path, {"retryRatio", "minRetriesPerSecond", "ttl"})
    spec = RetryBudgetSpec()
    return RetryBudgetSpec(
        retry_ratio=doc.number(body.get("retryRatio", spec.retry_ratio), f"{path}.retryRatio"),
        min_retries_per_second=doc.integer(body.get("minRetriesPerSecond", spec.min_retries_per_second),
                                           f"{path}.minRetriesPerSecond"),
        ttl=doc.duration(body.get("ttl", spec.ttl), f"{path}.ttl") or _zero_ttl(doc, f"{path}.ttl"),
    )


def _zero_ttl(doc: Doc, path: str) -> float:
    raise doc.fail(path, "must be greater than zero")


def service_profile(doc: Doc, domain: str) -> Piece:
    authority = doc.string(doc.name, "metadata.name")
    spec = doc.mapping(doc.body.get("spec"), "spec", {"routes", "retryBudget", "dstOverrides", "opaquePorts"})
    routes = []
    for i, item in enumerate(doc.seq(spec.get("routes"), "spec.routes")):
        path = f"spec.routes[{i}]"
        body = doc.mapping(item, path, {"name", "condition", "responseClasses", "isRetryable", "timeout"})
        if "condition" not in body:
            raise doc.fail(f"{path}.condition", "required")
        routes.append(Route(
            name=doc.string(body.get("name"), f"{path}.name"),
            condition=_condition(doc, body["condition"], f"{path}.condition"),
            response_classes=tuple(
                _response_class(doc, rc, f"{path}.responseClasses[{j}]")
                for j, rc in enumerate(doc.seq(body.get("responseClasses"), f"{path}.responseClasses"))),
            is_retryable=doc.boolean(body.get("isRetryable", False), f"{path}.isRetryable"),
            timeout=doc.duration(body["timeout"], f"{path}.timeout") if "timeout" in body else None,
            source=f"ServiceProfile/{doc.name}",
        ))
    piece = Piece(authority, f"ServiceProfile/{doc.name}", ordered_routes=tuple(routes))
    if "retryBudget" in spec:
        piece.budget = retry_budget(doc, spec["retryBudget"], "spec.retryBudget")
    if "dstOverrides" in spec:
        backends = []
        for i, item in enumerate(doc.seq(spec["dstOverrides"], "spec.dstOverrides")):
            path = f"spec.dstOverrides[{i}]"
            body = doc.mapping(item, path, {"authority", "weight"})
            backends.append(Backend(doc.string(body.get("authority"), f"{path}.authority"),
                                    doc.quantity(body.get("weight", 1), f"{path}.weight")))
        piece.backends, piece.backends_rank = tuple(backends), 1
    return piece


def traffic_split(doc: Doc, domain: str) -> Piece:
    version = str(doc.body.get("apiVersion"))
    spec = doc.mapping(doc.body.get("spec"), "spec", {"service", "backends", "matches"})
    if spec.get("matches"):
        raise doc.fail("spec.matches", "HTTPRouteGroup matches are not supported; use an HTTPRoute with backendRefs")
    service = doc.string(spec.get("service"), "spec.service")
    backends = []
    for i, item in enumerate(doc.seq(spec.get("backends"), "spec.backends")):
        path = f"spec.backends[{i}]"
        body = doc.mapping(item, path, {"service", "weight"})
        name = doc.string(body.get("service"), f"{path}.service")
        if "weight" not in body:
            raise doc.fail(f"{path}.weight", "required")
        if version.endswith("v1alpha1"):
            weight = doc.quantity(body["weight"], f"{path}.weight")
        else:
            weight = float(doc.integer(body["weight"], f"{path}.weight"))
        backends.append(Backend(service_authority(name, doc.namespace, domain), weight))
    if not backends:
        raise doc.fail("spec.backends", "at least one backend is required")
    primary = failover_primary(doc, domain)
    failover = failover_over(primary, backends)
    if primary is not None and failover is None:
        raise doc.fail(f"metadata.annotations[{FAILOVER_PRIMARY}]", f"{primary} is not one of spec.backends")
    if failover is None and not any(b.weight > 0 for b in backends):
        raise doc.fail("spec.backends", "every weight is zero")
    return Piece(service_authority(service, doc.namespace, domain), f"TrafficSplit/{doc.name}",
                 backends=tuple(backends), backends_rank=2, failover=failover)
