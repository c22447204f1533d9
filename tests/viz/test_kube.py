"""proxy/viz/kube.py: which pods carry a proxy, their ports and workload labels; the kubeconfig."""

from __future__ import annotations

import base64
import datetime as dt
import ssl

import pytest

from proxy.identity import ca
from proxy.viz import kube
from tests.viz.kubepods import kubeconfig, pod


def labels(found: kube.MeshedPod | None) -> dict[str, str]:
    assert found is not None
    return dict(found.labels)


def test_deployment_pod_named_ports_and_identity():
    obj = pod("web-5d8f7c9b4-x2x9z", container="linkerd-proxy", owner=("ReplicaSet", "web-5d8f7c9b4"),
              template_hash="5d8f7c9b4", account="web", ports={"linkerd-admin": 9991, "linkerd-tap": 9990},
              env={"MESHPROXY_IDENTITY_NAME": "$(_MESHPROXY_POD_SERVICE_ACCOUNT).$(_MESHPROXY_POD_NAMESPACE)"
                                              ".serviceaccount.identity.example.org"})
    found = kube.meshed_pod(obj)
    assert found is not None and (found.ip, found.admin_port, found.tap_port) == ("127.0.0.1", 9991, 9990)
    assert found.identity == "web.default.serviceaccount.identity.example.org"
    assert labels(found) == {"namespace": "default", "pod": "web-5d8f7c9b4-x2x9z", "serviceaccount": "web",
                             "deployment": "web", "replicaset": "web-5d8f7c9b4"}


@pytest.mark.parametrize("owner, expected", [
    (("StatefulSet", "db"), {"statefulset": "db"}),
    (("DaemonSet", "agent"), {"daemonset": "agent"}),
    (("Job", "migrate"), {"k8s_job": "migrate"}),
    (("ReplicaSet", "bare"), {"replicaset": "bare"}),  # no pod-template-hash: not a Deployment's
    (("Node", "n1"), {}),
])
def test_owner_labels_and_default_ports(owner, expected):
    found = kube.meshed_pod(pod("p", owner=owner, ports={"meshproxy-admin": 4000}))
    assert found is not None and (found.admin_port, found.tap_port, found.identity) == (4000, 4190, None)
    assert {k: v for k, v in labels(found).items() if k not in ("namespace", "pod", "serviceaccount")} == expected
    bare = kube.meshed_pod(pod("q", ports={"other": 1}))
    assert bare is not None and (bare.admin_port, bare.tap_port) == (4191, 4190)


@pytest.mark.parametrize("kwargs", [{"container": None}, {"container": "istio-proxy"}, {"phase": "Pending"},
                                    {"phase": "Succeeded"}, {"ip": None}])
def test_pods_without_a_running_proxy_are_left_out(kwargs):
    assert kube.meshed_pod(pod("p", **kwargs)) is None


def test_kubeconfig_context_token_and_merge(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text(kubeconfig("http://127.0.0.1:1", token="t0k"))
    second.write_text(kubeconfig("http://10.0.0.1:2", token="other").replace("name: test", "name: other")
                      .replace("current-context: test", "current-context: other"))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    settings, token, tls = kube.connection(None, None)
    assert (settings.k8s_api, token, tls) == ("http://127.0.0.1:1", "t0k", None)  # the first file's wins
    settings, token, _ = kube.connection(None, "other")
    assert (settings.k8s_api, token) == ("http://127.0.0.1:1", "t0k")  # both files name cluster "fake": the first's
    with pytest.raises(kube.KubeError, match="no context named 'missing'") as err:
        kube.connection(str(first), "missing")
    assert err.value.code == 64


def test_kubeconfig_https_ca_file_client_certificate_and_basic_auth(tmp_path):
    root, other = (ca.create_root("cluster.local", dt.timedelta(days=1)) for _ in range(2))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem(root.cert))

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    text = kubeconfig("https://127.0.0.1:6443").replace("server: https",
                                                        "certificate-authority: ca.crt\n    server: https")
    path = tmp_path / "config"
    path.write_text(text.replace("user: {}", "user:\n    username: ad min\n    password: p@ss"))
    settings, token, tls = kube.connection(str(path), None)  # the CA file relative to the kubeconfig's directory
    assert settings.k8s_api == "https://ad%20min:p%40ss@127.0.0.1:6443" and token is None
    assert isinstance(tls, ssl.SSLContext) and tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname
    assert [c["subject"] for c in tls.get_ca_certs()] == [((("commonName", "root.cluster.local"),),)]
    user = (f"user:\n    client-certificate-data: {b64(ca.cert_pem(root.cert))}\n"
            f"    client-key-data: {b64(ca.key_pem(root.key))}")
    path.write_text(text.replace("user: {}", user))
    assert kube.connection(str(path), None)[2] is not None
    path.write_text(text.replace("user: {}", user.replace(b64(ca.key_pem(root.key)), b64(ca.key_pem(other.key)))))
    with pytest.raises(kube.KubeError, match="client certificate"):
        kube.connection(str(path), None)


def test_token_file_is_relative_to_the_file_naming_the_user(tmp_path, monkeypatch):
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "token").write_text("from-file\n")
    clusters, users = tmp_path / "clusters.yaml", tmp_path / "users" / "users.yaml"
    clusters.write_text(kubeconfig("http://127.0.0.1:1").replace("users:\n- name: tester\n  user: {}\n", ""))
    users.write_text("users:\n- name: tester\n  user:\n    tokenFile: token\n")
    monkeypatch.setenv("KUBECONFIG", f"{clusters}:{users}")
    assert kube.connection(None, None)[1] == "from-file"


@pytest.mark.parametrize("user, message", [
    ("user:\n    exec: {command: aws}", "credential plugins"),
    ("user:\n    tokenFile: missing-token", "tokenFile"),
])
def test_unusable_kubeconfig_users(tmp_path, user, message):
    path = tmp_path / "config"
    path.write_text(kubeconfig("http://127.0.0.1:1").replace("user: {}", user))
    with pytest.raises(kube.KubeError, match=message):
        kube.connection(str(path), None)


def test_unreadable_or_invalid_kubeconfig(tmp_path):
    with pytest.raises(kube.KubeError, match="cannot read the kubeconfig"):
        kube.connection(str(tmp_path / "none"), None)
    (tmp_path / "bad").write_text("[not: a mapping")
    with pytest.raises(kube.KubeError, match="invalid kubeconfig"):
        kube.connection(str(tmp_path / "bad"), None)
    (tmp_path / "nohttp").write_text(kubeconfig("127.0.0.1:6443"))
    with pytest.raises(kube.KubeError, match="not an http"):
        kube.connection(str(tmp_path / "nohttp"), None)
