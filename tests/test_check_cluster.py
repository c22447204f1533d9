"""``meshproxy check --pre`` and ``--proxy`` (proxy/check/cluster.py), run as a user runs them.

No API server runs here: the cluster is tests/discovery/fakeapi.py, in a
thread of the test, and ``meshproxy check`` is a child process talking HTTP
to it. For ``--proxy`` the fake API's pods/proxy subresource reaches a real
``meshproxy run`` whose certificate comes from files the test signs, so the
expiry read is the proxy's own. The pods are what ``meshproxy inject`` makes,
with a status added.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509

import proxy
from helpers.clients import clean_env
from helpers.meshproxy import MeshProxy
from helpers.ports import free_port
from proxy.identity import ca
from proxy.inject import inject_text, names
from proxy.install import controlplane, crds
from tests.discovery.fakeapi import Cluster
from tests.inject.manifests import ENABLED, dump, workload

REPO = Path(__file__).resolve().parents[1]
NAME = "web.shop.serviceaccount.identity.cluster.local"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


def check(*args: str, api: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    argv = [sys.executable, "-m", "proxy", "check", *args] + (["--api", api] if api else [])
    run = subprocess.run(argv, cwd=REPO, env=clean_env(PYTHONPATH=str(REPO), PYTHONIOENCODING="utf-8", **(env or {})),
                         capture_output=True, text=True, timeout=90)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, run.stdout


def check_json(*args: str, api: str | None = None, env: dict[str, str] | None = None) -> tuple[int, dict]:
    code, out = check(*args, "-o", "json", api=api, env=env)
    document = json.loads(out)
    assert document["success"] == (code == 0), out
    return code, document


def results(document: dict) -> dict[str, dict]:
    return {c["description"]: c for category in document["categories"] for c in category["checks"]}


def categories(document: dict) -> list[str]:
    return [c["categoryName"] for c in document["categories"]]


# ---- --pre ------------------------------------------------------------------------------


def test_pre_passes_on_a_fresh_cluster(cluster: Cluster) -> None:
    code, document = check_json("--pre", api=cluster.api.url)
    assert code == 0, document
    assert categories(document) == ["kubernetes-api", "kubernetes-version", "pre-kubernetes-setup",
                                    "pre-meshproxy-crds"]
    found = results(document)
    assert {r["result"] for r in found.values()} == {"success"}
    for kind in ("ServiceAccounts", "Secrets", "ConfigMaps", "Services", "Deployments", "PodDisruptionBudgets"):
        assert f"can create {kind}" in found
    # The cluster-wide kinds asked about are those install prints, each by group and resource.
    reviews = [q for q in cluster.api.requests if q[0].endswith("selfsubjectaccessreviews")]
    assert len(reviews) == 11
    code, text = check("--pre", api=cluster.api.url)
    assert code == 0
    assert text.startswith("kubernetes-api\n--------------\n"
                           "√ can initialize the client\n√ can query the Kubernetes API\n")
    assert "\nkubernetes-version\n------------------\n√ is running the minimum Kubernetes API version\n" in text
    assert text.endswith("Status check results are √\n")


def test_pre_fails_on_an_old_cluster_without_rights_with_the_namespace_and_conflicting_crds(cluster: Cluster) -> None:
    api = cluster.api
    api.version = {"major": "1", "minor": "28+", "gitVersion": "v1.28.9-eks-1"}
    api.namespaces["meshproxy"] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshproxy"}}
    api.denied |= {("rbac.authorization.k8s.io", "clusterroles", None), ("", "secrets", "meshproxy")}
    profile = crds.definition(crds.KINDS[0])
    profile["spec"]["versions"] = [v for v in profile["spec"]["versions"] if v["name"] == "v1alpha1"]
    api.crds[profile["metadata"]["name"]] = profile
    code, document = check_json("--pre", api=api.url)
    assert code == 1
    found = results(document)
    version = found["is running the minimum Kubernetes API version"]
    assert version["result"] == "error" and "Kubernetes 1.28" in version["error"]
    assert version["hint"].startswith("https://kubernetes.io/")
    assert found["control plane namespace does not already exist"]["result"] == "error"
    cluster_wide = found["can create non-namespaced resources"]
    assert cluster_wide["result"] == "error" and cluster_wide["error"] == "not allowed to create ClusterRole"
    assert found["can create Secrets"]["result"] == "error"
    assert found["can create Deployments"]["result"] == "success"
    conflict = found["existing CustomResourceDefinitions are compatible"]
    assert conflict["result"] == "error" and "serviceprofiles.linkerd.io: does not serve v1alpha2" in conflict["error"]
    code, text = check("--pre", api=api.url)
    assert code == 1
    assert "× can create Secrets\n    not allowed to create Secrets in namespace meshproxy\n    see https://" in text
    assert text.endswith("Status check results are ×\n")


def test_pre_warns_about_linkerds_crds_and_accepts_its_own(cluster: Cluster) -> None:
    linkerd = crds.definition(crds.KINDS[1])
    linkerd["metadata"]["labels"] = {"linkerd.io/control-plane-ns": "linkerd"}
    cluster.api.crds[linkerd["metadata"]["name"]] = linkerd
    ours = crds.definition(crds.KINDS[2])
    cluster.api.crds[ours["metadata"]["name"]] = ours
    code, document = check_json("--pre", api=cluster.api.url)
    assert code == 0
    warning = results(document)["existing CustomResourceDefinitions are compatible"]
    assert warning["result"] == "warning" and warning["error"].endswith(": servers.policy.linkerd.io")
    _, text = check("--pre", api=cluster.api.url)
    assert "‼ existing CustomResourceDefinitions are compatible\n" in text
    assert text.endswith("Status check results are √\n")
    other = crds.definition(crds.KINDS[1])
    other["spec"]["names"]["kind"] = "Serverr"
    cluster.api.crds[other["metadata"]["name"]] = other
    code, document = check_json("--pre", api=cluster.api.url)
    assert code == 1 and "is Serverr of policy.linkerd.io" in results(document)[
        "existing CustomResourceDefinitions are compatible"]["error"]


def test_the_token_file_is_sent_and_a_refused_token_stops_the_checks(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.token = "s3cret"
    (tmp_path / "token").write_text("s3cret\n")
    env = {"MESHPROXY_K8S_API": cluster.api.url, "MESHPROXY_K8S_TOKEN_FILE": str(tmp_path / "token")}
    code, _ = check_json("--pre", env=env)
    assert code == 0
    assert {auth for _, _, auth in cluster.api.requests} == {"Bearer s3cret"}
    (tmp_path / "token").write_text("stale\n")
    code, document = check_json("--pre", env=env)
    assert code == 1 and categories(document) == ["kubernetes-api"]
    assert "answered 401" in results(document)["can query the Kubernetes API"]["error"]


def test_no_api_or_an_unreachable_one_is_one_failing_line() -> None:
    code, document = check_json("--pre")
    assert code == 1 and results(document)["can initialize the client"]["result"] == "error"
    assert "kubectl proxy" in results(document)["can initialize the client"]["hint"]
    code, document = check_json("--proxy", api=f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "Connection refused" in results(document)["can query the Kubernetes API"]["error"]
    code, document = check_json("--pre", api="ftp://example")
    assert code == 1 and "expected http" in results(document)["can initialize the client"]["error"]


# ---- --proxy ------------------------------------------------------------------------------


def meshed_pod(name: str, admin_port: int, ready: bool = True, version: str | None = None) -> dict:
    """A pod as meshproxy inject makes it, scheduled, with the kubelet's status."""
    [pod] = yaml.safe_load_all(inject_text(dump(workload("Pod", ENABLED, namespace="shop"))).text)
    pod["metadata"]["name"] = name
    if version is not None:
        pod["metadata"]["annotations"][names.PROXY_VERSION] = version
    proxy_container = next(c for c in pod["spec"]["initContainers"] if c["name"] == names.PROXY_CONTAINER)
    for port in proxy_container["ports"]:
        if port["name"] == names.ADMIN_PORT_NAME:
            port["containerPort"] = admin_port  # where the test's real proxy serves its admin
    pod["status"] = {
        "phase": "Running", "podIP": "127.0.0.1",
        "initContainerStatuses": [{"name": names.INIT_CONTAINER, "ready": True},
                                  {"name": names.PROXY_CONTAINER, "ready": ready, "started": ready}],
        "containerStatuses": [{"name": "app", "ready": True}],
    }
    return pod


