"""Add the two meshproxy containers (and their volumes) to a pod, and take them out.

``add`` records on the pod template what it had to create (``names.CREATED``)
so that ``remove`` gives back exactly the pod it was given: same keys, same
order, empty lists that were there stay.
"""

from __future__ import annotations

from typing import Any

import proxy
from proxy import config as cfg
from proxy.inject import identity, names
from proxy.inject.policy import PodSettings

OURS = (names.INIT_CONTAINER, names.PROXY_CONTAINER)


class ShapeError(ValueError):
    """The pod is not shaped the way a pod spec is (or already uses our names)."""


def init_container(s: PodSettings) -> dict[str, Any]:
    env = [
        {"name": names.INIT_PROXY_UID, "value": str(names.PROXY_UID)},
        {"name": names.INIT_INBOUND_PORT, "value": str(names.INBOUND_PORT)},
        {"name": names.INIT_OUTBOUND_PORT, "value": str(names.OUTBOUND_PORT)},
        {"name": names.INIT_ADMIN_PORT, "value": str(names.ADMIN_PORT)},
        {"name": names.INIT_TAP_PORT, "value": str(names.TAP_PORT)},
    ]
    for env_name, value in (
        (names.INIT_SKIP_INBOUND_PORTS, s.skip_inbound_ports),
        (names.INIT_SKIP_OUTBOUND_PORTS, s.skip_outbound_ports),
        (names.INIT_SKIP_SUBNETS, s.skip_subnets),
    ):
        if value:
            env.append({"name": env_name, "value": value})
    return {
        "name": names.INIT_CONTAINER,
        "image": s.init_image,
        "env": env,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
        # iptables-legacy takes its lock file in /run; the root is read-only.
        "volumeMounts": [{"name": names.XTABLES_VOLUME, "mountPath": "/run"}],
    } | ({"imagePullPolicy": s.pull_policy} if s.pull_policy else {})


