"""The DNS source: a name's A/AAAA (or SRV) records as its endpoints, refreshed by TTL.

``lookup`` is synchronous, so the first sight of a name cannot wait for DNS:
it starts resolving in the background and answers None (passthrough) until
the name has resolved once. Callers that can wait use ``await resolve(host,
port)``, which waits up to ``timeout`` for that first answer; both agree
afterwards. A name that never resolved (NXDOMAIN, no records) stays None and
is re-asked after its negative TTL. A name that resolved once and then stops
(NXDOMAIN, timeouts, SERVFAIL) keeps its last endpoints and is retried with
backoff. Names nobody subscribed to and nobody looked up for ``idle_timeout``
seconds are forgotten; at most ``max_names`` are tracked at once.
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.nameserver

from proxy.config import DiscoverySettings
from proxy.discovery.backoff import Backoff
from proxy.discovery.dnsquery import NoAddresses, Unavailable, resolve_addresses, resolve_srv, valid_name
from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import normalize_ip, snapshot
from proxy.discovery.resolver import Resolver, Watch, normalize_host
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.discovery.dns")

FAILURE_BACKOFF_CAP = 30.0  # a failing name is retried at least this often, whatever dns_max_ttl says


class _Name:
    __slots__ = ("host", "port", "watch", "task", "ready", "resolved", "last_used")

    def __init__(self, host: str, port: int, watch: Watch, now: float) -> None:
        self.host, self.port, self.watch = host, port, watch
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()  # set once the first attempt has finished, whatever its outcome
        self.resolved = False  # has had addresses at least once
        self.last_used = now


class DnsResolver(Resolver):
    kind = "dns"

    def __init__(self, settings: DiscoverySettings, metrics: DiscoveryMetrics | None = None, *,
                 query_timeout: float = 2.0, idle_timeout: float = 300.0, max_names: int = 10_000) -> None:
        super().__init__(metrics)
        self.min_ttl = max(settings.dns_min_ttl, 0.1)  # 0 would re-query in a busy loop
        self.max_ttl = max(settings.dns_max_ttl, self.min_ttl)
        self.nameservers = settings.dns_nameservers
        self.query_timeout = query_timeout
        self.idle_timeout = idle_timeout
        self.max_names = max_names
        self._names: dict[tuple[str, int], _Name] = {}
        self._resolver: dns.asyncresolver.Resolver | None = None  # from start() to stop()
        self._full_logged = False

    async def start(self) -> None:
        resolver = dns.asyncresolver.Resolver(configure=self.nameservers is None)
        if self.nameservers is not None:
            servers = []
            for server in self.nameservers:
                ip = normalize_ip(server.host)
                if ip is None:
                    raise ValueError(f"DNS nameserver {server} must be an IP address")
                servers.append(dns.nameserver.Do53Nameserver(ip, server.port))
            resolver.nameservers = servers
        resolver.timeout = resolver.lifetime = self.query_timeout
        resolver.cache = None  # TTLs drive our refreshes; a cache would hide changes
        self._resolver = resolver
        self.metrics.up = 1

    async def stop(self) -> None:
        tasks = [n.task for n in self._names.values() if n.task is not None]
        for name in list(self._names.values()):
            name.watch.detach()
        self._names.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._resolver = None

    def lookup(self, host: str, port: int) -> Watch | None:
        name = self._track(host, port)
        return name.watch if name is not None and name.resolved else None

    async def resolve(self, host: str, port: int, timeout: float = 1.0) -> Watch | None:
        name = self._track(host, port)
        if name is None:
            return None
        if not name.ready.is_set():
            try:
                await asyncio.wait_for(name.ready.wait(), timeout)
            except TimeoutError:
                pass
        return name.watch if name.resolved else None

    def _track(self, host: str, port: int) -> _Name | None:
        if self._resolver is None:
            return None
        host = normalize_host(host)
        if normalize_ip(host) is not None:
            return None  # an IP is its own endpoint: passthrough
        key = (host, 0 if host.startswith("_") else port)  # SRV names carry their own ports
        loop = asyncio.get_running_loop()
        name = self._names.get(key)
        if name is None:
            if not valid_name(host):
                return None
            if len(self._names) >= self.max_names:
                if not self._full_logged:
                    self._full_logged = True
                    log.warning("too many DNS names tracked; new names pass through", limit=self.max_names)
                return None
            watch = Watch(host if key[1] == 0 else f"{host}:{port}", self.metrics)
            name = self._names[key] = _Name(host, port, watch, loop.time())
            name.task = loop.create_task(self._refresh(key, name), name=f"discovery-dns {watch.name}")
        name.last_used = loop.time()
        return name

    async def _refresh(self, key: tuple[str, int], name: _Name) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.min_ttl, min(self.max_ttl, FAILURE_BACKOFF_CAP))
        failing = False
        while True:
            try:
                assert self._resolver is not None  # names are tracked only while started
                if name.host.startswith("_"):
                    endpoints, ttl = await resolve_srv(self._resolver, name.host)
                else:
                    endpoints, ttl = await resolve_addresses(self._resolver, name.host, name.port)
            except NoAddresses as err:
                self.metrics.up = 1
                if name.resolved:
                    delay = backoff.next()
                    if not failing:
                        log.warning("DNS name stopped resolving; keeping its last endpoints",
                                    name=name.watch.name, error=str(err))
                else:
                    delay = self._clamp(err.ttl if err.ttl is not None else self.min_ttl)
                failing = name.resolved
            except Unavailable as err:
                self.metrics.up = 0
                self.metrics.source_errors += 1
                delay = backoff.next()
                if not failing:
                    log.warning("DNS lookup failed; keeping the last endpoints", name=name.watch.name, error=str(err))
                failing = True
            except Exception:
                self.metrics.source_errors += 1
                delay = backoff.next()
                log.error("DNS refresh failed", name=name.watch.name, exc_info=True)
            else:
                self.metrics.up = 1
                if failing:
                    log.info("DNS name resolves again", name=name.watch.name)
                failing = False
                backoff.reset()
                name.resolved = True
                name.watch.publish(snapshot(name.watch.name, endpoints))
                delay = self._clamp(ttl)
            name.ready.set()
            await asyncio.sleep(delay)
            if name.watch.subscriber_count == 0 and loop.time() - name.last_used > self.idle_timeout:
                if self._names.get(key) is name:
                    del self._names[key]
                name.watch.detach()
                return

    def _clamp(self, ttl: float) -> float:
        return min(max(float(ttl), self.min_ttl), self.max_ttl)