def _certificate(directory: Path, lifetime: dt.timedelta) -> dict[str, str]:
    root = ca.create_root("cluster.local", dt.timedelta(days=30))
    issuer = ca.create_issuer(root, "cluster.local", dt.timedelta(days=20))
    key = ca.new_key()
    leaf = ca.sign_leaf(issuer, key.public_key(), NAME, [x509.DNSName(NAME)], lifetime)
    directory.mkdir()
    (directory / "ca.crt").write_bytes(ca.cert_pem(root.cert))
    (directory / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(issuer.cert))
    (directory / "tls.key").write_bytes(ca.key_pem(key))
    return {"MESHPROXY_IDENTITY_NAME": NAME, "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(directory / "ca.crt"),
            "MESHPROXY_IDENTITY_CERT_FILE": str(directory / "tls.crt"),
            "MESHPROXY_IDENTITY_KEY_FILE": str(directory / "tls.key")}


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[tuple[MeshProxy, MeshProxy]]:
    """Two real proxies: one with a certificate valid for two days, one for three hours."""
    long = MeshProxy(env=_certificate(tmp_path / "long", dt.timedelta(days=2)), name="cert-2d")
    short = MeshProxy(env=_certificate(tmp_path / "short", dt.timedelta(hours=3)), name="cert-3h")
    try:
        long.start(timeout=30)
        short.start(timeout=30)
        yield long, short
    finally:
        long.close()
        short.close()


