"""Where the pod templates are inside a Kubernetes document.

A ``Pod`` is its own template; the controllers keep theirs at
``spec.template`` and a ``CronJob`` at ``spec.jobTemplate.spec.template``. A
``List`` (or ``<Kind>List``) holds documents in ``items``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"})
POD_KINDS = TEMPLATE_KINDS | {"Pod", "CronJob"}


class UnsupportedShape(ValueError):
    """A workload document without the fields every object of its kind has."""


@dataclass(slots=True)
class PodSite:
    """One pod to inject: its template (metadata + spec) and the object that owns it."""

    kind: str
    name: str
    namespace: str | None
    owner_annotations: dict[str, Any]  # the workload's own metadata.annotations ({} for a Pod)
    template: dict[str, Any]
    spec: dict[str, Any]


def _get(obj: Any, path: tuple[str, ...], kind: str) -> dict[str, Any]:
    for key in path:
        if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
            raise UnsupportedShape(f"{kind} without a mapping at {'.'.join(path)}")
        obj = obj[key]
    return obj


def is_list(doc: Any) -> bool:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return isinstance(kind, str) and kind.endswith("List") and "items" in doc


def sites(doc: dict[str, Any]) -> Iterator[PodSite]:
    """The pods of one document, Lists flattened; nothing for other kinds."""
    kind = doc.get("kind")
    if is_list(doc):
        items = doc["items"]
        if items is None:
            return
        if not isinstance(items, list):
            raise UnsupportedShape(f"{kind} whose items is not a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise UnsupportedShape(f"{kind} item {i} is not a mapping")
            yield from sites(item)
        return
    if kind not in POD_KINDS:
        return
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    name = str(metadata.get("name") or metadata.get("generateName") or "?")
    namespace = metadata.get("namespace")
    if kind == "Pod":
        yield PodSite(kind, name, namespace, {}, doc, _get(doc, ("spec",), kind))
        return
    owner = metadata.get("annotations")
    if not isinstance(owner, dict):
        owner = {}
    path = ("spec", "jobTemplate", "spec", "template") if kind == "CronJob" else ("spec", "template")
    template = _get(doc, path, kind)
    yield PodSite(kind, name, namespace, owner, template, _get(template, ("spec",), kind))
