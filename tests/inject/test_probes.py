"""proxy/inject/probes.py and the default inbound policy: what keeps the kubelet's probes
passing through the inbound proxy, whatever the pod's default policy."""

from __future__ import annotations

import pytest

from proxy import config as cfg
from proxy.inject import InjectError, Options, inject_text, names, probes
from proxy.inject.policy import IdentityDefaults
from proxy.policy.authz import Client, InboundPolicy
from tests.inject.manifests import ENABLED, dump, kubelet_env, load, pod_of, workload


def http(path: str | None = "/healthz", **extra: object) -> dict:
    get: dict = {"port": 8080, **extra}
    if path is not None:
        get["path"] = path
    return {"httpGet": get}


def app(name: str = "app", **probe_fields: dict) -> dict:
    return {"name": name, "image": "python:3.11-slim", **probe_fields}


def sidecar_env(doc: dict, options: Options | None = None) -> tuple[dict[str, str], str]:
    result = inject_text(dump(doc), options)
    [out] = load(result.text)
    [sidecar] = [c for c in pod_of(out)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    return kubelet_env(sidecar), result.report[0]


# ---- probes.find -------------------------------------------------------------------


def test_paths_of_every_http_probe_sorted_and_once() -> None:
    spec = {"containers": [
        app(livenessProbe=http("/live"), readinessProbe=http("/ready"), startupProbe=http("/live")),
        app("worker", readinessProbe=http("/metrics/health")),
    ]}
    found = probes.find(spec)
    assert found.paths == ("/live", "/metrics/health", "/ready")
    assert found.value == "/live,/metrics/health,/ready"
    assert found.uncovered == ()


@pytest.mark.parametrize(
    ("path", "requested"),
    [(None, "/"), ("", "/"), ("healthz", "/healthz"), ("/healthz?verbose=1", "/healthz"), ("/a/b", "/a/b")],
)
def test_paths_as_the_kubelet_requests_them(path: str | None, requested: str) -> None:
    assert probes.find({"containers": [app(readinessProbe=http(path))]}).paths == (requested,)


def test_probes_that_a_path_cannot_admit_are_set_apart() -> None:
    spec = {"containers": [app(
        livenessProbe=http("/secure", scheme="HTTPS"),
        readinessProbe={"grpc": {"port": 9090}},
        startupProbe=http("/a,b"),
    ), app("db", livenessProbe={"tcpSocket": {"port": 5432}}, readinessProbe={"exec": {"command": ["true"]}})]}
    found = probes.find(spec)
    assert found.paths == () and found.value is None
    assert found.uncovered == ("container app livenessProbe (HTTPS)", "container app readinessProbe (grpc)",
                               "container app startupProbe (a comma in the path)")


def test_sidecar_init_containers_count_and_ours_do_not() -> None:
    spec = {
        "initContainers": [
            {"name": names.PROXY_CONTAINER, "readinessProbe": http("/ready"), "livenessProbe": http("/live")},
            {"name": "log-shipper", "restartPolicy": "Always", "readinessProbe": http("/shipper")},
        ],
        "containers": [app(readinessProbe=http("/app"))],
    }
    assert probes.find(spec, skip=(names.PROXY_CONTAINER,)).paths == ("/app", "/shipper")


# ---- through injection -----------------------------------------------------------


def test_probe_paths_reach_the_proxy_and_its_policy_admits_them() -> None:
    doc = workload("Deployment", {**ENABLED, names.DEFAULT_INBOUND_POLICY: "deny"})
    pod_of(doc)[1]["containers"][0].update(livenessProbe=http("/livez"), readinessProbe=http("/readyz?full=1"))
    env, report = sidecar_env(doc)
    assert env[cfg.INBOUND_PROBE_PATHS] == "/livez,/readyz"
    assert env[cfg.DEFAULT_POLICY] == "deny"
    assert "probe paths /livez,/readyz" in report
    settings = cfg.load(env=env).policy
    assert settings.probe_paths == ("/livez", "/readyz") and settings.default_policy == "deny"
    # The proxy's inbound policy built from those settings: probes pass, the rest is denied.
    policy = InboundPolicy.build(None, settings.default_policy, settings.cluster_networks, settings.probe_paths)
    port = policy.port(8080)
    kubelet = Client("10.0.0.1", None, False)
    assert port.per_request
    assert port.check_request(kubelet, "GET", "/readyz?full=1", lambda name: None).allowed
    assert not port.check_request(kubelet, "GET", "/orders", lambda name: None).allowed


def test_no_http_probes_no_setting() -> None:
    env, report = sidecar_env(workload("Deployment", ENABLED))
    assert cfg.INBOUND_PROBE_PATHS not in env and "probe paths" not in report


def test_reinjection_does_not_pick_up_the_proxys_own_probes() -> None:
    doc = workload("Deployment", ENABLED)
    pod_of(doc)[1]["containers"][0]["readinessProbe"] = http("/healthz")
    once = inject_text(dump(doc)).text
    assert inject_text(once).text == once
    [sidecar] = [c for c in pod_of(load(once)[0])[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    assert kubelet_env(sidecar)[cfg.INBOUND_PROBE_PATHS] == "/healthz"


def test_uncovered_probes_are_reported_only_when_the_default_policy_would_refuse_them() -> None:
    grpc = {"grpc": {"port": 9090}}
    doc = workload("Deployment", ENABLED)
    pod_of(doc)[1]["containers"][0]["readinessProbe"] = grpc
    assert "cannot admit" not in sidecar_env(doc)[1]
    doc = workload("Deployment", {**ENABLED, names.DEFAULT_INBOUND_POLICY: "all-authenticated"})
    pod_of(doc)[1]["containers"][0]["readinessProbe"] = grpc
    assert "cannot admit by path: container app readinessProbe (grpc)" in sidecar_env(doc)[1]


# ---- the default inbound policy annotation ----------------------------------------


@pytest.mark.parametrize("policy", cfg.DEFAULT_POLICIES)
def test_default_policy_from_the_namespace_and_the_workload(policy: str) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": "shop", "annotations": {**ENABLED, names.DEFAULT_INBOUND_POLICY: policy}}}
    [_, out] = load(inject_text(dump(ns, workload("Deployment", namespace="shop"))).text)
    [sidecar] = [c for c in pod_of(out)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    assert kubelet_env(sidecar)[cfg.DEFAULT_POLICY] == policy
    # The workload's own annotation beats the namespace's.
    doc = workload("Deployment", owner_annotations={names.DEFAULT_INBOUND_POLICY: "deny"}, namespace="shop")
    [_, out] = load(inject_text(dump(ns, doc)).text)
    [sidecar] = [c for c in pod_of(out)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    assert cfg.load(env=kubelet_env(sidecar)).policy.default_policy == "deny"


def test_no_annotation_leaves_the_proxys_default() -> None:
    env, _ = sidecar_env(workload("Deployment", ENABLED))
    assert cfg.DEFAULT_POLICY not in env
    assert cfg.load(env=env).policy.default_policy == "all-unauthenticated"


def test_unknown_default_policy_is_an_error() -> None:
    with pytest.raises(InjectError, match="default-inbound-policy: 'audit'.*expected one of all-unauthenticated"):
        inject_text(dump(workload("Pod", {**ENABLED, names.DEFAULT_INBOUND_POLICY: "audit"})))


def test_authenticated_policy_without_identity_is_flagged() -> None:
    doc = workload("Deployment", {**ENABLED, names.DEFAULT_INBOUND_POLICY: "all-authenticated"})
    _, report = sidecar_env(doc, Options(identity=IdentityDefaults(disabled=True)))
    assert "identity off" in report and "no client can authenticate" in report
    _, report = sidecar_env(doc)
    assert "no client can authenticate" not in report
