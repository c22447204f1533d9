"""A mock of the Kubernetes API server, because no real one can run here.

It serves the few endpoints the k8s discovery source uses, in the shapes the
real API server returns them (see k8s_recorded.json): paginated lists with a
resourceVersion and ``continue`` tokens, chunked watch streams of
newline-delimited events that end after ``timeoutSeconds`` (or when a test
ends them), ``BOOKMARK`` events, ``410 Gone`` for a resourceVersion older than
the last compaction (an ``ERROR`` event on a watch, an HTTP 410 ``Status`` on
a list continuation), and Pod and Namespace reads with 404 ``Status`` bodies. Tests change
objects at runtime and can take the whole server down and bring it back on
the same port.

For ``meshproxy check --pre``/``--proxy`` it also serves ``/version``,
Namespace and ConfigMap reads, SelfSubjectAccessReviews (answered from ``denied``), the
CustomResourceDefinition list, Pod lists, and the pods/proxy subresource,
which forwards to the pod's ``status.podIP`` as the real API server does (a
test points it at a real proxy's admin port). ``token``, when set, is the
only bearer token accepted (401 otherwise, on every endpoint, as the API
server checks it); ``forbidden`` answers every request 403 (RBAC without the
grants). Optionally it serves TLS (``tls``: a server context).
"""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import threading
from pathlib import Path

from aiohttp import web

RECORDED = json.loads((Path(__file__).parent / "k8s_recorded.json").read_text())