def anchors(cluster: Cluster, **by_namespace: str) -> None:
    """The trust anchors ConfigMaps, as meshproxy install prints them."""
    for ns, pem in by_namespace.items():
        cluster.api.configmaps[(ns, names.TRUST_ANCHORS_CONFIGMAP)] = controlplane.trust_anchors(ns, pem)


def test_proxy_passes_for_ready_current_proxies_with_valid_certificates(cluster: Cluster, proxies) -> None:
    long, _ = proxies
    anchors(cluster, meshproxy="anchor A", shop="anchor A")
    cluster.api.pods[("shop", "web-1")] = meshed_pod("web-1", long.admin[1], version=proxy.__version__)
    cluster.api.pods[("shop", "web-2")] = meshed_pod("web-2", long.admin[1])  # version from the image tag
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": "shop"},
             "spec": {"containers": [{"name": "db", "image": "postgres"}]}, "status": {"phase": "Running"}}
    cluster.api.pods[("shop", "db")] = plain
    code, document = check_json("--proxy", api=cluster.api.url)
    assert code == 0, document
    assert categories(document) == ["kubernetes-api", "meshproxy-data-plane"]
    found = results(document)
    assert found["data plane proxies are ready"]["message"] == "2 meshed pods"
    assert found["data plane proxies certificates are valid for at least a day"]["message"] == "2 checked"
    assert found["data plane and cli versions match"]["result"] == "success"
    assert found["data plane trust anchors match the control plane's"]["message"] == "shop"
    proxied = [path for path, _, _ in cluster.api.requests if path.endswith("/proxy/metrics")]
    assert proxied == [f"/api/v1/namespaces/shop/pods/web-{i}:{long.admin[1]}/proxy/metrics" for i in (1, 2)]
    code, text = check("--proxy", api=cluster.api.url)
    assert code == 0 and "meshproxy-data-plane\n--------------------\n√ data plane proxies are ready\n" in text


def test_proxy_fails_for_unready_unreachable_and_expiring_proxies(cluster: Cluster, proxies) -> None:
    long, short = proxies
    anchors(cluster, meshproxy="anchor A", shop="anchor B from an earlier install")
    pods = cluster.api.pods
    pods[("shop", "ok")] = meshed_pod("ok", long.admin[1])
    pods[("shop", "expiring")] = meshed_pod("expiring", short.admin[1])
    pods[("shop", "starting")] = meshed_pod("starting", long.admin[1], ready=False)
    pods[("shop", "gone")] = meshed_pod("gone", free_port())
    pods[("shop", "old")] = meshed_pod("old", long.admin[1], version="0.0.9")
    code, document = check_json("--proxy", api=cluster.api.url)
    assert code == 1
    found = results(document)
    ready = found["data plane proxies are ready"]
    assert ready["result"] == "error" and ready["error"] == "proxy not ready in shop/starting"
    certs = found["data plane proxies certificates are valid for at least a day"]
    assert certs["result"] == "error"
    assert "shop/expiring: certificate expires in" in certs["error"] and "h" in certs["error"].split("expires in")[1]
    assert "shop/gone: its metrics through the API answered 503" in certs["error"]
    assert "shop/ok" not in certs["error"] and "shop/starting" not in certs["error"]
    skew = found["data plane and cli versions match"]
    assert skew["result"] == "warning" and "shop/old runs 0.0.9" in skew["error"]
    assert found["data plane trust anchors match the control plane's"]["error"] == "different in shop"
    code, text = check("--proxy", api=cluster.api.url)
    assert code == 1
    assert "× data plane proxies certificates are valid for at least a day\n" in text
    assert "‼ data plane and cli versions match\n" in text


