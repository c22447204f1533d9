"""Reader for HTTPRoute (policy.linkerd.io and gateway.networking.k8s.io) with Linkerd's annotations."""

from __future__ import annotations

import re
from typing import Any

from proxy.policy import _linkerd
from proxy.policy._fields import Doc
from proxy.policy._linkerd import Piece, service_authority
from proxy.policy.model import (
    Backend,
    HeaderMatch,
    HeaderModifier,
    Mirror,
    PathMatch,
    QueryParamMatch,
    Redirect,
    RequestMatch,
    RetryPolicy,
    Rewrite,
    Route,
)
from proxy.protocol import l5d

ROUTE_VERSIONS = {
    "policy.linkerd.io/v1alpha1", "policy.linkerd.io/v1beta1", "policy.linkerd.io/v1beta2",
    "policy.linkerd.io/v1beta3", "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1",
}
_PATH_TYPES = {"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}
_VALUE_TYPES = {"Exact": "exact", "RegularExpression": "regex"}
_ANNOTATIONS = {
    "retry.linkerd.io/http", "retry.linkerd.io/grpc", "retry.linkerd.io/limit", "retry.linkerd.io/timeout",
    "timeout.linkerd.io/request", "timeout.linkerd.io/response", "timeout.linkerd.io/idle",
}


def _named_values(doc: Doc, items: Any, path: str, types: dict[str, str]) -> list[tuple[str, str, str]]:
    out = []
    for i, item in enumerate(doc.seq(items, path)):
        p = f"{path}[{i}]"
        body = doc.mapping(item, p, {"type", "name", "value"})
        kind = body.get("type", "Exact")
        if kind not in types:
            raise doc.fail(f"{p}.type", f"unsupported type {kind!r} (use {', '.join(types)})")
        name = doc.string(body.get("name"), f"{p}.name")
        value = doc.regex(body.get("value"), f"{p}.value") if kind == "RegularExpression" else body.get("value")
        if not isinstance(value, str):
            raise doc.fail(f"{p}.value", "expected a string")
        out.append((types[kind], name, value))
    return out


def _match(doc: Doc, value: Any, path: str) -> RequestMatch:
    body = doc.mapping(value, path, {"path", "headers", "queryParams", "method"})
    path_match = None
    if "path" in body:
        p = doc.mapping(body["path"], f"{path}.path", {"type", "value"})
        kind = p.get("type", "PathPrefix")
        if kind not in _PATH_TYPES:
            raise doc.fail(f"{path}.path.type", f"unsupported type {kind!r} (use {', '.join(_PATH_TYPES)})")
        if kind == "RegularExpression":
            text = doc.regex(p.get("value"), f"{path}.path.value")
        else:
            text = doc.string(p.get("value", "/"), f"{path}.path.value")
            if not text.startswith("/"):
                raise doc.fail(f"{path}.path.value", "must start with /")
        path_match = PathMatch(_PATH_TYPES[kind], text)
    method = doc.string(body["method"], f"{path}.method").upper() if "method" in body else None
    headers = _named_values(doc, body.get("headers"), f"{path}.headers", _VALUE_TYPES)
    query = _named_values(doc, body.get("queryParams"), f"{path}.queryParams", _VALUE_TYPES)
    return RequestMatch(
        method=method, path=path_match,
        headers=tuple(HeaderMatch(name.lower(), kind, value) for kind, name, value in headers),
        query_params=tuple(QueryParamMatch(name, kind, value) for kind, name, value in query),
    )


_FILTERS = {"RequestHeaderModifier": "requestHeaderModifier", "ResponseHeaderModifier": "responseHeaderModifier",
            "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite", "RequestMirror": "requestMirror"}


def _filter(doc: Doc, value: Any, path: str, domain: str) -> tuple[str, Any]:
    """(filter type, what it does) of one rule filter."""
    body = doc.mapping(value, path)
    kind = body.get("type")
    if kind not in _FILTERS:
        raise doc.fail(f"{path}.type", f"filter {kind!r} is not supported (use {', '.join(_FILTERS)})")
    field = _FILTERS[kind]
    doc.mapping(body, path, {"type", field})
    if kind == "RequestRedirect":
        return kind, _redirect(doc, body.get(field), f"{path}.{field}")
    if kind == "URLRewrite":
        return kind, _rewrite(doc, body.get(field), f"{path}.{field}")
    if kind == "RequestMirror":
        return kind, _mirror(doc, body.get(field), f"{path}.{field}", domain)
    return kind, _header_modifier(doc, body.get(field), f"{path}.{field}")


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
_REDIRECT_PATH = re.compile(r"/[!$&'()*+,;=:@%/A-Za-z0-9._~-]*")
_PATH_KINDS = {"ReplaceFullPath": ("full", "replaceFullPath"), "ReplacePrefixMatch": ("prefix", "replacePrefixMatch")}


def hostname(doc: Doc, value: Any, path: str) -> str | None:
    """An optional host name (no port, no wildcard), as Gateway API's PreciseHostname."""
    if value is not None and not (isinstance(value, str) and len(value) <= 253 and _HOSTNAME.fullmatch(value)):
        raise doc.fail(path, f"{value!r} is not a host name")
    return value


def path_modifier(doc: Doc, value: Any, path: str, kind_key: str = "type") -> tuple[str, str]:
    """Gateway API HTTPPathModifier: (``full`` or ``prefix``, the new path). An empty ReplacePrefixMatch
    is allowed (Gateway API: the matched prefix is removed)."""
    p = doc.mapping(value, path, {kind_key, "replaceFullPath", "replacePrefixMatch"})
    if p.get(kind_key) not in _PATH_KINDS:
        raise doc.fail(f"{path}.{kind_key}", f"expected one of {', '.join(_PATH_KINDS)}, got {p.get(kind_key)!r}")
    path_kind, key = _PATH_KINDS[p[kind_key]]
    for other in ("replaceFullPath", "replacePrefixMatch"):
        if other != key and other in p:
            raise doc.fail(f"{path}.{other}", f"not allowed with type {p[kind_key]}")
    new_path = p.get(key)
    if path_kind == "prefix" and new_path == "":
        return path_kind, ""
    new_path = doc.string(new_path, f"{path}.{key}")
    if not _REDIRECT_PATH.fullmatch(new_path) or len(new_path) > 1024:
        raise doc.fail(f"{path}.{key}", f"{new_path!r} is not an absolute path")
    return path_kind, new_path


def _redirect(doc: Doc, value: Any, path: str) -> Redirect:
    body = doc.mapping(value, path, {"scheme", "hostname", "path", "port", "statusCode"})
    scheme = body.get("scheme")
    if scheme is not None and scheme not in ("http", "https"):
        raise doc.fail(f"{path}.scheme", f"expected http or https, got {scheme!r}")
    host = hostname(doc, body.get("hostname"), f"{path}.hostname")
    port = doc.integer(body["port"], f"{path}.port", 1, 65535) if "port" in body else None
    status = doc.integer(body.get("statusCode", 302), f"{path}.statusCode", 301, 308)
    if status not in (301, 302, 303, 307, 308):
        raise doc.fail(f"{path}.statusCode", f"expected 301, 302, 303, 307 or 308, got {status}")
    path_kind = new_path = None
    if "path" in body:
        path_kind, new_path = path_modifier(doc, body["path"], f"{path}.path")
    return Redirect(scheme, host, port, path_kind, new_path, status)


def _rewrite(doc: Doc, value: Any, path: str) -> Rewrite:
    body = doc.mapping(value, path, {"hostname", "path"})
    if not body:
        raise doc.fail(path, "give hostname, path or both")
    host = hostname(doc, body.get("hostname"), f"{path}.hostname")
    path_kind = new_path = None
    if "path" in body:
        path_kind, new_path = path_modifier(doc, body["path"], f"{path}.path")
    return Rewrite(host, path_kind, new_path)


def mirror_fraction(doc: Doc, body: dict, path: str) -> float:
    """Gateway API's ``percent`` (0-100) or ``fraction`` ({numerator, denominator: 100}); neither: every request."""
    if "percent" in body and "fraction" in body:
        raise doc.fail(f"{path}.fraction", "give percent or fraction, not both")
    if "percent" in body:
        return doc.integer(body["percent"], f"{path}.percent", 0, 100) / 100.0
    if "fraction" in body:
        f = doc.mapping(body["fraction"], f"{path}.fraction", {"numerator", "denominator"})
        numerator = doc.integer(f.get("numerator"), f"{path}.fraction.numerator")
        denominator = doc.integer(f.get("denominator", 100), f"{path}.fraction.denominator", 1)
        if numerator > denominator:
            raise doc.fail(f"{path}.fraction.numerator", "must not exceed the denominator")
        return numerator / denominator
    return 1.0


def _mirror(doc: Doc, value: Any, path: str, domain: str) -> Mirror:
    body = doc.mapping(value, path, {"backendRef", "percent", "fraction"})
    ref = doc.mapping(body.get("backendRef"), f"{path}.backendRef", {"group", "kind", "name", "namespace", "port"})
    if ref.get("kind", "Service") != "Service" or ref.get("group", "") not in ("", "core"):
        raise doc.fail(f"{path}.backendRef.kind", "only Service backends are supported")
    port = doc.integer(ref["port"], f"{path}.backendRef.port", 1, 65535) if "port" in ref else None
    authority = service_authority(doc.string(ref.get("name"), f"{path}.backendRef.name"),
                                  ref.get("namespace") or doc.namespace, domain, port)
    return Mirror(authority, mirror_fraction(doc, body, path))


def prefix_only(doc: Doc, path_kind: str | None, matches: tuple[RequestMatch, ...], path: str) -> None:
    """Gateway API: ReplacePrefixMatch is only compatible with PathPrefix matches (no match: PathPrefix /)."""
    if path_kind == "prefix" and not all(m.path is not None and m.path.kind == "prefix" for m in matches):
        raise doc.fail(path, "ReplacePrefixMatch needs every match of the rule to be a PathPrefix")


def _header_modifier(doc: Doc, value: Any, path: str) -> HeaderModifier:
    mod = doc.mapping(value, path, {"set", "add", "remove"})
    pairs = {}
    for key in ("set", "add"):
        where = f"{path}.{key}"
        items = _named_values(doc, mod.get(key), where, {"Exact": "exact"})
        seen = set()
        for j, (_, name, value) in enumerate(items):
            _editable(doc, name, f"{where}[{j}].name")
            if name.lower() in seen:
                raise doc.fail(f"{where}[{j}].name", f"{name!r} is listed twice")
            seen.add(name.lower())
            if not _FIELD_VALUE.fullmatch(value):
                raise doc.fail(f"{where}[{j}].value", "a header value must not contain control characters")
        pairs[key] = tuple((name, value) for _, name, value in items)
    remove = tuple(_editable(doc, doc.string(n, f"{path}.remove[{i}]"), f"{path}.remove[{i}]")
                   for i, n in enumerate(doc.seq(mod.get("remove"), f"{path}.remove")))
    return HeaderModifier(pairs["set"], pairs["add"], remove)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Fields that frame the request, are hop-by-hop, or were already used to route
# it: editing them after the route matched could forward an ambiguous request
# or send it somewhere the route did not choose.
_NOT_EDITABLE = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "upgrade", "host", *(name.decode() for name in l5d.ALL),
})


