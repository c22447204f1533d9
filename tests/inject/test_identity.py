"""proxy/inject/identity.py: the sidecar's identity settings, its volumes, the opt-out, and
agreement with the issuer's manifests in deploy/identity/."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from proxy import config as cfg
from proxy.identity import names as identity_names
from proxy.identity.command import build_parser as identity_parser
from proxy.inject import InjectError, Options, inject_text, names, uninject_text
from proxy.inject.policy import IdentityDefaults
from tests.inject.manifests import ENABLED, dump, kubelet_env, load, pod_of, workload

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "identity"
IDENTITY_ENV = {cfg.IDENTITY_NAME, cfg.TRUST_DOMAIN, cfg.IDENTITY_SERVICE, cfg.IDENTITY_TOKEN_FILE,
                cfg.IDENTITY_TRUST_ANCHORS, names.POD_SERVICE_ACCOUNT_ENV, names.POD_NAMESPACE_ENV}
IDENTITY_VOLUMES = {names.TOKEN_VOLUME, names.TRUST_ANCHORS_VOLUME}


def inject_one(doc: dict, options: Options | None = None) -> tuple[dict, dict]:
    """(injected pod spec, proxy container)."""
    [out] = load(inject_text(dump(doc), options).text)
    spec = pod_of(out)[1]
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    return spec, sidecar


def volumes(spec: dict) -> dict[str, dict]:
    return {v["name"]: v for v in spec.get("volumes", [])}


def manifest(path: str, kind: str) -> dict:
    [doc] = [d for d in yaml.safe_load_all((DEPLOY / path).read_text()) if d and d["kind"] == kind]
    return doc


# ---- what is added -------------------------------------------------------------


def test_identity_name_comes_from_the_pods_service_account_and_namespace() -> None:
    _, sidecar = inject_one(workload("Deployment", ENABLED, namespace="shop", serviceAccountName="web"))
    raw = [e["name"] for e in sidecar["env"]]
    # $(VAR) only expands variables listed before it.
    assert raw.index(names.POD_SERVICE_ACCOUNT_ENV) < raw.index(cfg.IDENTITY_NAME)
    assert raw.index(names.POD_NAMESPACE_ENV) < raw.index(cfg.IDENTITY_NAME)
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in sidecar["env"] if "valueFrom" in e}
    assert fields == {names.POD_SERVICE_ACCOUNT_ENV: "spec.serviceAccountName",
                      names.POD_NAMESPACE_ENV: "metadata.namespace",
                      cfg.WORKLOAD_NAMESPACE: "metadata.namespace", cfg.WORKLOAD_POD: "metadata.name"}
    for sa, ns in (("web", "shop"), ("default", "default"), ("billing.v2", "pay")):
        env = kubelet_env(sidecar, service_account=sa, namespace=ns)
        name = env[cfg.IDENTITY_NAME]
        assert identity_names.parse(name, "cluster.local") == identity_names.make(sa, ns, "cluster.local")
        assert cfg.load(env=env).identity.name == name


def test_helper_variables_are_not_proxy_settings() -> None:
    # The proxy refuses unknown MESHPROXY_* names; the helpers must not look like one.
    for helper in (names.POD_SERVICE_ACCOUNT_ENV, names.POD_NAMESPACE_ENV):
        assert not helper.startswith(cfg.PREFIX)
    _, sidecar = inject_one(workload("Pod", ENABLED))
    cfg.load(env=kubelet_env(sidecar))


def test_token_is_a_projected_service_account_token_for_the_issuer() -> None:
    spec, sidecar = inject_one(workload("Deployment", ENABLED))
    token = volumes(spec)[names.TOKEN_VOLUME]
    [source] = token["projected"]["sources"]
    assert source == {
        "serviceAccountToken": {"audience": "meshproxy-identity", "expirationSeconds": 86400, "path": "token"}}
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[names.TOKEN_VOLUME]["readOnly"] is True
    env = kubelet_env(sidecar)
    token_path = mounts[names.TOKEN_VOLUME]["mountPath"] + "/" + source["serviceAccountToken"]["path"]
    assert env[cfg.IDENTITY_TOKEN_FILE] == token_path


def test_trust_anchors_are_the_namespaces_configmap() -> None:
    spec, sidecar = inject_one(workload("Deployment", ENABLED))
    anchors = volumes(spec)[names.TRUST_ANCHORS_VOLUME]["configMap"]
    template = manifest("templates/trust-anchors-configmap.yaml", "ConfigMap")
    assert anchors["name"] == template["metadata"]["name"] == "meshproxy-trust-anchors"
    [item] = anchors["items"]
    assert item["key"] in template["data"]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[names.TRUST_ANCHORS_VOLUME]["readOnly"] is True
    directory = mounts[names.TRUST_ANCHORS_VOLUME]["mountPath"]
    assert kubelet_env(sidecar)[cfg.IDENTITY_TRUST_ANCHORS] == f"{directory}/{item['path']}"


def test_defaults_match_the_issuer_deployment() -> None:
    """The default service URL is the issuer's Service, a name in its serving
    certificate, and the token audience is the one it checks."""
    service = manifest("service.yaml", "Service")
    deployment = manifest("deployment.yaml", "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = identity_parser().parse_args(container["args"][1:])
    url = urlsplit(names.DEFAULT_IDENTITY_SERVICE)
    meta = service["metadata"]
    assert url.scheme == "https"
    assert url.hostname == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.hostname in args.server_name
    assert args.token_audience == [names.TOKEN_AUDIENCE]


def test_existing_volumes_and_mounts_are_kept_and_restored() -> None:
    original = workload("StatefulSet", ENABLED, namespace="shop",
                        volumes=[{"name": "data", "emptyDir": {}}, {"name": "config", "configMap": {"name": "app"}}])
    once = inject_text(dump(original)).text
    spec = pod_of(load(once)[0])[1]
    assert [v["name"] for v in spec["volumes"]] == ["data", "config", names.XTABLES_VOLUME, names.TOKEN_VOLUME,
                                                names.TRUST_ANCHORS_VOLUME]
    assert inject_text(once).text == once
    assert uninject_text(once).text == dump(original)


def test_a_volume_of_ours_that_injection_did_not_add_is_an_error() -> None:
    doc = workload("Deployment", ENABLED, volumes=[{"name": names.TRUST_ANCHORS_VOLUME, "configMap": {"name": "mine"}}])
    with pytest.raises(InjectError, match="already has a volume named meshproxy-trust-anchors"):
        inject_text(dump(doc))


# ---- overrides ---------------------------------------------------------------------


def test_trust_domain_and_service_from_annotations_beat_the_flags() -> None:
    flags = Options(identity=IdentityDefaults(trust_domain="flag.example", service="https://issuer.flag:8443"))
    _, sidecar = inject_one(workload("Deployment", ENABLED), flags)
    env = kubelet_env(sidecar, "web", "shop")
    assert env[cfg.TRUST_DOMAIN] == "flag.example"
    assert env[cfg.IDENTITY_NAME] == "web.shop.serviceaccount.identity.flag.example"
    assert env[cfg.IDENTITY_SERVICE] == "https://issuer.flag:8443"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": {
        names.TRUST_DOMAIN: "ns.example", names.IDENTITY_SERVICE: "https://issuer.ns:9443"}}}
    doc = workload("Deployment", {**ENABLED, names.TRUST_DOMAIN: "pod.example"}, namespace="shop")
    [_, out] = load(inject_text(dump(ns, doc), flags).text)
    [sidecar] = [c for c in pod_of(out)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    env = kubelet_env(sidecar, "web", "shop")
    assert env[cfg.IDENTITY_NAME] == "web.shop.serviceaccount.identity.pod.example"
    assert env[cfg.IDENTITY_SERVICE] == "https://issuer.ns:9443"
    assert cfg.load(env=env).identity.trust_domain == "pod.example"


@pytest.mark.parametrize(
    ("annotation", "value", "words"),
    [
        (names.TRUST_DOMAIN, "Bad_Domain", "bad trust domain"),
        (names.IDENTITY_SERVICE, "http://issuer:8080", "https://"),
        (names.DISABLE_IDENTITY, "yes", '"true" or "false"'),
    ],
)
def test_bad_identity_annotations_are_errors(annotation: str, value: str, words: str) -> None:
    with pytest.raises(InjectError, match=annotation) as info:
        inject_text(dump(workload("Pod", {**ENABLED, annotation: value})))
    assert words in str(info.value)


# ---- the opt-out -------------------------------------------------------------------


def assert_no_identity(spec: dict, sidecar: dict) -> None:
    assert not IDENTITY_ENV & {e["name"] for e in sidecar["env"]}
    assert "volumeMounts" not in sidecar
    assert set(volumes(spec)) == {names.XTABLES_VOLUME}
    assert cfg.load(env=kubelet_env(sidecar)).identity.name is None


@pytest.mark.parametrize("level", ["pod", "workload", "namespace"])
def test_disable_identity_annotation_at_any_level(level: str) -> None:
    off = {names.DISABLE_IDENTITY: "true"}
    doc = workload("Deployment", {**ENABLED, **(off if level == "pod" else {})}, off if level == "workload" else None)
    options = Options(namespace_annotations=off if level == "namespace" else {})
    result = inject_text(dump(doc), options)
    [out] = load(result.text)
    spec = pod_of(out)[1]
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    assert_no_identity(spec, sidecar)
    assert "identity off" in result.report[0]


def test_disable_identity_flag_and_a_pod_that_turns_it_back_on() -> None:
    flag = Options(identity=IdentityDefaults(disabled=True))
    assert_no_identity(*inject_one(workload("Deployment", ENABLED), flag))
    spec, sidecar = inject_one(workload("Deployment", {**ENABLED, names.DISABLE_IDENTITY: "False"}), flag)
    assert IDENTITY_VOLUMES <= set(volumes(spec))
    assert cfg.IDENTITY_NAME in kubelet_env(sidecar)
    # The most specific level wins: "false" on the pod beats "true" on the namespace.
    ns_off = Options(namespace_annotations={names.DISABLE_IDENTITY: "true"})
    spec, _ = inject_one(workload("Deployment", {**ENABLED, names.DISABLE_IDENTITY: "false"}), ns_off)
    assert IDENTITY_VOLUMES <= set(volumes(spec))


def test_turning_identity_off_on_reinjection_removes_its_volumes() -> None:
    original = workload("Deployment", ENABLED, volumes=[{"name": "data", "emptyDir": {}}])
    once = inject_text(dump(original)).text
    off = inject_text(once, Options(identity=IdentityDefaults(disabled=True)))
    assert "re-injected" in off.report[0] and "identity off" in off.report[0]
    [doc] = load(off.text)
    spec = pod_of(doc)[1]
    assert [v["name"] for v in spec["volumes"]] == ["data", names.XTABLES_VOLUME]
    assert load(uninject_text(off.text).text) == [original]
    back_on = inject_text(off.text).text
    assert back_on == once
