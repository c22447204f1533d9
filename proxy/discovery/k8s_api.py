"""The informer: one resource kind listed, then watched, kept in step with a handler.

It lists a resource, then watches from the list's resourceVersion, following
bookmarks; a stream that ends is resumed from the last version seen,
``410 Gone`` (HTTP status or an ``ERROR`` event) forces a relist, as does an
event too large to read, and any other failure is retried with backoff,
keeping what is known. The client (``KubeApi``, ``ApiError``, ``Gone``) is
k8s_client's, re-exported here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from proxy.discovery.backoff import Backoff
from proxy.discovery.k8s_client import ApiError, EventTooLarge, Gone, KubeApi, Unavailable
from proxy.telemetry.logging import get_logger

__all__ = ["ApiError", "EventTooLarge", "Gone", "Informer", "KubeApi", "Unavailable"]

log = get_logger("proxy.discovery.k8s")


Handler = Callable[[str, tuple[str, str], dict | None], None]  # (ADDED|MODIFIED|DELETED, key, object)


class Informer:
    """Keeps a handler in step with one resource kind across the whole cluster."""

    def __init__(self, api: KubeApi, kind: str, path: str, handler: Handler, *, on_state: Callable[[], None],
                 backoff: Backoff, watch_timeout: int = 290, page_size: int = 500) -> None:
        self.api, self.kind, self.path, self.handler = api, kind, path, handler
        self.on_state = on_state  # called when synced/connected change
        self.backoff = backoff
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.versions: dict[tuple[str, str], str] = {}  # key -> resourceVersion, to diff relists
        self.synced = False  # listed at least once
        self.connected = False
        self.errors = 0
        self.relists = 0

    async def run(self) -> None:
        version: str | None = None
        while True:
            started = time.monotonic()
            events = 0
            try:
                if version is None:
                    version = await self._list()
                    self._set(connected=True)
                stream = self.api.watch(self.path, {"resourceVersion": version}, self.watch_timeout,
                                        on_open=lambda: self._set(connected=True))
                async for event in stream:
                    events += 1
                    version = self._apply(event) or version
                    self._set(connected=True)
                    self.backoff.reset()
                # The server ended the stream (timeoutSeconds): resume where we were.
                if events == 0 and time.monotonic() - started < 1.0:
                    await asyncio.sleep(self.backoff.next())  # a server closing at once must not spin us
            except (Gone, EventTooLarge) as err:
                if isinstance(err, Gone):
                    log.info("watch expired, relisting", kind=self.kind)
                else:  # skipping the event would lose it: start over from a list (bounded apart)
                    self.errors += 1
                    self.on_state()
                    log.warning("watch event too large, relisting", kind=self.kind, error=str(err))
                version = None
                if events == 0:  # expired again straight after a list: do not hammer the server
                    await asyncio.sleep(self.backoff.next())
            except asyncio.CancelledError:
                raise
            except Exception as err:  # API down, network, bad JSON: keep what we know, retry
                self.errors += 1
                self.connected = False
                self.on_state()  # also on every error, so the error count is current
                delay = self.backoff.next()
                log.warning("Kubernetes API unavailable, keeping the last endpoints", kind=self.kind,
                            error=f"{type(err).__name__}: {err}", retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        items: list[dict] = []
        query = {"limit": str(self.page_size)}
        version = None
        while True:
            page = await self.api.get(self.path, query)
            version = version or page["metadata"]["resourceVersion"]
            items.extend(page.get("items") or ())
            token = page["metadata"].get("continue")
            if not token:
                break
            query = {"limit": str(self.page_size), "continue": token}
        self.relists += 1
        seen = set()
        for item in items:
            key = _key(item)
            seen.add(key)
            rv = item["metadata"].get("resourceVersion", "")
            if self.versions.get(key) != rv:
                event = "MODIFIED" if key in self.versions else "ADDED"
                self.versions[key] = rv
                self.handler(event, key, item)
        for key in [k for k in self.versions if k not in seen]:  # deleted while we were not watching
            del self.versions[key]
            self.handler("DELETED", key, None)
        if not self.synced:
            self.synced = True
            self.on_state()
        return version

    def _apply(self, event: dict) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            return version
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("unknown watch event ignored", kind=self.kind, type=kind)
            return version
        key = _key(obj)
        if kind == "DELETED":
            self.versions.pop(key, None)
            self.handler("DELETED", key, obj)
        else:
            self.versions[key] = version or ""
            self.handler(kind, key, obj)
        return version

    def _set(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.on_state()


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))
