"""``meshproxy viz --kubernetes``: the meshed pods of a cluster as the proxies to scrape and tap.

As ``linkerd viz`` does, the API server and credentials come from the kubeconfig (``--kubeconfig``,
else ``$KUBECONFIG``, else ``~/.kube/config``; ``--context``, else its current context), or, with no
kubeconfig, from the pod's own service account (in a cluster). Pods are listed once per command with
the project's own client (proxy/discovery/k8s_client.py); a pod counts when it is Running, has a podIP
and a proxy container (``meshproxy``, as the injector names it, or Linkerd's ``linkerd-proxy``). Its
admin port is the container port named ``linkerd-admin``/``meshproxy-admin`` (else 4191), its tap port
``linkerd-tap``/``meshproxy-tap`` (else 4190); its workload labels are Linkerd's (namespace, pod, the
owning deployment/statefulset/daemonset/k8s_job..., serviceaccount). Imported only when asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config import DiscoverySettings

PROXY_CONTAINERS = ("meshproxy", "linkerd-proxy")  # the injector's (proxy/inject/names.py) and Linkerd's
ADMIN_PORT_NAMES = ("linkerd-admin", "meshproxy-admin")
TAP_PORT_NAMES = ("linkerd-tap", "meshproxy-tap")
ADMIN_PORT, TAP_PORT = 4191, 4190
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# A controller's kind -> the label Linkerd's viz Prometheus gives its pods (``job`` is Prometheus's own).
_OWNER_LABELS = {"ReplicaSet": "replicaset", "StatefulSet": "statefulset", "DaemonSet": "daemonset",
                 "Job": "k8s_job", "ReplicationController": "replicationcontroller"}
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class KubeError(Exception):
    """The pods could not be listed; ``code`` 64 when the configuration is at fault, 69 when the API is."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.code = 64 if usage else 69


@dataclass(frozen=True, slots=True)
class MeshedPod:
    ip: str
    admin_port: int
    tap_port: int
    labels: tuple[tuple[str, str], ...]
    identity: str | None


def pods(args: argparse.Namespace) -> list[MeshedPod]:
    """The meshed pods of ``-n`` (default: default), of every namespace with ``-A`` or for commands without
    ``-n`` (tap, top, the dashboard), listed once per command; KubeError when none is found."""
    namespace = None if getattr(args, "all_namespaces", False) else getattr(args, "namespace", None)
    if hasattr(args, "namespace") and not getattr(args, "all_namespaces", False):
        namespace = namespace or "default"
    cached = getattr(args, "_meshed_pods", None)
    if cached is None:
        timeout = float(getattr(args, "timeout", 5.0) or 5.0)
        coroutine = list_pods(args.kubeconfig, args.context, namespace, max(timeout, 5.0))
        # Callers may already run a loop (viz stat's), so the list gets its own, in a thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cached = pool.submit(asyncio.run, coroutine).result()
        args._meshed_pods = cached
    if not cached:
        raise KubeError("no meshed pod (Running, with a meshproxy or linkerd-proxy container) in "
                        + (f"namespace {namespace}" if namespace else "any namespace"))
    return cached


async def list_pods(kubeconfig: str | None, context: str | None, namespace: str | None,
                    timeout: float) -> list[MeshedPod]:
    from proxy.discovery.k8s_client import ApiError, KubeApi

    settings, token, tls = connection(kubeconfig, context)
    api = KubeApi(settings, timeout, token=token, tls=tls)
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    try:
        await api.open()
        items: list[dict] = []
        query: dict[str, str] = {"limit": "500"}
        for _ in range(1000):  # bounded: 500 000 pods
            answer = await api.get(path, query)
            items += answer.get("items") or []
            more = (answer.get("metadata") or {}).get("continue")
            if not more:
                break
            query = {"limit": "500", "continue": more}
    except ApiError as err:
        where = api.endpoint.url if api.endpoint is not None else "the Kubernetes API"
        hint = {401: " (the credentials were refused)", 403: " (the user may not list pods)"}.get(err.status, "")
        raise KubeError(f"listing pods from {where}{path}: {err}{hint}" if err.status
                        else f"the Kubernetes API is unreachable: {err}") from None
    except Exception as err:  # ConfigError: no in-cluster configuration either
        raise KubeError(f"Kubernetes API: {err}", usage=True) from None
    finally:
        await api.close()
    return [pod for pod in map(meshed_pod, items) if pod is not None]


