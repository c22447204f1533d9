"""The one discovery interface: a logical name -> a Watch streaming endpoint-set updates.

``build_resolver`` picks the source from ``DiscoverySettings.destination``
(``file:///path.yaml``, ``dns``, ``k8s``); each source module is imported only
when chosen, so DNS and Kubernetes libraries cost nothing when unused.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Generic, TypeVar

from proxy.config import DiscoverySettings
from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import ServiceSnapshot, Update, diff, normalize_ip
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.discovery")

Callback = Callable[[Update], None]


class Watch:
    """The live endpoint set of one logical name.

    ``snapshot`` is always the current state (possibly zero endpoints).
    ``subscribe(cb)`` delivers later updates only: read ``snapshot`` first,
    then subscribe, without awaiting in between. Callbacks run on the event
    loop thread; one that raises is logged and the others still run.
    """

    __slots__ = ("name", "snapshot", "_subscribers", "_metrics", "__weakref__")

    def __init__(self, name: str, metrics: DiscoveryMetrics | None = None) -> None:
        self.name = name
        self.snapshot = ServiceSnapshot(name)
        self._subscribers: list[Callback] = []
        self._metrics = metrics
        if metrics is not None:
            metrics.set_endpoints(name, 0)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:  # already unsubscribed
                pass

        return unsubscribe

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, new: ServiceSnapshot) -> Update | None:
        """Source side: replace the snapshot and notify subscribers if anything changed."""
        update = diff(self.snapshot, new)
        if update is None:
            return None
        self.snapshot = new
        if self._metrics is not None:
            self._metrics.updates += 1
            self._metrics.set_endpoints(self.name, len(new.endpoints))
        for callback in tuple(self._subscribers):
            try:
                callback(update)
            except Exception:  # a subscriber's bug must not stop the source
                log.error("discovery subscriber failed", service=self.name, exc_info=True)
        return update

    def detach(self) -> None:
        """Source side: this name is gone for good; stop counting it in metrics."""
        if self._metrics is not None:
            self._metrics.drop_service(self.name)

    def __repr__(self) -> str:
        return f"<Watch {self.name} endpoints={len(self.snapshot.endpoints)} subscribers={len(self._subscribers)}>"


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, IPs in canonical form (brackets dropped)."""
    ip = normalize_ip(host)
    return ip if ip is not None else host.lower().rstrip(".")


def short_forms(host: str, cluster_domain: str) -> tuple[str, ...]:
    """``web.ns.svc.<domain>`` -> (``web.ns``, ``web.ns.svc``); other names have none."""
    suffix = ".svc." + cluster_domain.lower().strip(".")
    if host.endswith(suffix):
        base = host[: -len(suffix)]
        if base.count(".") == 1 and all(base.split(".")):
            return (base, base + ".svc")
    return ()


K = TypeVar("K")


class NameIndex(Generic[K]):
    """Authorities (and their cluster short forms) -> a source's key for the service.

    Exact names win over short forms, so a file that lists ``web.ns:80``
    literally keeps it even if ``web.ns.svc.cluster.local:80`` also exists.
    """

    __slots__ = ("cluster_domain", "_exact", "_short")

    def __init__(self, cluster_domain: str) -> None:
        self.cluster_domain = cluster_domain
        self._exact: dict[tuple[str, int], K] = {}
        self._short: dict[tuple[str, int], K] = {}

    def add(self, host: str, port: int, key: K) -> None:
        host = normalize_host(host)
        self._exact[(host, port)] = key
        for alias in short_forms(host, self.cluster_domain):
            self._short[(alias, port)] = key

    def get(self, host: str, port: int) -> K | None:
        host = normalize_host(host)
        key = self._exact.get((host, port))
        return key if key is not None else self._short.get((host, port))

    def __len__(self) -> int:
        return len(self._exact)


class Resolver(abc.ABC):
    """A discovery source. ``lookup`` is synchronous and cheap (call it per new authority).

    ``lookup`` returns None when the source does not know the name: the caller
    then forwards to the original destination unchanged (passthrough).
    ``resolve`` is the awaitable form for sources that need a round trip the
    first time a name is seen (DNS; Kubernetes pod identities): it waits for
    that, bounded by ``timeout``, then answers like ``lookup``.
    """

    kind = "none"

    def __init__(self, metrics: DiscoveryMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else DiscoveryMetrics()
        self.metrics.source = self.kind

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def lookup(self, host: str, port: int) -> Watch | None: ...

    async def resolve(self, host: str, port: int, timeout: float = 1.0) -> Watch | None:
        return self.lookup(host, port)


def build_resolver(settings: DiscoverySettings, metrics: DiscoveryMetrics | None = None) -> Resolver | None:
    """The resolver for ``settings.destination``, not started; None when discovery is off."""
    destination = settings.destination
    if not destination:
        return None
    if destination.startswith("file://"):
        from proxy.discovery.file import FileResolver

        return FileResolver(destination[len("file://"):], settings.cluster_domain, metrics)
    if destination == "dns":
        from proxy.discovery.dns import DnsResolver

        return DnsResolver(settings, metrics)
    if destination == "k8s":
        from proxy.discovery.k8s import K8sResolver

        return K8sResolver(settings, metrics)
    raise ValueError(f"unknown discovery destination {destination!r}")
