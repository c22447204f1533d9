"""Linkerd's label sets for the HTTP and TCP families, resolved once per endpoint or connection, bounded.

The relays and the exchange core never build labels per request: the core
keeps the ``HttpStats`` it resolved on the outbound ``Target`` (one per
endpoint) or on the inbound connection (per Host), and the relays keep their
connection's ``TcpStats``. This module makes those objects on a cache miss:
it decides the labels (``direction``, ``authority``, ``target_addr`` with
``target_ip``/``target_port``, ``tls``/``no_tls_reason``,
``server_id``/``client_id``, the destination's ``dst_*`` labels from
discovery, the inbound ``srv_*`` labels and, per authorization decision, the
``route_*``/``authz_*`` ones) and renders their text once. Past ``limit`` label sets per direction and family
(``MESHPROXY_PEER_LABEL_LIMIT``) new ones share one catch-all set whose
varying labels read ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from proxy.core.addr import ConnMeta, Target
from proxy.telemetry.counters import HttpStats, TcpStats

OTHER = "other"

# Linkerd's reasons for a connection without mutual TLS.
NO_TLS_DISABLED = "disabled"  # this proxy has no identity
NO_TLS_FROM_REMOTE = "no_tls_from_remote"  # inbound: the client sent plaintext
NO_TLS_NO_DISCOVERY = "not_provided_by_service_discovery"  # outbound: discovery named no identity
NO_TLS_LOOPBACK = "loopback"  # the hop between the app and its own proxy

SERVICE_NAME = re.compile(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.")
_BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")

Pairs = tuple[tuple[str, str], ...]


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def text(pairs: Iterable[tuple[str, object]]) -> str:
    """``k="v",...`` (no braces), escaped; the one place label text is made for these families."""
    return ",".join(f'{k}="{escape(str(v))}"' for k, v in pairs)


def dst_labels(endpoint_labels: Pairs, service: str | None) -> Pairs:
    """Discovery's endpoint labels as Linkerd's ``dst_*`` labels; namespace and service from a
    ``<svc>.<ns>.svc.<domain>`` name when discovery did not say."""
    out: dict[str, str] = {}
    if service is not None:
        match = SERVICE_NAME.match(service)
        if match:
            out["dst_service"], out["dst_namespace"] = match.group(1), match.group(2)
    for key, value in endpoint_labels:
        out["dst_" + _BAD_LABEL_CHARS.sub("_", key)] = value
    return tuple(sorted(out.items()))


def service_ref(service: str) -> Pairs:
    """Linkerd's reference to a Service (``group``, ``kind``, ``namespace``, ``name``, ``port``,
    ``section_name``) from a service name, ``<name>.<namespace>.svc.<domain>:<port>`` or any other
    ``host:port`` (named by its host, with no namespace)."""
    host, _, port = service.rpartition(":")
    match = SERVICE_NAME.match(host)
    name, namespace = (match.group(1), match.group(2)) if match else (host, "")
    return (("group", "core"), ("kind", "Service"), ("namespace", namespace), ("name", name), ("port", port),
            ("section_name", ""))


def parent_labels(service: str) -> str:
    """The ``parent_*`` label text of recent Linkerd's outbound families for a service."""
    return text((f"parent_{k}", v) for k, v in service_ref(service))


class _Bounded:
    """A dict of label sets that stops growing at ``limit``: further keys get the catch-all."""

    def __init__(self, limit: int, make, overflow) -> None:
        self.limit = limit
        self.make = make
        self.sets: dict = {}
        self.overflow = overflow

    def get(self, key, *args):
        found = self.sets.get(key)
        if found is None:
            if len(self.sets) >= self.limit:
                return self.overflow
            found = self.sets[key] = self.make(*args)
        return found


