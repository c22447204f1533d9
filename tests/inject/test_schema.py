"""Injected manifests validated against the Kubernetes OpenAPI schemas, offline.

``kubernetes-validate`` ships the JSON schemas generated from each release's
OpenAPI document (no network used). Strict mode rejects unknown fields, so a
misspelt or misplaced field fails. 1.29 is the first release where native
sidecars (``restartPolicy: Always`` on an init container) are on by default.
"""

from __future__ import annotations

import pytest

from proxy.inject import Options, inject_text, names, uninject_text
from proxy.inject.policy import IdentityDefaults
from tests.inject.manifests import ENABLED, KINDS, dump, load, pod_of, workload

kubernetes_validate = pytest.importorskip("kubernetes_validate")

VERSION = "1.29.0"


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_injected_workload_is_valid(kind: str) -> None:
    annotations = {**ENABLED, names.SKIP_INBOUND_PORTS: "22", names.SKIP_SUBNETS: "10.96.0.0/12",
                   names.OPAQUE_PORTS: "5432"}
    original = workload(kind, annotations, namespace="shop")
    validate(original)
    [doc] = load(inject_text(dump(original)).text)
    assert "initContainers" in pod_of(doc)[1]
    validate(doc)


def _probed(kind: str, annotations: dict[str, str]) -> dict:
    doc = workload(kind, annotations, namespace="shop", serviceAccountName="web",
                   volumes=[{"name": "data", "emptyDir": {}}])
    pod_of(doc)[1]["containers"][0].update(
        livenessProbe={"httpGet": {"path": "/livez", "port": 8080}},
        readinessProbe={"httpGet": {"path": "/readyz", "port": "http", "scheme": "HTTP"}},
        startupProbe={"grpc": {"port": 9090}},
    )
    return doc


@pytest.mark.parametrize("kind", KINDS)
def test_identity_volumes_probes_and_policy_are_valid(kind: str) -> None:
    annotations = {**ENABLED, names.DEFAULT_INBOUND_POLICY: "cluster-authenticated",
                   names.TRUST_DOMAIN: "mesh.example", names.IDENTITY_SERVICE: "https://issuer.example:8443"}
    original = _probed(kind, annotations)
    validate(original)
    text = inject_text(dump(original)).text
    [doc] = load(text)
    spec = pod_of(doc)[1]
    assert {names.TOKEN_VOLUME, names.TRUST_ANCHORS_VOLUME} <= {v["name"] for v in spec["volumes"]}
    validate(doc)
    [back] = load(uninject_text(text).text)
    validate(back)
    assert back == original


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_injected_without_identity_is_valid(kind: str) -> None:
    original = _probed(kind, {**ENABLED, names.DISABLE_IDENTITY: "true"})
    [doc] = load(inject_text(dump(original)).text)
    assert [v["name"] for v in pod_of(doc)[1]["volumes"]] == ["data", names.XTABLES_VOLUME]
    validate(doc)
    [doc] = load(inject_text(dump(workload(kind, ENABLED)), Options(identity=IdentityDefaults(disabled=True))).text)
    validate(doc)


def test_strict_schema_really_checks_the_identity_fields() -> None:
    """The projected token and the downward API fields are checked, not waved through."""
    [doc] = load(inject_text(dump(workload("Deployment", ENABLED))).text)
    spec = pod_of(doc)[1]
    token = next(v for v in spec["volumes"] if v["name"] == names.TOKEN_VOLUME)
    token["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] = "86400"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc)
    token["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] = 86400
    validate(doc)
    helper = next(e for e in spec["initContainers"][1]["env"] if e["name"] == names.POD_NAMESPACE_ENV)
    helper["valueFrom"]["fieldRef"] = {"fieldPathh": "metadata.namespace"}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc)


def test_injected_list_is_valid() -> None:
    text = dump({"apiVersion": "v1", "kind": "List", "items": [workload("Deployment"), workload("Pod")]})
    [doc] = load(inject_text(text, Options()).text)
    # The schemas have no kind List (kubectl's client-side wrapper); its items are checked.
    for item in doc["items"]:
        validate(item)


def test_strict_schema_really_checks_the_sidecar_fields() -> None:
    """Guard against a validator that accepts anything."""
    [doc] = load(inject_text(dump(workload("Deployment", ENABLED))).text)
    bad = pod_of(doc)[1]["initContainers"][1]
    bad["restartPolicy"] = "Always"
    bad["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc)
    del bad["restartPolicyy"]
    bad["ports"][0]["containerPort"] = "4143"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc)


def test_sidecar_restart_policy_is_not_in_old_schemas() -> None:
    """1.27's Container has no restartPolicy: the injected pods need a newer cluster."""
    [doc] = load(inject_text(dump(workload("Deployment", ENABLED))).text)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.27.0", strict=True)
