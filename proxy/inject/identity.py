"""What the proxy sidecar needs for its identity: environment, mounts and the pod's volumes.

The identity name is ``<serviceaccount>.<namespace>.serviceaccount.identity.<trust domain>``.
The manifest cannot know the first two (a pod template may be applied to any
namespace, and the ServiceAccount admission fills in ``default``), so the
downward API puts them in two helper variables and the kubelet builds the
name with its ``$(VAR)`` expansion, which only sees variables listed earlier.

The issuer authenticates the proxy by a projected ServiceAccount token with
its own audience (never the pod's API token, which the issuer could replay);
the kubelet renews that file and the proxy reads it again at each renewal.
The trust anchors come from a ConfigMap that each meshed namespace holds
(``deploy/identity/templates/trust-anchors-configmap.yaml``).
"""

from __future__ import annotations

from typing import Any

from proxy import config as cfg
from proxy.inject import names
from proxy.inject.policy import PodIdentity

TOKEN_FILE = f"{names.TOKEN_DIR}/{names.TOKEN_PATH}"
TRUST_ANCHORS_FILE = f"{names.TRUST_ANCHORS_DIR}/{names.TRUST_ANCHORS_KEY}"


def identity_name(trust_domain: str) -> str:
    """The name as the kubelet will expand it."""
    return (f"$({names.POD_SERVICE_ACCOUNT_ENV}).$({names.POD_NAMESPACE_ENV})"
            f".serviceaccount.identity.{trust_domain}")


def env(identity: PodIdentity) -> list[dict[str, Any]]:
    return [
        {"name": names.POD_SERVICE_ACCOUNT_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": names.POD_NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": cfg.IDENTITY_NAME, "value": identity_name(identity.trust_domain)},
        {"name": cfg.TRUST_DOMAIN, "value": identity.trust_domain},
        {"name": cfg.IDENTITY_SERVICE, "value": identity.service},
        {"name": cfg.IDENTITY_TOKEN_FILE, "value": TOKEN_FILE},
        {"name": cfg.IDENTITY_TRUST_ANCHORS, "value": TRUST_ANCHORS_FILE},
    ]


def volume_mounts() -> list[dict[str, Any]]:
    return [
        {"name": names.TOKEN_VOLUME, "mountPath": names.TOKEN_DIR, "readOnly": True},
        {"name": names.TRUST_ANCHORS_VOLUME, "mountPath": names.TRUST_ANCHORS_DIR, "readOnly": True},
    ]


def volumes() -> list[dict[str, Any]]:
    return [
        {
            "name": names.TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": names.TOKEN_AUDIENCE,
                "expirationSeconds": names.TOKEN_EXPIRATION_SECONDS,
                "path": names.TOKEN_PATH,
            }}]},
        },
        {
            "name": names.TRUST_ANCHORS_VOLUME,
            "configMap": {
                "name": names.TRUST_ANCHORS_CONFIGMAP,
                "items": [{"key": names.TRUST_ANCHORS_KEY, "path": names.TRUST_ANCHORS_KEY}],
            },
        },
    ]
