"""The Kubernetes source: Services and EndpointSlices watched cluster-wide, Pods read on demand.

``svc.ns.svc.<cluster domain>:port`` (and ``svc.ns:port``, ``svc.ns.svc:port``)
and each cluster IP with a Service port name the ready endpoints of the
Service's EndpointSlices, on the slice port of the same name (or a numeric
targetPort). A Pod behind an endpoint is read the first time a watched
service needs it (``targetRef``) and cached by uid: its ServiceAccount gives
the identity ``<sa>.<ns>.serviceaccount.identity.<trust domain>``, and a
``meshproxy`` container (or ``meshproxy.io/inject: enabled``) makes the
endpoint meshed (``proxy`` = podIP:4143). Until its Pod is known an endpoint
is held back: an unverified endpoint would be sent plaintext. ``resolve``
waits (bounded) for those reads; ``lookup`` does not.

This module and its client (k8s_api, k8s_client, k8s_wire: the standard
library only) are imported only when the destination is k8s.
"""

from __future__ import annotations

import asyncio

from proxy.config import DiscoverySettings
from proxy.discovery.backoff import Backoff
from proxy.discovery.k8s_api import ApiError, Informer, KubeApi
from proxy.discovery.k8s_model import (
    PodInfo,
    ServiceInfo,
    SliceInfo,
    endpoint,
    pod_info,
    service_info,
    slice_info,
    target_port,
)
from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import snapshot
from proxy.discovery.resolver import NameIndex, Resolver, Watch
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.discovery.k8s")

WatchKey = tuple[str, str, int]  # namespace, service, port
PodKey = tuple[str, str]