class LabelSets:
    """One direction's HTTP and TCP label sets.

    ``has_identity``: this proxy has a mesh identity (otherwise every hop's
    ``no_tls_reason`` is ``disabled``). ``connection_target`` (inbound): where
    a connection's requests go, the ``target_addr`` of its labels.
    """

    def __init__(self, direction: str, limit: int, has_identity: bool, connection_target=None) -> None:
        self.direction = direction
        self.has_identity = has_identity
        self.connection_target = connection_target
        d = (("direction", direction),)
        # Requests answered before any target was chosen (malformed, shed, no route...).
        self.http_default = HttpStats(direction, text(d))
        self.tcp_src_default = TcpStats(direction, "src", text(d + (("peer", "src"),)))
        self.tcp_dst_default = TcpStats(direction, "dst", text(d + (("peer", "dst"),)))
        self._http = _Bounded(limit, self._make_http, HttpStats(direction, text(
            d + (("authority", OTHER), ("target_addr", OTHER), ("tls", OTHER)))))
        self._tcp = _Bounded(limit, self._make_tcp, None)
        self._tcp.overflow = TcpStats(direction, "src", text(d + (("peer", OTHER), ("target_addr", OTHER),
                                                                  ("tls", OTHER))))

    # -- HTTP ---------------------------------------------------------------------------
    def _make_http(self, pairs: Pairs) -> HttpStats:
        return HttpStats(self.direction, text(pairs))

    def outbound_http(self, target: Target) -> HttpStats:
        """The label set of requests sent to ``target`` (an endpoint or a passthrough address); kept on it."""
        service = target.service
        key = (target, service.name if service is not None else None)
        stats = target.stats
        if stats is None:
            stats = self._http.get(key, self._outbound_pairs(target))
            target.stats = stats
        return stats

    def _outbound_pairs(self, target: Target) -> Pairs:
        service = target.service
        authority = service.name if service is not None else str(target)
        pairs: list[tuple[str, str]] = [("direction", self.direction), ("authority", authority),
                                        *_target_pairs(target)]
        pairs.extend(self._server_tls(target))
        if service is not None:
            pairs.extend(dst_labels(service.endpoint_labels(target), service.name))
        return tuple(pairs)

    def _server_tls(self, target: Target) -> Pairs:
        if not self.has_identity:
            return (("tls", "no_identity"), ("no_tls_reason", NO_TLS_DISABLED))
        if target.identity is None:
            return (("tls", "no_identity"), ("no_tls_reason", NO_TLS_NO_DISCOVERY))
        return (("tls", "true"), ("server_id", target.identity))

    def inbound_http(self, meta: ConnMeta, host: bytes | None, decision=None) -> HttpStats:
        """The label set of requests on an inbound connection with this Host, judged by this
        authorization ``decision`` (proxy/policy/authz.py; None: no authorization): the caller
        caches it per connection and decision."""
        policy = _policy_labels(meta, decision)
        key = (meta.tls, meta.client_id, meta.orig_dst, meta.local, policy, host)
        stats = self._http.sets.get(key)
        if stats is not None:
            return stats
        return self._http.get(key, self._inbound_pairs(meta, host, policy))

    def _inbound_pairs(self, meta: ConnMeta, host: bytes | None, policy: Pairs) -> Pairs:
        target = self._inbound_target(meta)
        target_addr = target[0][1]
        authority = host.decode("latin-1") if host else target_addr
        pairs = [("direction", self.direction), ("authority", authority), *target]
        pairs.extend(self._client_tls(meta))
        pairs.extend(policy)
        return tuple(pairs)

    def _inbound_target(self, meta: ConnMeta) -> Pairs:
        """``target_addr``, ``target_ip``, ``target_port``: the original destination (or the app target)."""
        if meta.orig_dst is not None:
            return target_pairs(meta.orig_dst[0], meta.orig_dst[1])
        target = self.connection_target(meta) if self.connection_target is not None else None
        if target is not None:
            return target_pairs(target.host, target.port)
        return target_pairs(meta.local[0], meta.local[1])

    def _client_tls(self, meta: ConnMeta) -> Pairs:
        return inbound_tls_pairs(meta, self.has_identity)

    def http_sets(self) -> list[HttpStats]:
        out = [self.http_default, *self._http.sets.values()]
        if self._http.overflow.requests or self._http.overflow.latency_count:
            out.append(self._http.overflow)
        return out

    # -- TCP ------------------------------------------------------------------------------
    def _make_tcp(self, peer: str, pairs: Pairs) -> TcpStats:
        return TcpStats(self.direction, peer, text(pairs))

    def tcp_src(self, meta: ConnMeta) -> TcpStats:
        """The label set of an accepted connection, once its TLS and authorization are known."""
        srv = _srv_labels(meta)
        key = ("src", meta.tls, meta.client_id, meta.orig_dst, meta.local, srv)
        stats = self._tcp.sets.get(key)
        if stats is not None:
            return stats
        pairs: list[tuple[str, str]] = [("direction", self.direction), ("peer", "src")]
        if self.direction == "inbound":
            pairs.extend(self._inbound_target(meta))
            pairs.extend(self._client_tls(meta))
            pairs.extend(srv)
        else:
            # The app's own connection to this proxy: loopback, never mesh TLS.
            addr = meta.orig_dst if meta.orig_dst is not None else meta.local
            pairs.extend(target_pairs(addr[0], addr[1]))
            pairs.extend((("tls", "no_identity"), ("no_tls_reason", NO_TLS_LOOPBACK)))
        return self._tcp.get(key, "src", tuple(pairs))

    def tcp_dst(self, target: Target) -> TcpStats:
        """The label set of a connection this proxy opened to ``target``."""
        service = target.service
        key = ("dst", target, service.name if service is not None else None)
        stats = self._tcp.sets.get(key)
        if stats is not None:
            return stats
        pairs: list[tuple[str, str]] = [("direction", self.direction), ("peer", "dst"), *_target_pairs(target)]
        if self.direction == "inbound":
            pairs.extend((("tls", "no_identity"), ("no_tls_reason", NO_TLS_LOOPBACK)))  # to the app beside us
        else:
            pairs.extend(self._server_tls(target))
            if service is not None:
                pairs.extend(dst_labels(service.endpoint_labels(target), service.name))
        return self._tcp.get(key, "dst", tuple(pairs))

    def tcp_sets(self) -> list[TcpStats]:
        out = [self.tcp_src_default, self.tcp_dst_default, *self._tcp.sets.values()]
        if self._tcp.overflow.opened or self._tcp.overflow.closed:
            out.append(self._tcp.overflow)
        return out


