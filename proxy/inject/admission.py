"""The injector's AdmissionReview (admission.k8s.io/v1) handling, without I/O.

``parse`` checks a request body and gives the pod and its namespace (or a
``ReviewError`` the server answers 400 with); ``mutate`` decides with the same
code as ``meshproxy inject --manual`` (``stream.inject_site``) and gives a
JSONPatch; ``response`` is the AdmissionReview sent back. The webhook never
blocks a pod: every outcome, failures included, is ``allowed: true``; a pod
that could not be injected gets no patch and a warning (kubectl prints it).
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.inject import names, podspec, policy, workloads
from proxy.inject.stream import Options, Outcome, describe, inject_site

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
# Sidecars of meshes: a pod already carrying one is left alone.
PROXY_CONTAINERS = frozenset({names.PROXY_CONTAINER, "linkerd-proxy", "istio-proxy"})
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Controllers whose pods carry the workload's name plus a suffix; the
# Deployment behind a ReplicaSet is found by its pod-template-hash label.
OWNER_KINDS = {"ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}


class ReviewError(ValueError):
    """A request that is not an AdmissionReview this webhook can answer (HTTP 400)."""


@dataclass(slots=True)
class Review:
    uid: str
    namespace: str  # "" when the request is not namespaced (then it is never a pod)
    pod: dict[str, Any] | None  # None: nothing to inject, ``unusable`` says why
    unusable: Mutation | None = None


@dataclass(slots=True)
class Mutation:
    outcome: Outcome
    patch: list[dict[str, Any]] = field(default_factory=list)
    warning: str | None = None

    @property
    def result(self) -> str:
        """injected, skipped or error: the metric's result label."""
        return "injected" if self.patch else ("error" if self.outcome.action == "error" else "skipped")


def parse(body: bytes) -> Review:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise ReviewError(f"the body is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ReviewError("the body is not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ReviewError(f"expected apiVersion {API_VERSION} kind {KIND}, got apiVersion "
                          f"{doc.get('apiVersion')!r} kind {doc.get('kind')!r}")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise ReviewError("the AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("the AdmissionReview request has no uid")
    namespace = request.get("namespace") or ""
    if not isinstance(namespace, str):
        raise ReviewError("request.namespace is not a string")
    kind = request.get("kind") or {}
    is_pod = isinstance(kind, dict) and kind.get("group", "") == "" and kind.get("kind") == "Pod"
    if not is_pod or request.get("subResource") or request.get("operation") != "CREATE":
        what = f"{kind.get('kind') if isinstance(kind, dict) else kind} {request.get('operation')}"
        return Review(uid, namespace, None, Mutation(Outcome("skipped", "not_pod_create",
                                                             f"skipped: not a pod CREATE ({what})")))
    pod = request.get("object")
    if not isinstance(pod, dict):
        return Review(uid, namespace, None, failure("malformed_pod", "request.object is not a pod"))
    if not _DNS_LABEL.fullmatch(namespace):
        # The name goes into the API path of the namespace lookup.
        return Review(uid, namespace, None,
                      failure("bad_namespace", f"request.namespace {namespace!r} is not a namespace name"))
    return Review(uid, namespace, pod)


def owner(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the workload that owns the pod, for the proxy's owner metric labels."""
    metadata = pod.get("metadata") or {}
    name = str(metadata.get("name") or metadata.get("generateName") or "?").rstrip("-") or "?"
    refs = metadata.get("ownerReferences") or []
    controller = next((r for r in refs if isinstance(r, dict) and r.get("controller")), None)
    if controller is None or controller.get("kind") not in OWNER_KINDS or not controller.get("name"):
        return "Pod", name
    kind, owner_name = str(controller["kind"]), str(controller["name"])
    pod_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    if kind == "ReplicaSet" and pod_hash and owner_name.endswith(f"-{pod_hash}"):
        return "Deployment", owner_name[: -len(pod_hash) - 1]
    return kind, owner_name


def proxy_present(spec: Mapping[str, Any]) -> str | None:
    for key in ("initContainers", "containers"):
        listed = spec.get(key)
        for container in listed if isinstance(listed, list) else []:
            name = container.get("name") if isinstance(container, dict) else None
            if isinstance(name, str) and name in PROXY_CONTAINERS:
                return name
    return None


def mutate(review: Review, namespace_annotations: Mapping[str, str], options: Options) -> Mutation:
    """Inject the review's pod; every failure becomes a Mutation without a patch."""
    pod = review.pod
    assert pod is not None
    spec = pod.get("spec")
    metadata = pod.get("metadata")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or (
            metadata is not None and not isinstance(metadata, dict)):
        return failure("malformed_pod", "the pod has no spec.containers list")
    present = proxy_present(spec)
    if present is not None:
        return Mutation(Outcome("skipped", "proxy_present", f"skipped: the pod already has a {present} container"))
    kind, name = owner(pod)
    annotations = (metadata or {}).get("annotations") or {}
    if not isinstance(annotations, dict):
        return failure("malformed_pod", "the pod's metadata.annotations is not a mapping")
    before = copy.deepcopy(pod)
    site = workloads.PodSite(kind, name, review.namespace, {}, pod, spec)
    try:
        outcome = inject_site(site, options, namespace_annotations)
    except policy.AnnotationError as err:
        return failure("bad_annotation", f"{describe(site)}: {err}")
    except podspec.ShapeError as err:
        return failure("malformed_pod", str(err))
    return Mutation(outcome, json_patch(before, pod))


def failure(reason: str, why: str) -> Mutation:
    """The pod is let through unpatched; ``why`` goes to the log and, as a warning, to the user."""
    message = f"not injected: {why}"
    return Mutation(Outcome("error", reason, message), warning=f"meshproxy injector: {message}")


def json_patch(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``before`` into ``after``: mappings key by key, anything else whole."""
    if before == after:
        return []
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [{"op": "replace", "path": path, "value": after}]
    ops: list[dict[str, Any]] = []
    for key in before:
        if key not in after:
            ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
    for key, value in after.items():
        if key not in before:
            ops.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": value})
        else:
            ops += json_patch(before[key], value, f"{path}/{_escape(key)}")
    return ops


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def response(uid: str, patch: list[dict[str, Any]] | None = None, warning: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode("ascii")
    if warning:
        answer["warnings"] = [warning]
    return {"apiVersion": API_VERSION, "kind": KIND, "response": answer}