def meshed_pod(obj: dict) -> MeshedPod | None:
    """A pod's proxy, or None when it has none, is not Running or has no IP yet."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    proxy = next((c for c in spec.get("containers") or [] if c.get("name") in PROXY_CONTAINERS), None)
    ip = status.get("podIP")
    if proxy is None or status.get("phase") != "Running" or not ip:
        return None
    ports = {p.get("name"): p.get("containerPort") for p in proxy.get("ports") or [] if p.get("name")}
    namespace, name = meta.get("namespace", "default"), meta.get("name", "")
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    labels = {"namespace": namespace, "pod": name, "serviceaccount": account}
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is not None and owner.get("kind") in _OWNER_LABELS:
        kind, owner_name = owner["kind"], owner.get("name", "")
        suffix = "-" + (meta.get("labels") or {}).get("pod-template-hash", "\0")
        if kind == "ReplicaSet" and owner_name.endswith(suffix):
            labels["deployment"] = owner_name[: -len(suffix)]  # web-5d8f7c9b4 of deployment web
        labels[_OWNER_LABELS[kind]] = owner_name
    env = {e.get("name"): e.get("value") for e in proxy.get("env") or [] if isinstance(e.get("value"), str)}
    given = {"_MESHPROXY_POD_SERVICE_ACCOUNT": account, "_MESHPROXY_POD_NAMESPACE": namespace}
    identity = env.get("MESHPROXY_IDENTITY_NAME")  # the injector's $(VAR) form, expanded as the kubelet does
    identity = _VAR.sub(lambda m: given.get(m[1], m[0]), identity) if identity else None
    return MeshedPod(ip, _port(ports, ADMIN_PORT_NAMES, ADMIN_PORT), _port(ports, TAP_PORT_NAMES, TAP_PORT),
                     tuple(sorted(labels.items())), identity)


def _port(ports: dict, names: tuple[str, ...], default: int) -> int:
    return next((int(ports[n]) for n in names if isinstance(ports.get(n), int) and 0 < ports[n] < 65536), default)


# ---- where the API server is, and who we are to it --------------------------------------


def connection(kubeconfig: str | None, context: str | None) -> tuple[DiscoverySettings, str | None,
                                                                    ssl.SSLContext | None]:
    """The client's settings, bearer token and TLS context, from the kubeconfig or the service account."""
    paths = [kubeconfig] if kubeconfig else [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths:
        default = Path.home() / ".kube" / "config"
        if default.is_file() or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            paths = [str(default)]
    if not paths:  # in a pod: the service account, as discovery uses it
        return _settings(None, f"{SA_DIR}/token", f"{SA_DIR}/ca.crt"), None, None
    config = _merged(paths)
    name = context or config.get("current-context")
    if not name:
        raise KubeError(f"kubeconfig {os.pathsep.join(paths)}: no current context (use --context)", usage=True)
    ctx = _named(config, "contexts", "context", name, paths)
    cluster = _named(config, "clusters", "cluster", ctx.get("cluster"), paths)
    user = _named(config, "users", "user", ctx.get("user"), paths) if ctx.get("user") else {}
    cluster_dir = Path(config["_dirs"].get(("clusters", ctx.get("cluster")), "."))
    user_dir = Path(config["_dirs"].get(("users", ctx.get("user")), "."))
    server = str(cluster.get("server") or "")
    if not server.startswith(("http://", "https://")):
        raise KubeError(f"kubeconfig cluster {ctx.get('cluster')!r}: server {server!r} is not an http(s) URL",
                        usage=True)
    if user.get("exec") or user.get("auth-provider"):
        raise KubeError(f"kubeconfig user {ctx.get('user')!r}: credential plugins (exec, auth-provider) are not "
                        "supported; use a token or client certificate, or `kubectl proxy` and a kubeconfig "
                        "whose server is its http:// address", usage=True)
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = _read(user_dir / str(user["tokenFile"]), "tokenFile").strip()
    if not token and user.get("username"):  # basic auth, as the client's user:password@ URL sends it
        scheme, _, rest = server.partition("://")
        from urllib.parse import quote

        name, password = quote(str(user["username"]), safe=""), quote(str(user.get("password", "")), safe="")
        server = f"{scheme}://{name}:{password}@{rest}"
    tls = _tls(cluster, cluster_dir, user, user_dir) if server.startswith("https://") else None
    return _settings(server, "/nonexistent", "/nonexistent"), token or None, tls


def _settings(api: str | None, token_file: str, ca_file: str) -> DiscoverySettings:
    return DiscoverySettings(destination="k8s", dns_nameservers=None, dns_min_ttl=1.0, dns_max_ttl=300.0,
                             k8s_api=api, k8s_token_file=token_file, k8s_ca_file=ca_file,
                             cluster_domain="cluster.local", trust_domain="cluster.local")


def _merged(paths: list[str]) -> dict[str, Any]:
    """The kubeconfig files merged as kubectl merges them: the first file naming an entry wins."""
    import yaml

    merged: dict[str, Any] = {"contexts": {}, "clusters": {}, "users": {}, "_dirs": {}}
    for path in paths:
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise KubeError(f"cannot read the kubeconfig {path}: {err.strerror or err}", usage=True) from None
        except yaml.YAMLError as err:
            raise KubeError(f"invalid kubeconfig {path}: {err}", usage=True) from None
        if not isinstance(document, dict):
            raise KubeError(f"invalid kubeconfig {path}: not a mapping", usage=True)
        merged.setdefault("current-context", document.get("current-context"))
        for key, inner in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for entry in document.get(key) or []:
                if isinstance(entry, dict) and isinstance(entry.get(inner), dict) and entry.get("name"):
                    merged[key].setdefault(entry["name"], entry[inner])
                    # Paths in an entry are relative to the file that gave it.
                    merged["_dirs"].setdefault((key, entry["name"]), str(Path(path).parent))
        if merged.get("current-context") is None:
            merged.pop("current-context")
    return merged


def _named(config: dict[str, Any], key: str, kind: str, name: object, paths: list[str]) -> dict:
    entry = config[key].get(name)
    if entry is None:
        raise KubeError(f"kubeconfig {os.pathsep.join(paths)}: no {kind} named {name!r}", usage=True)
    return entry


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise KubeError(f"kubeconfig {what} {path}: {err.strerror or err}", usage=True) from None


def _data(entry: dict, key: str, base: Path) -> str | None:
    """A PEM given inline (``KEY-data``, base64) or as a file (``KEY``, relative to the kubeconfig)."""
    if entry.get(f"{key}-data"):
        try:
            return base64.b64decode(str(entry[f"{key}-data"]), validate=True).decode()
        except ValueError:
            raise KubeError(f"kubeconfig {key}-data is not base64 PEM", usage=True) from None
    return _read(base / str(entry[key]), key) if entry.get(key) else None


def _tls(cluster: dict, cluster_dir: Path, user: dict, user_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=_data(cluster, "certificate-authority", cluster_dir))
    if cluster.get("insecure-skip-tls-verify") is True:  # the user's explicit choice, as kubectl honours it
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert, key = _data(user, "client-certificate", user_dir), _data(user, "client-key", user_dir)
    if cert and key:
        # ssl loads a client certificate only from files: written owner-only, removed at once.
        with tempfile.TemporaryDirectory() as tmp:
            pair = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            for file, text in zip(pair, (cert, key), strict=True):
                file.touch(0o600)
                file.write_text(text)
            try:
                ctx.load_cert_chain(*pair)
            except ssl.SSLError as err:
                raise KubeError(f"kubeconfig client certificate: {err}", usage=True) from None
    return ctx
