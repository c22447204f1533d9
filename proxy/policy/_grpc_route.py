"""Reader for GRPCRoute (gateway.networking.k8s.io) with Service parents: Linkerd's outbound gRPC policy.

A GRPCRoute's rules become routes like an HTTPRoute's: each match is a
``POST /<service>/<method>`` request match (gRPC's wire form) plus header
matches; ``backendRefs`` split by weight; RequestHeaderModifier,
ResponseHeaderModifier and RequestMirror filters apply as on an HTTPRoute;
Linkerd's ``timeout.linkerd.io/*`` and ``retry.linkerd.io/grpc`` (with
``limit`` and ``timeout``) annotations set timeouts and retries.
``retry.linkerd.io/http`` is refused, as Linkerd documents it is not valid
on a GRPCRoute. A GRPCRoute whose parentRefs name an EgressNetwork is an
egress route (_egress_docs.py).
"""

from __future__ import annotations

import re
from typing import Any

from proxy.policy import _gateway
from proxy.policy._fields import Doc
from proxy.policy._linkerd import Piece
from proxy.policy.model import HeaderMatch, PathMatch, RequestMatch, Route

_GRPC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")


def grpc_match(doc: Doc, value: Any, at: str) -> RequestMatch:
    """A GRPCRoute match as an HTTP one: the method is the path ``/<service>/<method>``."""
    body = doc.mapping(value, at, {"method", "headers"})
    path = None
    if "method" in body:
        m = doc.mapping(body["method"], f"{at}.method", {"type", "service", "method"})
        kind = m.get("type", "Exact")
        if kind not in ("Exact", "RegularExpression"):
            raise doc.fail(f"{at}.method.type", f"expected Exact or RegularExpression, got {kind!r}")
        service, method = m.get("service"), m.get("method")
        if service is None and method is None:
            raise doc.fail(f"{at}.method", "give service, method or both")
        if kind == "Exact":
            for key, text in (("service", service), ("method", method)):
                if text is not None and not (isinstance(text, str) and _GRPC_NAME.fullmatch(text)):
                    raise doc.fail(f"{at}.method.{key}", f"{text!r} is not a gRPC name")
            if service is not None and method is not None:
                path = PathMatch("exact", f"/{service}/{method}")
            elif service is not None:
                path = PathMatch("prefix", f"/{service}")
            else:
                path = PathMatch("regex", f"/[^/]+/{re.escape(str(method))}")
        else:
            service_re = doc.regex(service, f"{at}.method.service") if service is not None else "[^/]+"
            method_re = doc.regex(method, f"{at}.method.method") if method is not None else "[^/]+"
            path = PathMatch("regex", f"/(?:{service_re})/(?:{method_re})")
    headers = _gateway._named_values(doc, body.get("headers"), f"{at}.headers",
                                     {"Exact": "exact", "RegularExpression": "regex"})
    return RequestMatch(method="POST", path=path,
                        headers=tuple(HeaderMatch(name.lower(), kind, value) for kind, name, value in headers))


def grpc_rules(doc: Doc, domain: str) -> list[Route]:
    """The rules of a GRPCRoute with Service parents, one Route each, with Linkerd's annotations applied."""
    doc.string(doc.name, "metadata.name")
    spec = doc.mapping(doc.body.get("spec"), "spec", {"parentRefs", "hostnames", "rules"})
    notes = doc.mapping((doc.body.get("metadata") or {}).get("annotations") or {}, "metadata.annotations")
    if "retry.linkerd.io/http" in notes:
        raise doc.fail("metadata.annotations[retry.linkerd.io/http]",
                       "not valid on a GRPCRoute (retry gRPC statuses with retry.linkerd.io/grpc)")
    retry, timeouts = _gateway._annotations(doc)
    stamp = str((doc.body.get("metadata") or {}).get("creationTimestamp") or "")
    ident = f"{doc.namespace or 'default'}/{doc.name}"
    group = str(doc.body.get("apiVersion", "")).rsplit("/", 1)[0]
    routes = []
    for i, item in enumerate(doc.seq(spec.get("rules"), "spec.rules") or [{}]):
        at = f"spec.rules[{i}]"
        rule = doc.mapping(item, at, {"name", "matches", "filters", "backendRefs"})
        matches = tuple(grpc_match(doc, m, f"{at}.matches[{j}]")
                        for j, m in enumerate(doc.seq(rule.get("matches"), f"{at}.matches")))
        modifiers: dict[str, Any] = {}
        mirrors = []
        for j, f in enumerate(doc.seq(rule.get("filters"), f"{at}.filters")):
            where = f"{at}.filters[{j}]"
            kind = f.get("type") if isinstance(f, dict) else None
            if kind not in _FILTERS:
                raise doc.fail(f"{where}.type", f"filter {kind!r} is not supported on a GRPCRoute "
                                                f"(use {', '.join(_FILTERS)})")
            kind, modifier = _gateway._filter(doc, f, where, domain)
            if kind == "RequestMirror":
                mirrors.append(modifier)
            elif kind in modifiers:
                raise doc.fail(where, f"{kind} may appear once per rule")
            else:
                modifiers[kind] = modifier
        routes.append(Route(
            name=str(rule.get("name") or f"{ident}#{i}"),
            matches=matches,
            timeout=timeouts.get("request"),
            backend_timeout=timeouts.get("response"),
            idle_timeout=timeouts.get("idle"),
            is_retryable=retry is not None,
            retry=retry,
            backends=tuple(_gateway.backend_refs(doc, rule.get("backendRefs"), f"{at}.backendRefs", domain)),
            request_header_modifier=modifiers.get("RequestHeaderModifier"),
            response_header_modifier=modifiers.get("ResponseHeaderModifier"),
            mirrors=tuple(mirrors),
            source=f"GRPCRoute/{ident}",
            order=(stamp, ident, i),
            group=group,
        ))
    return routes


def grpc_route(doc: Doc, domain: str) -> list[Piece]:
    """One piece per Service parent (Linkerd's outbound policy for gRPC)."""
    return _gateway.service_pieces(doc, domain, grpc_rules(doc, domain))