def test_proxy_with_no_meshed_pods_says_how_to_mesh_them(cluster: Cluster) -> None:
    code, document = check_json("--proxy", "--namespace", "empty", api=cluster.api.url)
    assert code == 1
    result = results(document)["data plane proxies are ready"]
    assert result["error"] == "no meshed pods in namespace empty" and "meshproxy inject" in result["hint"]
    assert ("/api/v1/namespaces/empty/pods", {}, None) in cluster.api.requests


def test_a_proxy_without_identity_has_no_certificate_to_check(cluster: Cluster, tmp_path: Path) -> None:
    with MeshProxy(name="plain") as plain:
        plain.start(timeout=30)
        pod = meshed_pod("plain", plain.admin[1], version=proxy.__version__)
        container = next(c for c in pod["spec"]["initContainers"] if c["name"] == names.PROXY_CONTAINER)
        container["env"] = [e for e in container["env"] if e["name"] != "MESHPROXY_IDENTITY_NAME"]
        cluster.api.pods[("shop", "plain")] = pod
        code, document = check_json("--proxy", api=cluster.api.url)
    assert code == 0
    assert results(document)["data plane proxies certificates are valid for at least a day"]["result"] == "skipped"


def test_trust_anchors_missing_in_a_namespace_or_in_the_control_plane(cluster: Cluster) -> None:
    cluster.api.pods[("shop", "web")] = meshed_pod("web", free_port(), version=proxy.__version__)
    books = meshed_pod("api", free_port(), version=proxy.__version__)
    books["metadata"]["namespace"] = "books"
    cluster.api.pods[("books", "api")] = books
    title = "data plane trust anchors match the control plane's"
    _, document = check_json("--proxy", api=cluster.api.url)
    result = results(document)[title]
    assert result["result"] == "warning" and "no meshproxy/meshproxy-trust-anchors" in result["error"]
    anchors(cluster, meshproxy="anchor A", shop="anchor A")
    _, document = check_json("--proxy", api=cluster.api.url)
    result = results(document)[title]
    assert result["result"] == "error" and result["error"] == "missing in books (its pods cannot start)"
    assert "kubectl -n meshproxy get configmap meshproxy-trust-anchors" in result["hint"]


def test_answers_without_the_documented_shape_are_one_failing_line(cluster: Cluster) -> None:
    cluster.api.version = ["v1.29.0"]  # JSON, not an object
    code, document = check_json("--pre", api=cluster.api.url)
    assert code == 1 and "JSON that is not an object" in results(document)["can query the Kubernetes API"]["error"]
    cluster.api.version = {"major": "one", "minor": ""}
    code, document = check_json("--pre", api=cluster.api.url)
    assert code == 1
    assert "cannot read the version" in results(document)["is running the minimum Kubernetes API version"]["error"]
    cluster.api.version = {"major": "1", "minor": "30"}
    cluster.api.crds["servers.policy.linkerd.io"] = {"metadata": {"name": "servers.policy.linkerd.io"},
                                                     "spec": ["not", "a", "mapping"]}
    code, document = check_json("--pre", api=cluster.api.url)
    assert code == 1 and "without the documented shape" in results(document)[
        "the Kubernetes API answers as documented"]["error"]
    cluster.api.pods[("shop", "odd")] = {"metadata": {"name": "odd", "namespace": "shop"}, "spec": "a string"}
    code, document = check_json("--proxy", api=cluster.api.url)
    assert code == 1 and "AttributeError" in results(document)["the Kubernetes API answers as documented"]["error"]
    cluster.api.pods[("shop", "odd")] = "not a pod"  # type: ignore[assignment]
    code, document = check_json("--proxy", api=cluster.api.url)
    assert code == 1 and "not an object" in results(document)["the Kubernetes API answers as documented"]["error"]
