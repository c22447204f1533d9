"""The control plane's objects: namespace, identity issuer, injector webhook, their RBAC, trust anchors.

The identity issuer's objects are the files in ``manifests/`` (also
``deploy/identity/``, which links to them), read here and given the chosen
image and replicas; the injector's are built here. Everything is labelled
``app.kubernetes.io/part-of: meshproxy`` and the pods
``meshproxy.io/control-plane-component``, which the webhook's objectSelector
skips (as Linkerd's skips ``linkerd.io/control-plane-component``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from proxy.identity import ca
from proxy.inject import names as inject_names
from proxy.install import pki

NAMESPACE = "meshproxy"
MANIFESTS = Path(__file__).parent / "manifests"
IDENTITY_FILES = ("namespace", "serviceaccount", "rbac", "service", "deployment")
ISSUER_SECRET = "meshproxy-identity-issuer"
PART_OF = {"app.kubernetes.io/part-of": "meshproxy"}
COMPONENT = "meshproxy.io/control-plane-component"
ADMISSION_WEBHOOKS = "config.meshproxy.io/admission-webhooks"  # a namespace label: disabled = never injected
LINKERD_ADMISSION_WEBHOOKS = "config.linkerd.io/admission-webhooks"

INJECTOR = "meshproxy-injector"
INJECTOR_TLS_SECRET = "meshproxy-injector-tls"
INJECTOR_TLS_DIR = "/var/run/meshproxy/injector"
INJECTOR_PORT, INJECTOR_ADMIN_PORT = 8443, 9995
WEBHOOK_CONFIG = "meshproxy-injector-webhook-config"
WEBHOOK_NAME = "meshproxy-injector.meshproxy.io"
WEBHOOK_PATH = "/inject"
WEBHOOK_TIMEOUT_SECONDS = 10  # Linkerd's default; the API server then goes on without the patch (Ignore)
HA_REPLICAS = 3


@dataclass(frozen=True, slots=True)
class Options:
    image: str = inject_names.DEFAULT_PROXY_IMAGE  # the control plane runs the meshproxy image
    proxy_image: str = inject_names.DEFAULT_PROXY_IMAGE
    init_image: str = inject_names.DEFAULT_INIT_IMAGE
    ha: bool = False
    meshed_namespaces: tuple[str, ...] = field(default_factory=tuple)


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, **PART_OF}


def _meta(name: str, namespace: str | None = NAMESPACE, **extra: dict) -> dict:
    meta: dict = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels(name)
    meta.update(extra)
    return meta


def identity_documents() -> list[dict]:
    """The issuer's manifests as shipped (deploy/identity/)."""
    docs: list[dict] = []
    for name in IDENTITY_FILES:
        text = (MANIFESTS / f"identity-{name}.yaml").read_text(encoding="utf-8")
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def _high_availability(deployment: dict) -> list[dict]:
    """HA for one Deployment: HA_REPLICAS, one replica per node (required) and spread over zones
    (preferred), and a PodDisruptionBudget that lets a drain take one at a time (as Linkerd's HA values)."""
    deployment["spec"]["replicas"] = HA_REPLICAS
    selector = deployment["spec"]["selector"]
    deployment["spec"]["strategy"] = {"rollingUpdate": {"maxUnavailable": 1}}
    deployment["spec"]["template"]["spec"]["affinity"] = {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": copy.deepcopy(selector), "topologyKey": "kubernetes.io/hostname"}],
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": copy.deepcopy(selector),
                                                "topologyKey": "topology.kubernetes.io/zone"}}],
    }}
    name = deployment["metadata"]["name"]
    return [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(name),
             "spec": {"maxUnavailable": 1, "selector": copy.deepcopy(selector)}}]


def _secret(name: str, data: dict[str, str], secret_type: str = "Opaque") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name), "type": secret_type, "stringData": data}


