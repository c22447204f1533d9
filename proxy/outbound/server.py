"""Outbound: accept -> detect -> pick the destination of each request -> connect -> relay.

Destination precedence (per request): the connection's original destination
when iptables redirected it here, then ``l5d-dst-override``, then an
absolute-form request URI (``http_proxy=`` clients) or ``CONNECT host:port``,
then ``Host``. With no discovery configured, the destination is connected to
directly.
"""

from __future__ import annotations

import structlog

from proxy.config import Config
from proxy.core.accept import AcceptStage
from proxy.core.addr import ConnMeta, Target, parse_authority
from proxy.core.responses import error_response, log_error
from proxy.errors import LoopDetected, NoDestination, ProxyError, RoutingError

DIRECTION = "outbound"
CACHE_LIMIT = 4096  # distinct authorities remembered; the cache is cleared when full

log = structlog.get_logger("proxy.outbound")


class OutboundRouter:
    """Chooses the target of each outbound request."""

    def __init__(self, own_addresses: set[tuple[str, int]]) -> None:
        self.own = own_addresses
        self._authorities: dict[tuple[bytes, int], Target] = {}
        self._orig: dict[tuple[str, int], Target] = {}

    def connection_target(self, meta: ConnMeta) -> Target | None:
        if meta.orig_dst is None:
            return None
        target = self._orig.get(meta.orig_dst)
        if target is None:
            target = Target(meta.orig_dst[0], meta.orig_dst[1])
            self._remember(self._orig, meta.orig_dst, target)
        return target

    def route(self, head, meta: ConnMeta) -> Target:
        if meta.orig_dst is not None:
            return self.connection_target(meta)  # type: ignore[return-value]
        via_connect = False
        if head.dst_override is not None:
            target = self._authority(head.dst_override, 80)
        elif head.method == b"CONNECT":
            target = self._authority(head.target, 443)
            via_connect = True
        elif head.target[:1] not in (b"/", b"*"):
            target = self._absolute(head.target)
        elif head.host is not None:
            target = self._authority(head.host, 80)
        else:
            raise NoDestination()
        if (target.host, target.port) in self.own:
            raise LoopDetected()
        if via_connect:
            target = Target(target.host, target.port, via_connect=True)
        return target

    def _authority(self, value: bytes, default_port: int) -> Target:
        key = (value, default_port)
        target = self._authorities.get(key)
        if target is None:
            target = parse_authority(value, default_port)
            if target is None:
                raise RoutingError(f"invalid destination authority {value[:100].decode('latin-1')!r}")
            self._remember(self._authorities, key, target)
        return target

    def _absolute(self, uri: bytes) -> Target:
        scheme, sep, rest = uri.partition(b"://")
        scheme = scheme.lower()
        if not sep or scheme not in (b"http", b"https"):
            raise RoutingError("unsupported request target (expected origin-form or http:// URI)")
        authority = rest.split(b"/", 1)[0].split(b"?", 1)[0]
        return self._authority(authority, 443 if scheme == b"https" else 80)

    @staticmethod
    def _remember(cache: dict, key, value) -> None:
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = value


def rescue(err: ProxyError, head, meta: ConnMeta, close: bool) -> bytes:
    """The one place outbound errors become responses (and log lines)."""
    log_error(DIRECTION, err, head, meta)
    return error_response(err, close)


def build(config: Config, ctx, own_addresses: set[tuple[str, int]]) -> tuple[AcceptStage, OutboundRouter]:
    router = OutboundRouter(own_addresses)
    ctx.router = router
    ctx.rescue = rescue
    stage = AcceptStage(
        direction=DIRECTION,
        ctx=ctx,
        detect_timeout=config.limits.detect_timeout,
        opaque_ports=config.opaque_ports,
        max_connections=config.max_connections,
        connect_timeout=config.limits.connect_timeout,
        connection_target=router.connection_target,
        refuse_without_target=False,
    )
    return stage, router