def inbound_tls_pairs(meta: ConnMeta, has_identity: bool) -> Pairs:
    """An accepted connection's ``tls`` and ``client_id`` (or ``no_tls_reason``)."""
    if meta.tls:
        return (("tls", "true"), ("client_id", meta.client_id)) if meta.client_id else (("tls", "true"),)
    return (("tls", "no_identity"), ("no_tls_reason", NO_TLS_FROM_REMOTE if has_identity else NO_TLS_DISABLED))


def _srv_labels(meta: ConnMeta) -> Pairs:
    """Inbound: the ``srv_*`` labels of the Server the connection's port answers to (HTTP
    connections carry their authorization; others get none)."""
    authz = meta.authz
    port_policy = getattr(authz, "port_policy", None)
    return with_srv_port(port_policy.srv_labels, authz.port) if port_policy is not None else ()  # type: ignore[attr-defined]


def _policy_labels(meta: ConnMeta, decision) -> Pairs:
    """Inbound HTTP: the decision's ``srv_*``, ``route_*`` and ``authz_*`` labels (Linkerd's
    inbound request labels), or the port's ``srv_*`` alone without a decision."""
    if decision is None:
        return _srv_labels(meta)
    return with_srv_port(decision.labels, meta.authz.port)  # type: ignore[attr-defined]


def with_srv_port(labels: Pairs, port: int) -> Pairs:
    """Authorization labels with Linkerd's ``srv_port`` (the port the client asked for) after the
    server's own ``srv_*`` labels; the policy cannot know it (ports without a Server share one)."""
    at = 0
    while at < len(labels) and labels[at][0].startswith("srv_"):
        at += 1
    return labels[:at] + (("srv_port", str(port)),) + labels[at:]


def target_pairs(host: str, port: int) -> Pairs:
    """Linkerd's ``target_addr``, ``target_ip``, ``target_port`` of an address."""
    return (("target_addr", _fmt((host, port))), ("target_ip", host), ("target_port", str(port)))


def _target_pairs(target: Target) -> Pairs:
    """The endpoint's own address (for a meshed endpoint, the app's, not its proxy's)."""
    endpoint = target.endpoint
    if endpoint is not None:
        return target_pairs(endpoint.key[0], endpoint.key[1])
    return target_pairs(target.host, target.port)


def _fmt(addr: tuple) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