def trust_anchors(namespace: str, anchors_pem: str) -> dict:
    """The ConfigMap injected proxies mount from their own namespace (proxy/inject/identity.py)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": inject_names.TRUST_ANCHORS_CONFIGMAP, "namespace": namespace, "labels": dict(PART_OF)},
            "data": {inject_names.TRUST_ANCHORS_KEY: anchors_pem}}


def injector_service_names() -> list[str]:
    return [f"{INJECTOR}.{NAMESPACE}.svc", f"{INJECTOR}.{NAMESPACE}.svc.cluster.local"]


def injector_documents(options: Options, identity: pki.Identity) -> list[dict]:
    select = {"app.kubernetes.io/name": INJECTOR}
    chain, key = pki.serving_certificate(identity, injector_service_names())
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(INJECTOR),
               "automountServiceAccountToken": True}  # namespace lookups: does it say inject?
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(INJECTOR, None),
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": _meta(INJECTOR, None),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": INJECTOR},
               "subjects": [{"kind": "ServiceAccount", "name": INJECTOR, "namespace": NAMESPACE}]}
    secret = _secret(INJECTOR_TLS_SECRET, {"tls.crt": chain, "tls.key": key}, "kubernetes.io/tls")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(INJECTOR),
               "spec": {"selector": dict(select),
                        "ports": [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]}}
    container = {
        "name": "injector",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["injector", "serve", f"--listen=0.0.0.0:{INJECTOR_PORT}",
                 f"--tls-cert={INJECTOR_TLS_DIR}/tls.crt", f"--tls-key={INJECTOR_TLS_DIR}/tls.key",
                 f"--admin-listen=0.0.0.0:{INJECTOR_ADMIN_PORT}",
                 f"--proxy-image={options.proxy_image}", f"--init-image={options.init_image}",
                 "--log-format=json"],
        "ports": [{"name": "webhook", "containerPort": INJECTOR_PORT, "protocol": "TCP"},
                  {"name": "admin", "containerPort": INJECTOR_ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "admin"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "admin"}, "periodSeconds": 10, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tls", "mountPath": INJECTOR_TLS_DIR, "readOnly": True}],
    }
    pod_labels = {**labels(INJECTOR), COMPONENT: "injector"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(INJECTOR),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(select)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {inject_names.INJECT: inject_names.DISABLED,
                                                                   "prometheus.io/scrape": "true",
                                                                   "prometheus.io/port": str(INJECTOR_ADMIN_PORT)}},
                "spec": {
                    "serviceAccountName": INJECTOR,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": inject_names.PROXY_UID,
                                        "runAsGroup": inject_names.PROXY_UID, "fsGroup": inject_names.PROXY_UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tls", "secret": {"secretName": INJECTOR_TLS_SECRET, "defaultMode": 0o440}}],
                },
            },
        },
    }
    webhook = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": _meta(WEBHOOK_CONFIG, None),
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": {"service": {"name": INJECTOR, "namespace": NAMESPACE, "path": WEBHOOK_PATH, "port": 443},
                             "caBundle": _b64(identity.anchors_pem)},
            # As Linkerd's: namespaces labelled admission-webhooks=disabled (either spelling) and
            # kube-system are never sent; nor are the control plane's own pods.
            "namespaceSelector": {"matchExpressions": [
                {"key": ADMISSION_WEBHOOKS, "operator": "NotIn", "values": ["disabled"]},
                {"key": LINKERD_ADMISSION_WEBHOOKS, "operator": "NotIn", "values": ["disabled"]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "cert-manager"]},
            ]},
            "objectSelector": {"matchExpressions": [
                {"key": COMPONENT, "operator": "DoesNotExist"},
                {"key": "linkerd.io/control-plane-component", "operator": "DoesNotExist"},
            ]},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                       "scope": "Namespaced"}],
            "failurePolicy": "Ignore",  # a broken injector never blocks pod creation
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS,
            "reinvocationPolicy": "IfNeeded",  # another webhook may add containers after us
        }],
    }
    extra = _high_availability(deployment) if options.ha else []
    return [account, role, binding, secret, service, deployment, *extra, webhook]


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def documents(options: Options, identity: pki.Identity) -> list[dict]:
    """Everything ``meshproxy install`` prints, in the order to apply it."""
    docs = identity_documents()
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["image"] = options.image
    issuer_secret = _secret(ISSUER_SECRET, {ca.ISSUER_CERT: identity.issuer_cert_pem,
                                            ca.ISSUER_KEY: identity.issuer_key_pem,
                                            ca.CA_CERT: identity.anchors_pem})
    issuer_secret["metadata"]["labels"] = labels("meshproxy-identity")
    namespace, rest = docs[0], docs[1:]
    anchors = [trust_anchors(ns, identity.anchors_pem) for ns in (NAMESPACE, *options.meshed_namespaces)]
    out = [namespace, issuer_secret, *anchors, *rest]
    if options.ha:
        deployment = next(d for d in rest if d["kind"] == "Deployment")
        out += _high_availability(deployment)
    return out + injector_documents(options, identity)