class K8sResolver(Resolver):
    kind = "k8s"

    def __init__(self, settings: DiscoverySettings, metrics: DiscoveryMetrics | None = None, *,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, watch_timeout: int = 290,
                 request_timeout: float = 30.0, start_timeout: float = 5.0, pod_concurrency: int = 8) -> None:
        super().__init__(metrics)
        self.settings = settings
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.watch_timeout, self.start_timeout = watch_timeout, start_timeout
        self.api = KubeApi(settings, request_timeout)
        self._services: dict[tuple[str, str], ServiceInfo] = {}
        self._slices: dict[tuple[str, str], SliceInfo] = {}
        self._by_service: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._index: NameIndex[tuple[str, str, int]] = NameIndex(settings.cluster_domain)
        self._watches: dict[tuple[str, str], dict[int, Watch]] = {}
        self._pending: dict[WatchKey, asyncio.Event] = {}  # watches holding endpoints back for Pods
        self._pods: dict[PodKey, PodInfo] = {}
        self._gone: set[tuple[str, str, str | None]] = set()  # (ns, pod, uid) that 404ed
        self._fetching: dict[PodKey, asyncio.Task] = {}
        self._retry_at: dict[PodKey, float] = {}
        self._pod_backoff: dict[PodKey, Backoff] = {}
        self._waiters: dict[PodKey, set[WatchKey]] = {}
        self._pod_errors = 0
        self._pod_limit = asyncio.Semaphore(pod_concurrency)
        self._dirty: set[tuple[str, str]] = set()
        self._index_dirty = False
        self._scheduled = False
        self._informers: list[Informer] = []
        self._tasks: list[asyncio.Task] = []

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Connect and wait (at most ``start_timeout``) for the first lists; an API that is down is retried."""
        await self.api.open()
        loop = asyncio.get_running_loop()
        for kind, path, handler in (("Service", "/api/v1/services", self._on_service),
                                    ("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices", self._on_slice)):
            informer = Informer(self.api, kind, path, handler, on_state=self._on_state,
                                backoff=Backoff(self.backoff_base, self.backoff_cap), watch_timeout=self.watch_timeout)
            self._informers.append(informer)
            self._tasks.append(loop.create_task(informer.run(), name=f"discovery-k8s {kind}"))
        self._tasks.append(loop.create_task(self._sweep_pods(), name="discovery-k8s pod sweep"))
        deadline = loop.time() + self.start_timeout
        while not self.synced and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if not self.synced:
            log.warning("Kubernetes API not synced yet; unknown names pass through until it is")

    async def stop(self) -> None:
        tasks = self._tasks + list(self._fetching.values())
        self._tasks, self._informers = [], []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.close()

    @property
    def synced(self) -> bool:
        return bool(self._informers) and all(i.synced for i in self._informers)

    # ---- the Resolver interface ---------------------------------------------------

    def lookup(self, host: str, port: int) -> Watch | None:
        if self._index_dirty:  # a Service changed and the coalesced flush has not run yet
            self._rebuild_index()
        key = self._index.get(host, port)
        if key is None:
            return None
        ns, name, port = key
        ports = self._watches.setdefault((ns, name), {})
        watch = ports.get(port)
        if watch is None:
            watch = ports[port] = Watch(f"{name}.{ns}.svc.{self.settings.cluster_domain}:{port}", self.metrics)
            self._recompute(key, watch)
        return watch

    async def resolve(self, host: str, port: int, timeout: float = 1.0) -> Watch | None:
        watch = self.lookup(host, port)
        key = self._index.get(host, port)
        pending = self._pending.get(key) if key is not None else None
        if watch is not None and pending is not None:
            try:
                await asyncio.wait_for(pending.wait(), timeout)
            except TimeoutError:
                pass
        return watch

    # ---- informer events --------------------------------------------------------

    def _on_service(self, event: str, key: tuple[str, str], obj: dict | None) -> None:
        try:
            info = None if event == "DELETED" or obj is None else service_info(obj)
        except (KeyError, TypeError, ValueError) as err:
            log.warning("malformed Service ignored", service=f"{key[0]}/{key[1]}", error=repr(err))
            info = None
        if info is None:
            self._services.pop(key, None)
        else:
            self._services[key] = info
        self._index_dirty = True
        self._mark(key)

    def _on_slice(self, event: str, key: tuple[str, str], obj: dict | None) -> None:
        old = self._slices.pop(key, None)
        if old is not None:
            self._by_service.get(old.service, set()).discard(key)
            self._mark(old.service)
        if event == "DELETED" or obj is None:
            return
        try:
            info = slice_info(obj)
        except (KeyError, TypeError, ValueError) as err:
            log.warning("malformed EndpointSlice ignored", slice=f"{key[0]}/{key[1]}", error=repr(err))
            return
        if info is not None:
            self._slices[key] = info
            self._by_service.setdefault(info.service, set()).add(key)
            self._mark(info.service)

    def _on_state(self) -> None:
        self.metrics.up = int(bool(self._informers) and all(i.synced and i.connected for i in self._informers))
        self.metrics.source_errors = sum(i.errors for i in self._informers) + self._pod_errors

    # ---- recomputing endpoint sets -------------------------------------------------

    def _mark(self, service: tuple[str, str]) -> None:
        self._dirty.add(service)
        if not self._scheduled:
            self._scheduled = True  # coalesce a burst of events (a relist) into one pass
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._index_dirty:
            self._rebuild_index()
        dirty, self._dirty = self._dirty, set()
        for service in dirty:
            for port, watch in list(self._watches.get(service, {}).items()):
                try:
                    self._recompute((*service, port), watch)
                except Exception:
                    log.error("endpoint recompute failed", service=watch.name, exc_info=True)

    def _rebuild_index(self) -> None:
        self._index_dirty = False
        index: NameIndex[tuple[str, str, int]] = NameIndex(self.settings.cluster_domain)
        for (ns, name), svc in self._services.items():
            for p in svc.ports:
                index.add(f"{name}.{ns}.svc.{self.settings.cluster_domain}", p.port, (ns, name, p.port))
                for ip in svc.cluster_ips:
                    index.add(ip, p.port, (ns, name, p.port))
        self._index = index

    def _recompute(self, key: WatchKey, watch: Watch) -> None:
        ns, name, port = key
        svc = self._services.get((ns, name))
        service_port = svc.port(port) if svc is not None else None
        if service_port is None:  # the Service or its port is gone
            watch.publish(snapshot(watch.name, ()))
            self._settle(key)
            if watch.subscriber_count == 0:
                self._watches.get((ns, name), {}).pop(port, None)
                watch.detach()
            return
        assert svc is not None  # service_port came from it
        endpoints, waiting = [], False
        for slice_key in self._by_service.get((ns, name), ()):
            slice_ = self._slices[slice_key]
            resolved = target_port(service_port, slice_)
            if resolved is None:
                continue
            for ep in slice_.endpoints:
                pod = None
                if ep.pod is not None:
                    if (*ep.pod, ep.pod_uid) in self._gone:
                        continue
                    pod = self._pods.get(ep.pod)
                    if pod is None or (ep.pod_uid and pod.uid != ep.pod_uid):
                        self._need_pod(ep.pod, ep.pod_uid, key)
                        waiting = True
                        continue
                endpoints.append((ep, endpoint(svc, service_port, ep, *resolved, pod, self.settings.trust_domain)))
        # Dual-stack pods appear in an IPv4 and an IPv6 slice: keep one address per pod, the IPv4 one.
        v4_pods = {ep.pod for ep, e in endpoints if ep.pod is not None and ":" not in ep.ip}
        chosen = [e for ep, e in endpoints if ":" not in ep.ip or ep.pod is None or ep.pod not in v4_pods]
        watch.publish(snapshot(watch.name, chosen, svc.accrual))
        if waiting:
            self._pending.setdefault(key, asyncio.Event())
        else:
            self._settle(key)

    def _settle(self, key: WatchKey) -> None:
        event = self._pending.pop(key, None)
        if event is not None:
            event.set()

    # ---- pods ---------------------------------------------------------------------

    def _need_pod(self, pod: PodKey, uid: str | None, waiter: WatchKey) -> None:
        self._waiters.setdefault(pod, set()).add(waiter)
        if pod in self._fetching:
            return
        loop = asyncio.get_running_loop()
        retry_at = self._retry_at.get(pod, 0.0)
        if loop.time() < retry_at:
            return  # a retry is already scheduled
        self._fetching[pod] = loop.create_task(self._fetch_pod(pod, uid), name=f"discovery-k8s pod {pod[0]}/{pod[1]}")

    async def _fetch_pod(self, pod: PodKey, uid: str | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._pod_limit:
                obj = await self.api.get(f"/api/v1/namespaces/{pod[0]}/pods/{pod[1]}")
            info = pod_info(obj)
            self._pods[pod] = info
            if uid and info.uid != uid:  # the name now belongs to a newer pod; this endpoint is stale
                self._gone.add((*pod, uid))
            self._retry_at.pop(pod, None)
            self._pod_backoff.pop(pod, None)
        except ApiError as err:
            if err.status == 404:
                self._gone.add((*pod, uid))
            else:
                self._pod_failed(pod, err, loop)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as err:
            self._pod_failed(pod, err, loop)
        finally:
            self._fetching.pop(pod, None)
        self._wake(pod)

    def _pod_failed(self, pod: PodKey, err: Exception, loop) -> None:
        self._pod_errors += 1
        self._on_state()
        delay = self._pod_backoff.setdefault(pod, Backoff(self.backoff_base, self.backoff_cap)).next()
        self._retry_at[pod] = loop.time() + delay
        log.warning("cannot read Pod; its endpoint waits", pod=f"{pod[0]}/{pod[1]}", error=str(err),
                    retry_in=round(delay, 2))
        loop.call_later(delay, self._retry_due, pod)

    def _retry_due(self, pod: PodKey) -> None:
        # The timer may fire a little before loop.time() reaches retry_at
        # (libuv timers have millisecond resolution): clear it, or the retry
        # it was armed for would be skipped as "already scheduled", for good.
        self._retry_at.pop(pod, None)
        self._wake(pod)

    def _wake(self, pod: PodKey) -> None:
        for ns, name, _ in self._waiters.pop(pod, ()):
            self._mark((ns, name))

    async def _sweep_pods(self, interval: float = 60.0) -> None:
        """Forget Pods no watched service refers to any more (bounded memory under churn)."""
        while True:
            await asyncio.sleep(interval)
            wanted: set[PodKey] = set()
            for service in self._watches:
                for slice_key in self._by_service.get(service, ()):
                    wanted.update(ep.pod for ep in self._slices[slice_key].endpoints if ep.pod is not None)
            for pod in [p for p in self._pods if p not in wanted]:
                del self._pods[pod]
            self._gone = {g for g in self._gone if g[:2] in wanted}
            for table in (self._retry_at, self._pod_backoff):
                for pod in [p for p in table if p not in wanted]:
                    del table[pod]
