"""The static-file source: endpoints from a YAML file, reloaded on change without a restart.

The file is polled (``os.stat`` every ``poll_interval`` seconds) and reread
when its device, inode, mtime or size changes. Stat follows symlinks, so an
atomic rename-replace (editors) and a ConfigMap's ``..data`` symlink swap
are both seen as a new inode. An invalid edit keeps the last good endpoints,
logs one error naming the file and the bad field, and counts a reload error;
an unreadable or deleted file keeps them too until the file is back.
"""

from __future__ import annotations

import asyncio
import os

from proxy.discovery.filespec import ServiceSpec, SpecError, parse_document
from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import ServiceSnapshot
from proxy.discovery.resolver import NameIndex, Resolver, Watch
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.discovery.file")

Signature = tuple[int, int, int, int]


class FileResolver(Resolver):
    kind = "file"

    def __init__(self, path: str, cluster_domain: str = "cluster.local",
                 metrics: DiscoveryMetrics | None = None, poll_interval: float = 1.0) -> None:
        super().__init__(metrics)
        self.path = path
        self.poll_interval = poll_interval
        self._cluster_domain = cluster_domain
        self._index: NameIndex[str] = NameIndex(cluster_domain)
        self._watches: dict[str, Watch] = {}  # listed now, or removed but still subscribed
        self._current: frozenset[str] = frozenset()
        self._signature: Signature | None = None
        self._missing_logged = False
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Load the file once (a bad or missing file is logged, not fatal) and start polling."""
        self.check()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="discovery-file")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def lookup(self, host: str, port: int) -> Watch | None:
        key = self._index.get(host, port)
        return None if key is None else self._watches.get(key)

    def services(self) -> tuple[str, ...]:
        """The canonical names the file currently lists."""
        return tuple(sorted(self._current))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.check()
            except Exception:  # never let the poller die; the next tick tries again
                log.error("endpoints file check failed", file=self.path, exc_info=True)

    def check(self) -> bool:
        """Reload if the file changed since the last look; True when new endpoints were applied."""
        before = self._stat()
        if before is None:
            self._unreadable("file not found or not readable")
            return False
        if before == self._signature:
            return False
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except OSError as err:
            self._unreadable(err.strerror or str(err))
            return False
        if self._stat() != before:  # written while we read: look again next tick
            return False
        self._signature = before
        self._missing_logged = False
        try:
            specs = parse_document(data.decode("utf-8"))
        except UnicodeDecodeError:
            return self._rejected(SpecError("", "the file is not UTF-8 text"))
        except SpecError as err:
            return self._rejected(err)
        self._apply(specs)
        self.metrics.up = 1
        log.info("endpoints file loaded", file=self.path, services=len(specs))
        return True

    def _stat(self) -> Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def _unreadable(self, why: str) -> None:
        self.metrics.up = 0
        self._signature = None  # reread whatever appears next, even an identical file
        if not self._missing_logged:
            self._missing_logged = True
            self.metrics.source_errors += 1
            log.error("endpoints file unreadable, keeping the last endpoints", file=self.path, error=why)

    def _rejected(self, err: SpecError) -> bool:
        self.metrics.up = 0
        self.metrics.reload_errors += 1
        log.error("endpoints file rejected, keeping the last good endpoints", file=self.path, error=str(err))
        return False

    def _apply(self, specs: dict[str, ServiceSpec]) -> None:
        index: NameIndex[str] = NameIndex(self._cluster_domain)
        for name, spec in specs.items():
            if name not in self._watches:
                self._watches[name] = Watch(name, self.metrics)
            index.add(spec.host, spec.port, name)
            for ip, port in spec.addresses:
                index.add(ip, port, name)
        self._index, self._current = index, frozenset(specs)  # new names visible before subscribers hear of changes
        for name, spec in specs.items():
            self._watches[name].publish(spec.snapshot)
        for name in [n for n in self._watches if n not in specs]:
            watch = self._watches[name]
            watch.publish(ServiceSnapshot(name))  # removed from the file: no endpoints
            if watch.subscriber_count == 0:
                watch.detach()
                del self._watches[name]