def proxy_container(s: PodSettings) -> dict[str, Any]:
    env = [
        {"name": cfg.INBOUND_LISTEN, "value": f"0.0.0.0:{names.INBOUND_PORT}"},
        {"name": cfg.OUTBOUND_LISTEN, "value": f"127.0.0.1:{names.OUTBOUND_PORT}"},
        {"name": cfg.ADMIN_LISTEN, "value": f"0.0.0.0:{names.ADMIN_PORT}"},
        {"name": cfg.TAP_LISTEN, "value": f"0.0.0.0:{names.TAP_PORT}"},
        {"name": cfg.DESTINATION, "value": "k8s"},
        # Who this proxy is, for MESHPROXY_METRICS_WORKLOAD_LABELS (off unless set).
        {"name": cfg.WORKLOAD_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": cfg.WORKLOAD_POD, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if s.workload_kind in cfg.WORKLOAD_KINDS and s.workload_name:
        env.append({"name": cfg.WORKLOAD_KIND, "value": s.workload_kind})
        env.append({"name": cfg.WORKLOAD_NAME, "value": s.workload_name})
    if s.opaque_ports:
        env.append({"name": cfg.OPAQUE_PORTS, "value": s.opaque_ports})
    if s.default_policy:
        env.append({"name": cfg.DEFAULT_POLICY, "value": s.default_policy})
    if s.probe_paths:
        env.append({"name": cfg.INBOUND_PROBE_PATHS, "value": s.probe_paths})
    if s.access_log:
        env.append({"name": cfg.ACCESS_LOG, "value": s.access_log})
    if s.trace_collector:
        env.append({"name": cfg.TRACE_COLLECTOR, "value": s.trace_collector})
    env += [{"name": name, "value": value} for name, value in s.extra_env]
    if s.identity is not None:
        env += identity.env(s.identity)
    resources: dict[str, dict[str, str]] = {"requests": {"cpu": "10m", "memory": "32Mi"}}
    for section, resource, quantity in s.resources:
        resources.setdefault(section, {})[resource] = quantity
    container: dict[str, Any] = {
        "name": names.PROXY_CONTAINER,
        "image": s.proxy_image,
        "args": ["run"],
        # A native sidecar (Kubernetes >= 1.29): started before the app, stopped
        # after it, and not waited for, so Jobs complete.
        "restartPolicy": "Always",
        "env": env,
        "ports": [
            {"name": names.INBOUND_PORT_NAME, "containerPort": names.INBOUND_PORT, "protocol": "TCP"},
            {"name": names.ADMIN_PORT_NAME, "containerPort": names.ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": names.ADMIN_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/live", "port": names.ADMIN_PORT}, "periodSeconds": 10},
        "resources": resources,
        "securityContext": {
            "runAsUser": names.PROXY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if s.await_proxy:
        # Linkerd's proxy-await: the kubelet starts the next containers (the
        # app) only once a native sidecar's startup probe has passed, so the
        # app's first connections find the proxy (and its certificate) ready.
        container["startupProbe"] = {"httpGet": {"path": "/ready", "port": names.ADMIN_PORT},
                                     "periodSeconds": 1, "failureThreshold": 120}
    if s.pull_policy:
        container["imagePullPolicy"] = s.pull_policy
    if s.identity is not None:
        container["volumeMounts"] = identity.volume_mounts()
    return container


def _volumes(s: PodSettings) -> list[dict[str, Any]]:
    return [{"name": names.XTABLES_VOLUME, "emptyDir": {}}] + (identity.volumes() if s.identity is not None else [])


def _mapping(parent: dict[str, Any], key: str, where: str, created: list[str]) -> dict[str, Any]:
    if key not in parent or parent[key] is None:
        parent[key] = {}
        created.append(key)
    value = parent[key]
    if not isinstance(value, dict):
        raise ShapeError(f"{where}.{key} is not a mapping")
    return value


def _list(parent: dict[str, Any], key: str, where: str, created: list[str]) -> list[Any]:
    if key not in parent or parent[key] is None:
        parent[key] = []
        created.append(key)
    value = parent[key]
    if not isinstance(value, list):
        raise ShapeError(f"{where}.{key} is not a list")
    return value


def _names(items: list[Any]) -> set[str]:
    return {name for item in items if isinstance(item, dict) and isinstance(name := item.get("name"), str)}


def check(template: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    """Raise ShapeError unless the pod can be injected (our names free)."""
    for key in ("containers", "initContainers", "volumes"):
        if spec.get(key) is not None and not isinstance(spec[key], list):
            raise ShapeError(f"{where}.spec.{key} is not a list")
    if not isinstance(spec.get("containers"), list):
        raise ShapeError(f"{where}.spec.containers is missing")
    taken = (_names(spec.get("containers") or []) | _names(spec.get("initContainers") or [])) & set(OURS)
    if taken:
        raise ShapeError(f"{where} already has a container named {sorted(taken)[0]} that meshproxy inject did not add")
    taken = _names(spec.get("volumes") or []) & set(names.VOLUMES)
    if taken:
        raise ShapeError(f"{where} already has a volume named {sorted(taken)[0]} that meshproxy inject did not add")


def is_injected(template: dict[str, Any]) -> bool:
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return isinstance(annotations, dict) and names.INJECTED in annotations


def add(template: dict[str, Any], spec: dict[str, Any], settings: PodSettings, where: str) -> None:
    """Inject in place. ``template`` holds metadata (the Pod itself for a bare Pod)."""
    check(template, spec, where)
    created: list[str] = []
    metadata = _mapping(template, "metadata", where, created)
    annotations = _mapping(metadata, "annotations", f"{where}.metadata", created)
    init_containers = _list(spec, "initContainers", f"{where}.spec", created)
    volumes = _list(spec, "volumes", f"{where}.spec", created)
    # meshproxy-init first (it sets the rules), then the proxy, then the pod's
    # own init containers: their traffic is redirected, so the proxy must run.
    init_containers[:0] = [init_container(settings), proxy_container(settings)]
    volumes += _volumes(settings)
    annotations[names.INJECTED] = "true"
    annotations[names.PROXY_VERSION] = proxy.__version__
    if created:
        annotations[names.CREATED] = ",".join(created)


def remove(template: dict[str, Any], spec: dict[str, Any]) -> None:
    """Undo ``add`` in place (only what it added)."""
    metadata = template.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    created = set(filter(None, str(annotations.get(names.CREATED, "")).split(",")))
    for key in (names.INJECTED, names.PROXY_VERSION, names.CREATED):
        annotations.pop(key, None)
    if isinstance(spec.get("initContainers"), list):
        spec["initContainers"] = [c for c in spec["initContainers"]
                                  if not (isinstance(c, dict) and c.get("name") in OURS)]
    if isinstance(spec.get("volumes"), list):
        spec["volumes"] = [v for v in spec["volumes"] if not (isinstance(v, dict) and v.get("name") in names.VOLUMES)]
    for parent, key in ((spec, "initContainers"), (spec, "volumes"), (metadata, "annotations"), (template, "metadata")):
        if key in created and not parent.get(key):
            parent.pop(key, None)
