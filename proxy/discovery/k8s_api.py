"""Kubernetes API access for discovery: raw-JSON list, watch and get, and an informer loop.

kubernetes_asyncio supplies configuration (in-cluster service account or an
explicit URL), authentication and TLS; responses are read as raw JSON
(``_preload_content=False``) so no model objects are built, and watch streams
are split into lines here (an event can be larger than aiohttp's line limit).
The ``Informer`` lists a resource, then watches from the list's
resourceVersion, following bookmarks; a stream that ends is resumed from the
last version seen, ``410 Gone`` (HTTP status or an ``ERROR`` event) forces a
relist, and any other failure is retried with backoff, keeping what is known.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from proxy.config import DiscoverySettings
from proxy.discovery.backoff import Backoff

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

log = structlog.get_logger("proxy.discovery.k8s")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Gone(ApiError):
    """410: the resourceVersion (or continue token) is too old; relist."""


class KubeApi:
    """A connection to the API server (``await open()`` first)."""

    def __init__(self, settings: DiscoverySettings, request_timeout: float = 30.0) -> None:
        self.settings = settings
        self.request_timeout = request_timeout
        self._client: ApiClient | None = None

    async def open(self) -> None:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.config import load_incluster_config

        configuration = client.Configuration()
        s = self.settings
        if s.k8s_api:
            configuration.host = s.k8s_api.rstrip("/")
            if os.path.isfile(s.k8s_ca_file):
                configuration.ssl_ca_cert = s.k8s_ca_file
            if os.path.isfile(s.k8s_token_file):
                configuration.api_key = {"BearerToken": "Bearer " + _read_token(s.k8s_token_file)}
                configuration.refresh_api_key_hook = _token_refresher(s.k8s_token_file)
        else:  # KUBERNETES_SERVICE_HOST/PORT; the loader also rereads the (rotating) token
            load_incluster_config(client_configuration=configuration,
                                  token_filename=s.k8s_token_file, cert_filename=s.k8s_ca_file)
        self._client = client.ApiClient(configuration)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _request(self, path: str, query: dict[str, str], timeout):
        assert self._client is not None, "open() first"
        return await self._client.call_api(
            path, "GET", query_params=list(query.items()), header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout)

    async def get(self, path: str, query: dict[str, str] | None = None) -> dict:
        response = await self._request(path, query or {}, self.request_timeout)
        async with response:
            body = await response.read()
            _raise_for_status(response.status, body)
            return json.loads(body)

    async def watch(self, path: str, query: dict[str, str], timeout_seconds: int,
                    on_open: Callable[[], None] | None = None):
        """Yield watch events (dicts) until the server ends the stream; raises ApiError/Gone."""
        query = {**query, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        import aiohttp

        # No total limit (the stream is long-lived), but a silent server is a dead one.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout, sock_read=timeout_seconds + 30)
        response = await self._request(path, query, timeout)
        async with response:
            if response.status != 200:
                _raise_for_status(response.status, await response.read())
            if on_open is not None:
                on_open()
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _event(json.loads(line))
            if buffer.strip():
                yield _event(json.loads(buffer))


def _event(event: dict) -> dict:
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        code = int(status.get("code") or 500)
        raise (Gone if code == 410 else ApiError)(code, status.get("message", "watch error"))
    return event


def _raise_for_status(status: int, body: bytes) -> None:
    if 200 <= status < 300:
        return
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    raise (Gone if status == 410 else ApiError)(status, message)


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


def _token_refresher(path: str):
    """Reread a rotating (bound) service-account token at most once a minute."""
    state = {"at": time.monotonic()}

    def refresh(configuration) -> None:
        if time.monotonic() - state["at"] < 60:
            return
        state["at"] = time.monotonic()
        try:
            configuration.api_key["BearerToken"] = "Bearer " + _read_token(path)
        except OSError as err:
            log.warning("cannot reread the Kubernetes token; keeping the old one", file=path, error=str(err))

    return refresh


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
            except Gone:
                log.info("watch expired, relisting", kind=self.kind)
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
