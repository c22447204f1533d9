"""``meshproxy viz edges`` (and the demo's edges table): who calls whom, and whether over mutual TLS
with which identities.

Two sides say it. A caller's proxy counts outbound requests by the callee's
``dst_*`` labels with the ``server_id`` it verified (or the ``no_tls_reason``);
a callee's proxy counts inbound requests by the ``client_id`` the caller proved.
A mesh identity is ``<serviceaccount>.<namespace>.serviceaccount.identity.<domain>``,
so an inbound row names its caller by the identity's first two labels (as
Linkerd does; a workload is expected to run as the service account of its own
name). An edge seen from both sides is one row, with both identities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace

from proxy.viz import table
from proxy.viz.query import Query
from proxy.viz.resources import Resource
from proxy.viz.source import Source

CHECK = "\u221a"


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    src_ns: str = ""
    dst_ns: str = ""
    client_id: str = ""
    server_id: str = ""
    no_tls_reason: str = ""  # empty when secured
    requests: float = 0.0

    @property
    def secured(self) -> bool:
        return bool(self.client_id or self.server_id) and not self.no_tls_reason

    def json(self) -> dict[str, object]:
        return {"src": self.src, "src_namespace": self.src_ns, "dst": self.dst, "dst_namespace": self.dst_ns,
                "client_id": self.client_id, "server_id": self.server_id, "no_tls_reason": self.no_tls_reason,
                "secured": self.secured}


def identity_owner(identity: str) -> tuple[str, str]:
    """(service account, namespace) of a mesh identity; ("", "") for anything else."""
    parts = identity.split(".")
    return (parts[0], parts[1]) if len(parts) >= 3 and parts[2] == "serviceaccount" else ("", "")


def inbound_edges(dst: str, callers: Iterable[tuple[tuple[str, str], float]], dst_ns: str = "") -> list[Edge]:
    """The edges into ``dst`` from its inbound ``request_total`` per (client_id, no_tls_reason):
    a caller with an identity is named by it; one without is ``-`` with the proxy's reason."""
    out = []
    for (client_id, reason), n in callers:
        if client_id:
            sa, ns = identity_owner(client_id)
            out.append(Edge(sa or client_id, dst, ns, dst_ns, client_id=client_id, requests=n))
        else:
            out.append(Edge("-", dst, "", dst_ns, no_tls_reason=reason or "no_identity", requests=n))
    return out


async def edges(source: Source, resource: Resource, namespace: str | None, window: float) -> list[Edge]:
    """Every edge between resources of ``resource``'s kind seen in the window (``namespace``: either end in it)."""
    label, dst_label = resource.label, resource.dst_label
    own = ("namespace", label) if label != "namespace" else ("namespace",)
    dst = ("dst_namespace", dst_label) if dst_label != "dst_namespace" else ("dst_namespace",)
    tls = ("tls", "no_tls_reason")
    outbound_q = Query("increase", "request_total", (("direction", "=", "outbound"),),
                       own + dst + ("server_id",) + tls)
    inbound_q = Query("increase", "request_total", (("direction", "=", "inbound"),), own + ("client_id",) + tls)
    outbound, inbound = await asyncio.gather(source.evaluate(outbound_q, window), source.evaluate(inbound_q, window))
    found: dict[tuple[str, str, str, str], Edge] = {}
    for labels, n in outbound:
        src_name, dst_name = labels.get(label, ""), labels.get(dst_label, "")
        if not src_name or not dst_name:
            continue
        reason = "" if labels.get("tls") == "true" else labels.get("no_tls_reason", "") or "no_identity"
        key = (labels.get("namespace", ""), src_name, labels.get("dst_namespace", ""), dst_name)
        edge = found.get(key) or Edge(src_name, dst_name, key[0], key[2])
        found[key] = replace(edge, server_id=labels.get("server_id", edge.server_id),
                             no_tls_reason=reason or edge.no_tls_reason, requests=edge.requests + n)
    plaintext_into: set[tuple[str, str]] = {(k[2], k[3]) for k, e in found.items() if e.no_tls_reason}
    for labels, n in inbound:
        dst_name = labels.get(label, "")
        if not dst_name or "tls" not in labels:
            continue  # no tls label: requests answered before their connection was known (no caller)
        dst_ns = labels.get("namespace", "")
        client_id = labels.get("client_id", "") if labels.get("tls") == "true" else ""
        [edge] = inbound_edges(dst_name, [((client_id, labels.get("no_tls_reason", "")), n)], dst_ns)
        if not client_id and (dst_ns, dst_name) in plaintext_into:
            continue  # the caller's own proxy already reported this plaintext edge, by name
        key = (edge.src_ns, edge.src, dst_ns, dst_name)
        if key in found:
            found[key] = replace(found[key], client_id=client_id or found[key].client_id)
        else:
            found[key] = edge
    rows = [e for e in found.values()
            if namespace is None or namespace in (e.src_ns, e.dst_ns) or resource.kind == "namespace"]
    if resource.name:
        rows = [e for e in rows if resource.name in (e.src, e.dst)]
    return sorted(rows, key=lambda e: (e.dst_ns, e.dst, e.src_ns, e.src))


def _short(identity: str) -> str:
    sa, ns = identity_owner(identity)
    return f"{sa}.{ns}" if sa else (identity or "-")


def render(rows: list[Edge], wide: bool = False) -> str:
    if not rows:
        return "No edges found."
    headers = ("SRC", "DST", "SRC_NS", "DST_NS") + (("CLIENT_ID", "SERVER_ID") if wide else ()) + ("SECURED",)
    lines = []
    for e in rows:
        cells = [e.src, e.dst, e.src_ns or "-", e.dst_ns or "-"]
        if wide:
            cells += [_short(e.client_id), _short(e.server_id)]
        cells.append(CHECK if e.secured else e.no_tls_reason)
        lines.append(cells)
    return table.render(headers, lines, left=len(headers))
