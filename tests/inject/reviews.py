"""AdmissionReview documents as the API server sends them to a mutating webhook for a pod CREATE.

The shapes follow admission.k8s.io/v1 as kube-apiserver 1.29 fills it: the
pod as the controller (or kubectl) created it, after the built-in admission
plugins ran (the ServiceAccount plugin's ``kube-api-access-*`` volume and
mount, defaulted fields), with ``creationTimestamp: null`` and
``generateName`` instead of a name for controller-made pods.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.inject.manifests import pod_of, workload

CONTROLLER_USERS = {
    "Deployment": "system:serviceaccount:kube-system:replicaset-controller",
    "ReplicaSet": "system:serviceaccount:kube-system:replicaset-controller",
    "StatefulSet": "system:serviceaccount:kube-system:statefulset-controller",
    "DaemonSet": "system:serviceaccount:kube-system:daemon-set-controller",
    "Job": "system:serviceaccount:kube-system:job-controller",
    "CronJob": "system:serviceaccount:kube-system:job-controller",
    "ReplicationController": "system:serviceaccount:kube-system:replication-controller",
    "Pod": "kubernetes-admin",
}
POD_HASH = "5d8f7c9b4"


def _owner(kind: str, name: str) -> tuple[dict[str, Any] | None, dict[str, str], str]:
    """(ownerReference, extra labels, pod name or generateName) of a pod the kind's controller makes."""
    if kind == "Pod":
        return None, {}, name
    if kind == "Deployment":
        rs = f"{name}-{POD_HASH}"
        return ({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs},
                {"pod-template-hash": POD_HASH}, f"{rs}-")
    if kind == "CronJob":
        job = f"{name}-29001234"
        return ({"apiVersion": "batch/v1", "kind": "Job", "name": job},
                {"batch.kubernetes.io/job-name": job, "job-name": job}, f"{job}-")
    if kind == "Job":
        return ({"apiVersion": "batch/v1", "kind": "Job", "name": name},
                {"batch.kubernetes.io/job-name": name, "job-name": name}, f"{name}-")
    if kind == "StatefulSet":
        return ({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
                {"controller-revision-hash": f"{name}-7c9f8b6d5", "statefulset.kubernetes.io/pod-name": f"{name}-0"},
                f"{name}-0")
    api = "v1" if kind == "ReplicationController" else "apps/v1"
    return {"apiVersion": api, "kind": kind, "name": name}, {}, f"{name}-"


def pod_from(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The Pod a workload document's controller creates (or the Pod document itself), as admitted."""
    kind = doc["kind"]
    template, spec = (copy.deepcopy(x) for x in pod_of(doc))
    name = doc["metadata"]["name"]
    ref, labels, pod_name = _owner(kind, name)
    metadata: dict[str, Any] = {}
    if pod_name.endswith("-"):
        metadata["generateName"] = pod_name
    else:
        metadata["name"] = pod_name
    metadata["namespace"] = namespace
    metadata["creationTimestamp"] = None
    metadata["labels"] = {**(template.get("metadata") or {}).get("labels", {}), **labels}
    annotations = (template.get("metadata") or {}).get("annotations")
    if annotations:
        metadata["annotations"] = dict(annotations)
    if ref is not None:
        metadata["ownerReferences"] = [{**ref, "uid": str(uuid.uuid4()), "controller": True,
                                        "blockOwnerDeletion": True}]
    token = "kube-api-access-" + uuid.uuid4().hex[:5]
    spec = copy.deepcopy(spec)
    spec.setdefault("volumes", []).append({"name": token, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                       "fieldPath": "metadata.namespace"}}]}},
    ]}})
    for container in spec["containers"]:
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("volumeMounts", []).append(
            {"name": token, "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    spec.setdefault("restartPolicy", "Always")
    spec.update({"terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": spec.get("serviceAccountName", "default"),
                 "serviceAccount": spec.get("serviceAccountName", "default"), "securityContext": {},
                 "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": True,
                 "preemptionPolicy": "PreemptLowerPriority",
                 "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                  "effect": "NoExecute", "tolerationSeconds": 300}]})
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": {}}


def review(pod: dict[str, Any], namespace: str, *, operation: str = "CREATE", kind: str = "Pod",
           user: str = "kubernetes-admin") -> dict[str, Any]:
    group_version = {"group": "", "version": "v1", "kind": kind}
    resource = {"group": "", "version": "v1", "resource": kind.lower() + "s"}
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": group_version,
            "resource": resource,
            "requestKind": group_version,
            "requestResource": resource,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": user, "uid": str(uuid.uuid4()),
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": copy.deepcopy(pod) if operation == "UPDATE" else None,
            "dryRun": False,
            "options": {"kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
                        "apiVersion": "meta.k8s.io/v1"},
        },
    }


def kind_review(kind: str, namespace: str, pod_annotations: dict[str, str] | None = None,
                **spec_extra: Any) -> dict[str, Any]:
    """The review of the pod that a ``kind`` workload (tests.inject.manifests.workload) creates."""
    doc = workload(kind, pod_annotations, namespace=namespace, **spec_extra)
    return review(pod_from(doc, namespace), namespace, user=CONTROLLER_USERS[kind])
