"""Sample manifests for the injection tests, one per workload kind, as Python values."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import strategies as st

ENABLED = {"meshproxy.io/inject": "enabled"}
# Any JSON value, small: for feeding injection hostile shapes.
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


def pod_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "python:3.11-slim", "ports": [{"containerPort": 8080}]}]}
    spec.update(extra)
    return spec


def template(annotations: dict[str, str] | None = None, **spec_extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"labels": {"app": "web"}}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return {"metadata": metadata, "spec": pod_spec(**spec_extra)}


def workload(kind: str, pod_annotations: dict[str, str] | None = None, owner_annotations: dict[str, str] | None = None,
             namespace: str | None = None, **spec_extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"web-{kind.lower()}"}
    if namespace:
        metadata["namespace"] = namespace
    if owner_annotations is not None:
        metadata["annotations"] = dict(owner_annotations)
    api = {"Pod": "v1", "ReplicationController": "v1", "Job": "batch/v1", "CronJob": "batch/v1"}.get(kind, "apps/v1")
    doc: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": metadata}
    tmpl = template(pod_annotations, **spec_extra)
    if kind == "Pod":
        if pod_annotations is not None:
            metadata["annotations"] = {**metadata.get("annotations", {}), **pod_annotations}
        doc["spec"] = tmpl["spec"]
    elif kind == "CronJob":
        tmpl["spec"]["restartPolicy"] = "OnFailure"
        doc["spec"] = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": tmpl}}}
    elif kind == "Job":
        tmpl["spec"]["restartPolicy"] = "Never"
        doc["spec"] = {"template": tmpl}
    elif kind == "ReplicationController":
        doc["spec"] = {"selector": {"app": "web"}, "template": tmpl}
    else:
        doc["spec"] = {"selector": {"matchLabels": {"app": "web"}}, "template": tmpl}
        if kind == "StatefulSet":
            doc["spec"]["serviceName"] = "web"
    return doc


KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "ReplicationController")


def pod_of(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(template-with-metadata, spec) of a workload document."""
    kind = doc["kind"]
    if kind == "Pod":
        return doc, doc["spec"]
    if kind == "CronJob":
        tmpl = doc["spec"]["jobTemplate"]["spec"]["template"]
    else:
        tmpl = doc["spec"]["template"]
    return tmpl, tmpl["spec"]


def dump(*docs: Any) -> str:
    return "".join("---\n" + yaml.safe_dump(copy.deepcopy(d), sort_keys=False) for d in docs)


def load(text: str) -> list[Any]:
    return list(yaml.safe_load_all(text))


def kubelet_env(container: dict[str, Any], service_account: str = "default",
                namespace: str = "default") -> dict[str, str]:
    """A container's environment as the kubelet would set it, for the fields injection uses.

    ``valueFrom.fieldRef`` is answered for ``spec.serviceAccountName``,
    ``metadata.namespace`` and ``metadata.name`` (``pod-0``); ``$(NAME)`` in a value expands to a variable listed
    earlier (a later or unknown one stays as written), ``$$`` is a literal ``$``.
    """
    fields = {"spec.serviceAccountName": service_account, "metadata.namespace": namespace,
              "metadata.name": "pod-0"}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = _expand(item.get("value", ""), env)
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and (end := value.find(")", i)) > 0 and value[i + 2 : end] in env:
            out.append(env[value[i + 2 : end]])
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