RESOURCES = {
    "/api/v1/services": ("ServiceList", "Service", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSliceList", "EndpointSlice", "discovery.k8s.io/v1"),
}


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApiServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.forbidden = False  # True: every request gets 403
        self.peers: list[tuple[str, int]] = []  # the client address of each request (connection reuse)
        self.rv = int(RECORDED["startResourceVersion"])
        self.objects: dict[str, dict[tuple[str, str], dict]] = {path: {} for path in RESOURCES}
        self.log: dict[str, list[tuple[int, str, dict]]] = {path: [] for path in RESOURCES}
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.pods: dict[tuple[str, str], dict] = {}
        self.pod_status = 200  # set to 500 to make Pod reads fail
        self.namespaces: dict[str, dict] = {}  # name -> Namespace (add_namespace)
        self.namespace_status: dict[str, int] = {}  # name -> an error status its reads answer
        self.namespace_delay: dict[str, float] = {}  # name -> seconds before its reads are answered
        self.requests: list[tuple[str, dict[str, str], str | None]] = []  # (path, query, Authorization)
        self.changed = asyncio.Condition()
        self.version = {"major": "1", "minor": "29", "gitVersion": "v1.29.4", "platform": "linux/amd64"}
        self.denied: set[tuple[str, str, str | None]] = set()  # (group, resource, namespace or None)
        self.crds: dict[str, dict] = {}
        self.configmaps: dict[tuple[str, str], dict] = {}
        self.token: str | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._generation = 0  # bumped to end every open watch stream
        for path, key in (("/api/v1/services", "services"),
                          ("/apis/discovery.k8s.io/v1/endpointslices", "endpointslices")):
            for item in RECORDED[key]["items"]:
                meta = item["metadata"]
                self.objects[path][(meta["namespace"], meta["name"])] = copy.deepcopy(item)
        for pod in RECORDED["pods"]:
            self.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = copy.deepcopy(pod)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> FakeApiServer:
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/api/v1/services", self._collection)
        app.router.add_get("/apis/discovery.k8s.io/v1/endpointslices", self._collection)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self._pod)
        app.router.add_get("/version", self._version)
        app.router.add_get("/api/v1/namespaces/{name}", self._namespace)
        app.router.add_get("/api/v1/namespaces/{ns}/configmaps/{name}", self._configmap)
        app.router.add_post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self._access_review)
        app.router.add_get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", self._crd_list)
        app.router.add_get("/api/v1/pods", self._pod_list)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._pod_list)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/proxy/{tail:.*}", self._pod_proxy)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """The API server goes away: listener closed, open watch streams cut."""
        await self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- changing the cluster --------------------------------------------------------

    async def put(self, path: str, obj: dict) -> int:
        """Create or replace an object; watchers see ADDED or MODIFIED."""
        obj = copy.deepcopy(obj)
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        event = "MODIFIED" if key in self.objects[path] else "ADDED"
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[path][key] = obj
        await self._emit(path, event, obj)
        return self.rv

    def add_namespace(self, name: str, annotations: dict[str, str] | None = None) -> dict:
        """A Namespace as the API server returns it (its fields as of 1.29)."""
        self.rv += 1
        metadata: dict = {"name": name, "uid": f"00000000-0000-4000-8000-{self.rv:012d}",
                          "resourceVersion": str(self.rv), "creationTimestamp": "2026-01-05T09:12:44Z",
                          "labels": {"kubernetes.io/metadata.name": name}}
        if annotations is not None:
            metadata["annotations"] = dict(annotations)
        metadata["managedFields"] = [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                      "apiVersion": "v1", "time": "2026-01-05T09:12:44Z", "fieldsType": "FieldsV1",
                                      "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]
        namespace = {"kind": "Namespace", "apiVersion": "v1", "metadata": metadata,
                     "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        self.namespaces[name] = namespace
        return namespace

    async def delete(self, path: str, namespace: str, name: str) -> None:
        obj = self.objects[path].pop((namespace, name))
        self.rv += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        await self._emit(path, "DELETED", obj)

    async def bookmark(self, path: str) -> int:
        """Advance the resourceVersion (as unrelated writes do) and send watchers a BOOKMARK."""
        self.rv += 1
        _, kind, api_version = RESOURCES[path]
        await self._emit(path, "BOOKMARK", {"kind": kind, "apiVersion": api_version,
                                            "metadata": {"resourceVersion": str(self.rv)}})
        return self.rv

    async def compact(self) -> None:
        """etcd compaction: every resourceVersion seen so far is too old to watch from."""
        self.compacted = self.rv
        for path in self.log:
            self.log[path].clear()

    async def end_watches(self) -> None:
        async with self.changed:
            self._generation += 1
            self.changed.notify_all()

    def watch_versions(self, path: str) -> list[str]:
        return [q.get("resourceVersion") for p, q, _ in self.requests if p == path and q.get("watch") == "true"]

    async def _emit(self, path: str, event: str, obj: dict) -> None:
        async with self.changed:
            self.log[path].append((self.rv, event, obj))
            self.changed.notify_all()

    # ---- handlers ---------------------------------------------------------------------

    @web.middleware
    async def _authorize(self, request: web.Request, handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(tuple(peer[:2]) if peer else ("", 0))
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            self.requests.append((request.path, dict(request.query), request.headers.get("Authorization")))
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        if self.forbidden:
            self.requests.append((request.path, dict(request.query), request.headers.get("Authorization")))
            message = (f'services is forbidden: User "system:serviceaccount:default:web" cannot list resource '
                       f'"{request.path.rsplit("/", 1)[-1]}" at the cluster scope')
            return web.json_response(status(403, "Forbidden", message), status=403)
        return await handler(request)

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        path, query = request.path, dict(request.query)
        self.requests.append((path, query, request.headers.get("Authorization")))
        if query.get("watch") == "true":
            return await self._watch(request, path, query)
        list_kind, _, api_version = RESOURCES[path]
        items = [self.objects[path][k] for k in sorted(self.objects[path])]
        limit = int(query.get("limit") or 0) or len(items) or 1
        rv, offset = self.rv, 0
        if "continue" in query:
            rv_text, _, offset_text = query["continue"].partition(":")
            rv, offset = int(rv_text), int(offset_text)
            if rv < self.compacted:
                return web.json_response(status(410, "Expired", "The provided continue parameter is too old "
                                                "to display a consistent list result."), status=410)
        page = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")}
                for item in items[offset:offset + limit]]
        meta: dict = {"resourceVersion": str(rv)}
        if offset + limit < len(items):
            meta["continue"] = f"{rv}:{offset + limit}"
            meta["remainingItemCount"] = len(items) - offset - limit
        return web.json_response({"kind": list_kind, "apiVersion": api_version, "metadata": meta, "items": page})

    async def _watch(self, request: web.Request, path: str, query: dict) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        since = int(query.get("resourceVersion") or self.rv)
        if since < self.compacted:
            message = f"too old resource version: {since} ({self.rv})"
            event = {"type": "ERROR", "object": status(410, "Expired", message)}
            await response.write(json.dumps(event).encode() + b"\n")
            return response
        generation = self._generation
        deadline = asyncio.get_running_loop().time() + int(query.get("timeoutSeconds") or 1800)
        sent = since
        loop = asyncio.get_running_loop()
        try:
            while True:
                async with self.changed:
                    pending = [entry for entry in self.log[path] if entry[0] > sent]
                    if not pending:
                        remaining = deadline - loop.time()
                        if self._generation != generation or remaining <= 0:
                            break
                        try:
                            await asyncio.wait_for(self.changed.wait(), remaining)
                        except TimeoutError:
                            break
                        continue
                for rv, event, obj in pending:
                    sent = rv
                    await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def _pod(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        self.requests.append((request.path, dict(request.query), request.headers.get("Authorization")))
        if self.pod_status != 200:
            return web.json_response(status(self.pod_status, "InternalError", "etcdserver: request timed out"),
                                     status=self.pod_status)
        pod = self.pods.get((ns, name))
        if pod is None:
            return web.json_response(status(404, "NotFound", f'pods "{name}" not found'), status=404)
        return web.json_response(pod)

    # ---- what meshproxy check --pre / --proxy read --------------------------------------

    def _denied(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query), request.headers.get("Authorization")))
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        return None

    async def _version(self, request: web.Request) -> web.Response:
        return self._denied(request) or web.json_response(self.version)

    async def _namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if denied := self._denied(request):
            return denied
        if name in self.namespace_delay:
            await asyncio.sleep(self.namespace_delay[name])
        code = self.namespace_status.get(name)
        if code is not None:
            return web.json_response(status(code, "InternalError", "etcdserver: request timed out"), status=code)
        namespace = self.namespaces.get(name)
        if namespace is None:
            return web.json_response(status(404, "NotFound", f'namespaces "{name}" not found'), status=404)
        return web.json_response(namespace)

    async def _configmap(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        found = self.configmaps.get((ns, name))
        if found is None:
            return self._denied(request) or web.json_response(
                status(404, "NotFound", f'configmaps "{name}" not found'), status=404)
        return self._denied(request) or web.json_response(found)

    async def _access_review(self, request: web.Request) -> web.Response:
        if denied := self._denied(request):
            return denied
        review = await request.json()
        attrs = review["spec"]["resourceAttributes"]
        allowed = (attrs.get("group", ""), attrs["resource"], attrs.get("namespace")) not in self.denied
        answer = {**review, "status": {"allowed": allowed}}
        if not allowed:
            answer["status"]["reason"] = "no RBAC policy matched"
        return web.json_response(answer, status=201)

    async def _crd_list(self, request: web.Request) -> web.Response:
        return self._denied(request) or web.json_response({
            "kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
            "metadata": {"resourceVersion": str(self.rv)}, "items": [self.crds[k] for k in sorted(self.crds)]})

    async def _pod_list(self, request: web.Request) -> web.Response:
        ns = request.match_info.get("ns")
        items = [self.pods[k] for k in sorted(self.pods) if ns is None or k[0] == ns]
        return self._denied(request) or web.json_response({
            "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.rv)}, "items": items})

    async def _pod_proxy(self, request: web.Request) -> web.Response:
        if denied := self._denied(request):
            return denied
        from aiohttp import ClientError, ClientSession, ClientTimeout

        name, _, port = request.match_info["name"].partition(":")
        pod = self.pods.get((request.match_info["ns"], name))
        if pod is None:
            return web.json_response(status(404, "NotFound", f'pods "{name}" not found'), status=404)
        url = f"http://{pod['status']['podIP']}:{port}/{request.match_info['tail']}"
        try:
            async with ClientSession(timeout=ClientTimeout(total=5)) as session, session.get(url) as answer:
                return web.Response(status=answer.status, body=await answer.read(),
                                    content_type=answer.content_type)
        except (ClientError, OSError, TimeoutError) as err:
            return web.json_response(status(503, "ServiceUnavailable", f"error trying to reach service: {err}"),
                                     status=503)


class Cluster:
    """The fake API server on a loop of its own thread, so a child process can query it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make() -> FakeApiServer:
            return await FakeApiServer().start()

        self.api = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)
        self.api.pods.clear()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