def _editable(doc: Doc, name: str, path: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise doc.fail(path, f"{name!r} is not a valid header name")
    if name.lower() in _NOT_EDITABLE:
        raise doc.fail(path, f"{name!r} cannot be modified by a route (it frames, routes or identifies a message)")
    return name


def _annotations(doc: Doc) -> tuple[RetryPolicy | None, dict[str, float]]:
    meta = doc.body.get("metadata") or {}
    notes = doc.mapping(meta.get("annotations") or {}, "metadata.annotations")
    relevant = {k: v for k, v in notes.items() if k.startswith(("retry.linkerd.io/", "timeout.linkerd.io/"))}
    for key in relevant:
        if key not in _ANNOTATIONS:
            raise doc.fail(f"metadata.annotations[{key}]", "unknown Linkerd retry/timeout annotation")

    def field(key: str) -> str:
        return f"metadata.annotations[{key}]"

    timeouts = {k.rsplit("/", 1)[1]: doc.duration(v, field(k)) for k, v in relevant.items()
                if k.startswith("timeout.")}
    retry = None
    if "retry.linkerd.io/http" in relevant or "retry.linkerd.io/grpc" in relevant:
        http = relevant.get("retry.linkerd.io/http")
        grpc = relevant.get("retry.linkerd.io/grpc")
        limit = relevant.get("retry.linkerd.io/limit", "1")
        if not str(limit).strip().isdigit():
            raise doc.fail(field("retry.linkerd.io/limit"), f"expected a whole number, got {limit!r}")
        retry = RetryPolicy(
            limit=int(str(limit).strip()),
            http_statuses=doc.status_ranges(http, field("retry.linkerd.io/http")) if http else (),
            grpc_codes=frozenset(doc.grpc_code(c.strip(), field("retry.linkerd.io/grpc"))
                                 for c in str(grpc).split(",")) if grpc else frozenset(),
            timeout=(doc.duration(relevant["retry.linkerd.io/timeout"], field("retry.linkerd.io/timeout"))
                     if "retry.linkerd.io/timeout" in relevant else None),
        )
    elif "retry.linkerd.io/limit" in relevant or "retry.linkerd.io/timeout" in relevant:
        raise doc.fail("metadata.annotations", "retry limit/timeout given without retry.linkerd.io/http or /grpc")
    return retry, timeouts


def backend_refs(doc: Doc, refs: Any, path: str, domain: str) -> list[Backend]:
    """A rule's ``backendRefs``: Services by name and port, with their weights."""
    backends = []
    for j, ref in enumerate(doc.seq(refs, path)):
        p = f"{path}[{j}]"
        body = doc.mapping(ref, p, {"group", "kind", "name", "namespace", "port", "weight", "filters"})
        if body.get("kind", "Service") != "Service" or body.get("group", "") not in ("", "core"):
            raise doc.fail(f"{p}.kind", "only Service backends are supported")
        if body.get("filters"):
            raise doc.fail(f"{p}.filters", "per-backend filters are not supported")
        port = doc.integer(body["port"], f"{p}.port", 1, 65535) if "port" in body else None
        backends.append(Backend(
            service_authority(doc.string(body.get("name"), f"{p}.name"),
                              body.get("namespace") or doc.namespace, domain, port),
            float(doc.integer(body.get("weight", 1), f"{p}.weight", 0, 1_000_000))))
    return backends


def http_rules(doc: Doc, domain: str) -> list[Route]:
    """The rules of an HTTPRoute (any parents), one Route each, with Linkerd's annotations applied."""
    doc.string(doc.name, "metadata.name")
    spec = doc.mapping(doc.body.get("spec"), "spec", {"parentRefs", "hostnames", "rules"})
    retry, timeouts = _annotations(doc)
    stamp = str((doc.body.get("metadata") or {}).get("creationTimestamp") or "")
    ident = f"{doc.namespace or 'default'}/{doc.name}"
    primary = _linkerd.failover_primary(doc, domain)
    routes = []
    for i, item in enumerate(doc.seq(spec.get("rules"), "spec.rules") or [{}]):
        path = f"spec.rules[{i}]"
        rule = doc.mapping(item, path, {"name", "matches", "filters", "backendRefs", "timeouts"})
        matches = tuple(_match(doc, m, f"{path}.matches[{j}]")
                        for j, m in enumerate(doc.seq(rule.get("matches"), f"{path}.matches")))
        modifiers: dict[str, Any] = {}
        mirrors = []
        for j, f in enumerate(doc.seq(rule.get("filters"), f"{path}.filters")):
            kind, modifier = _filter(doc, f, f"{path}.filters[{j}]", domain)
            if kind == "RequestMirror":  # Gateway API allows several
                mirrors.append(modifier)
                continue
            if kind in modifiers:
                raise doc.fail(f"{path}.filters[{j}]", f"{kind} may appear once per rule")
            modifiers[kind] = modifier
        redirect = modifiers.get("RequestRedirect")
        rewrite = modifiers.get("URLRewrite")
        if redirect is not None:
            if rule.get("backendRefs"):
                raise doc.fail(f"{path}.backendRefs", "a rule with a RequestRedirect sends no request: no backendRefs")
            if rewrite is not None or mirrors:
                raise doc.fail(f"{path}.filters", "a RequestRedirect cannot be combined with URLRewrite or "
                               "RequestMirror (no request is sent)")
        for edit in (redirect, rewrite):
            if edit is not None:
                prefix_only(doc, edit.path_kind, matches, f"{path}.filters")
        backends = backend_refs(doc, rule.get("backendRefs"), f"{path}.backendRefs", domain)
        failover = _linkerd.failover_over(primary, backends)
        tmo = doc.mapping(rule.get("timeouts") or {}, f"{path}.timeouts", {"request", "backendRequest"})
        request = doc.duration(tmo["request"], f"{path}.timeouts.request") if "request" in tmo else None
        backend = (doc.duration(tmo["backendRequest"], f"{path}.timeouts.backendRequest")
                   if "backendRequest" in tmo else None)
        if request and backend and backend > request:
            raise doc.fail(f"{path}.timeouts.backendRequest", "must not exceed timeouts.request")
        routes.append(Route(
            name=str(rule.get("name") or f"{ident}#{i}"),
            matches=matches,
            # Rule timeouts win over the annotations (Linkerd's documented behaviour).
            timeout=request if request is not None else timeouts.get("request"),
            backend_timeout=backend if backend is not None else timeouts.get("response"),
            idle_timeout=timeouts.get("idle"),
            is_retryable=retry is not None,
            retry=retry,
            backends=tuple(backends),
            request_header_modifier=modifiers.get("RequestHeaderModifier"),
            response_header_modifier=modifiers.get("ResponseHeaderModifier"),
            redirect=redirect,
            rewrite=rewrite,
            mirrors=tuple(mirrors),
            failover=failover,
            source=f"HTTPRoute/{ident}",
            order=(stamp, ident, i),
            group=str(doc.body.get("apiVersion", "")).rsplit("/", 1)[0],
        ))
    if primary is not None and not any(r.failover for r in routes):
        raise doc.fail(f"metadata.annotations[{_linkerd.FAILOVER_PRIMARY}]",
                       f"{primary} is not a backendRef of any rule")
    return routes


def http_route(doc: Doc, domain: str) -> list[Piece]:
    """One piece per Service parent; routes without a Service parent are reported, not used."""
    return service_pieces(doc, domain, http_rules(doc, domain))


def service_pieces(doc: Doc, domain: str, routes: list[Route]) -> list[Piece]:
    """An HTTPRoute's or GRPCRoute's rules as one piece per Service parent (other parents: a warning)."""
    spec, ident = doc.body["spec"], f"{doc.namespace or 'default'}/{doc.name}"
    pieces, skipped = [], []
    for i, ref in enumerate(doc.seq(spec.get("parentRefs"), "spec.parentRefs")):
        p = f"spec.parentRefs[{i}]"
        body = doc.mapping(ref, p, {"group", "kind", "name", "namespace", "port", "sectionName"})
        name = doc.string(body.get("name"), f"{p}.name")
        if body.get("kind") != "Service" or body.get("group", "core") not in ("", "core"):
            skipped.append(f"{body.get('kind', 'Gateway')}/{name}")
            continue
        port = doc.integer(body["port"], f"{p}.port", 1, 65535) if "port" in body else None
        authority = service_authority(name, body.get("namespace") or doc.namespace, domain, port)
        pieces.append(Piece(authority, f"{doc.kind}/{ident}", gateway_routes=tuple(routes)))
    if not pieces:
        raise doc.fail("spec.parentRefs", "no Service parent (inbound Server/Gateway parents are not outbound policy)"
                       if skipped else "required")
    if skipped:
        pieces[0].warnings.append(f"{doc.kind}/{ident}: non-Service parents ignored: {', '.join(skipped)}")
    return pieces
