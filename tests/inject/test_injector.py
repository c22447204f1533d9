"""``meshproxy injector serve`` as a real process: HTTPS AdmissionReviews in, JSONPatches out.

The namespace lookups go to the fake API server (tests/discovery/fakeapi.py,
run on a thread of its own); each returned patch is applied with a real
JSON-Patch implementation (jsonpatch) and the pod validated against the
Kubernetes 1.29 schemas.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from proxy import config as cfg
from proxy.identity import ca
from proxy.inject import Options, inject_text, names
from tests.discovery.fakeapi import FakeApiServer
from tests.helpers.ports import free_ports
from tests.inject.manifests import KINDS, dump, kubelet_env, load, pod_of, workload
from tests.inject.reviews import kind_review, pod_from, review

jsonpatch = pytest.importorskip("jsonpatch")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
MESHED = {"linkerd.io/inject": "enabled"}


class FakeApiThread:
    """The fake API server on its own event loop, so the test can block on HTTP calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: FakeApiServer = self.call(self._start())

    async def _start(self) -> FakeApiServer:
        return await FakeApiServer().start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def serving_certificate(tmp: Path, anchors: str = "ca.crt") -> None:
    """tls.crt and tls.key for the injector's Service name and 127.0.0.1, from a new CA written to ``anchors``."""
    root = ca.create_root("cluster.local", dt.timedelta(days=1))
    issuer = ca.create_issuer(root, "cluster.local", dt.timedelta(days=1))
    key = ca.new_key()
    sans = [x509.DNSName("meshproxy-injector.meshproxy.svc"), *ca.host_sans("127.0.0.1")]
    leaf = ca.sign_leaf(issuer, key.public_key(), "meshproxy-injector.meshproxy.svc", sans, dt.timedelta(hours=1))
    ca.write_atomically(tmp / "tls.key", ca.key_pem(key), 0o600)
    ca.write_atomically(tmp / "tls.crt", ca.cert_pem(leaf) + ca.cert_pem(issuer.cert), 0o644)
    (tmp / anchors).write_bytes(ca.cert_pem(root.cert))


class Injector:
    def __init__(self, tmp: Path, api_url: str, *extra: str) -> None:
        serving_certificate(tmp)
        self.tmp = tmp
        (tmp / "token").write_text("injector-token\n")
        self.port, self.admin_port = free_ports(2)
        self.ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
        self.log = tmp / "injector.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "injector", "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--admin-listen", f"127.0.0.1:{self.admin_port}", "--tls-cert", str(tmp / "tls.crt"),
                 "--tls-key", str(tmp / "tls.key"), "--k8s-api", api_url, "--k8s-token-file", str(tmp / "token"),
                 "--k8s-ca-file", "/nonexistent/ca.crt", "--log-format", "json", "--cert-check-interval", "0.2",
                 "--namespace-timeout", "1",
                 *extra],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while self.admin("/ready")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"injector did not get ready: {self.stop()}")
            time.sleep(0.1)

    def admin(self, path: str) -> tuple[int, str]:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        except OSError:
            return 0, ""

    def post(self, body: bytes, method: str = "POST", path: str = "/inject",
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        conn.request(method, path, body=body if method == "POST" else None,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data

    def send(self, doc: dict[str, Any]) -> dict[str, Any]:
        status, data = self.post(json.dumps(doc).encode())
        assert status == 200, data
        answer = json.loads(data)
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == doc["request"]["uid"]
        assert answer["response"]["allowed"] is True
        return answer["response"]

    def count(self, result: str, reason: str) -> float:
        text = self.admin("/metrics")[1]
        for line in text.splitlines():
            if line.startswith("injector_requests_total{") and f'result="{result}"' in line \
                    and f'reason="{reason}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        return self.log.read_text()


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApiThread]:
    thread = FakeApiThread()
    server = thread.server
    server.add_namespace("meshed", MESHED)
    server.add_namespace("plain")
    server.add_namespace("tuned", {"meshproxy.io/inject": "enabled", "config.linkerd.io/proxy-cpu-limit": "500m",
                                   "config.linkerd.io/default-inbound-policy": "cluster-authenticated"})
    server.add_namespace("opted-out", {"linkerd.io/inject": "disabled"})
    server.add_namespace("broken-ns", {"linkerd.io/inject": "sometimes"})
    server.add_namespace("flaky", MESHED)
    server.namespace_status["flaky"] = 500
    server.add_namespace("slow", MESHED)
    server.namespace_delay["slow"] = 3.0
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def injector(api: FakeApiThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    process = Injector(tmp_path_factory.mktemp("injector"), api.server.url)
    yield process
    process.stop()


def patched(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(pod, operations)


def validate(pod: dict[str, Any]) -> None:
    pod = copy.deepcopy(pod)
    # As sent to webhooks: the API server sets it after admission; the schema wants a string.
    if pod["metadata"].get("creationTimestamp") is None:
        pod["metadata"].pop("creationTimestamp", None)
    kubernetes_validate.validate(pod, "1.29.0", strict=True)


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"].get("initContainers", [])}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_in_an_annotated_namespace_is_injected(injector: Injector, kind: str) -> None:
    doc = kind_review(kind, "meshed")
    pod = doc["request"]["object"]
    validate(pod)
    before = injector.count("injected", "injected")
    response = injector.send(doc)
    meshed = patched(pod, response)
    validate(meshed)
    init = containers(meshed)
    assert list(init) == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    assert init[names.PROXY_CONTAINER]["image"] == names.DEFAULT_PROXY_IMAGE
    assert init[names.INIT_CONTAINER]["image"] == names.DEFAULT_INIT_IMAGE
    assert meshed["metadata"]["annotations"][names.INJECTED] == "true"
    # The workload is named after the controller that made the pod (the Deployment behind its ReplicaSet).
    env = kubelet_env(init[names.PROXY_CONTAINER], namespace="meshed")
    expected = {"Deployment": ("deployment", "web-deployment"), "CronJob": ("job", "web-cronjob-29001234"),
                "StatefulSet": ("statefulset", "web-statefulset"), "Pod": ("pod", "web-pod")}
    assert (env[cfg.WORKLOAD_KIND], env[cfg.WORKLOAD_NAME]) == expected.get(kind, (kind.lower(), f"web-{kind.lower()}"))
    assert env[cfg.IDENTITY_NAME] == "default.meshed.serviceaccount.identity.cluster.local"
    # The pod's own volumes and containers are untouched.
    assert meshed["spec"]["containers"] == pod["spec"]["containers"]
    assert meshed["spec"]["volumes"][0] == pod["spec"]["volumes"][0]
    assert injector.count("injected", "injected") == before + 1


def test_same_pod_as_inject_manual(injector: Injector) -> None:
    """The webhook and `inject --manual` are one code path: same containers and volumes."""
    doc = workload("Deployment", namespace="meshed")
    manual_spec = pod_of(load(inject_text(dump(doc), Options(manual=True)).text)[0])[1]
    pod = pod_from(doc, "meshed")
    meshed = patched(pod, injector.send(review(pod, "meshed")))
    assert meshed["spec"]["initContainers"] == manual_spec["initContainers"]
    assert [v for v in meshed["spec"]["volumes"] if v["name"] in names.VOLUMES] == manual_spec["volumes"]


@pytest.mark.parametrize(("namespace", "annotations", "injected", "reason"), [
    ("plain", None, False, "not_annotated"),
    ("plain", {"linkerd.io/inject": "enabled"}, True, "injected"),
    ("plain", {"meshproxy.io/inject": "enabled"}, True, "injected"),
    ("plain", {"linkerd.io/inject": "ingress"}, True, "injected"),
    ("meshed", {"linkerd.io/inject": "disabled"}, False, "disabled"),
    ("meshed", {"meshproxy.io/inject": "disabled", "linkerd.io/inject": "enabled"}, False, "disabled"),
    ("opted-out", None, False, "disabled"),
    ("opted-out", {"linkerd.io/inject": "enabled"}, True, "injected"),
])
def test_namespace_and_pod_annotations(injector: Injector, namespace: str, annotations: dict[str, str] | None,
                                       injected: bool, reason: str) -> None:
    doc = kind_review("Deployment", namespace, annotations)
    result = "injected" if injected else "skipped"
    before = injector.count(result, reason)
    response = injector.send(doc)
    assert ("patch" in response) is injected
    assert "warnings" not in response
    if injected:
        validate(patched(doc["request"]["object"], response))
    assert injector.count(result, reason) == before + 1


def test_namespace_config_annotations_are_inherited_and_pods_override_them(injector: Injector) -> None:
    doc = kind_review("Deployment", "tuned", {"config.linkerd.io/proxy-memory-limit": "256Mi"})
    meshed = patched(doc["request"]["object"], injector.send(doc))
    validate(meshed)
    proxy = containers(meshed)[names.PROXY_CONTAINER]
    assert proxy["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert kubelet_env(proxy)[cfg.DEFAULT_POLICY] == "cluster-authenticated"
    doc = kind_review("Deployment", "tuned", {"config.linkerd.io/proxy-cpu-limit": "2",
                                              "config.meshproxy.io/default-inbound-policy": "all-authenticated"})
    proxy = containers(patched(doc["request"]["object"], injector.send(doc)))[names.PROXY_CONTAINER]
    assert proxy["resources"]["limits"] == {"cpu": "2"}
    assert kubelet_env(proxy)[cfg.DEFAULT_POLICY] == "all-authenticated"


def test_host_network_and_existing_proxies_are_skipped(injector: Injector) -> None:
    cases = [
        (kind_review("DaemonSet", "meshed", hostNetwork=True), "host_network"),
        (kind_review("Deployment", "meshed"), "proxy_present"),
        (kind_review("Pod", "meshed"), "proxy_present"),
    ]
    cases[1][0]["request"]["object"]["spec"]["containers"].append({"name": "linkerd-proxy", "image": "proxy"})
    # A pod injected by `inject --manual` (its template already carried the sidecar).
    manual = load(inject_text(dump(workload("Pod")), Options(manual=True)).text)[0]
    cases[2][0]["request"]["object"]["spec"] = manual["spec"]
    for doc, reason in cases:
        before = injector.count("skipped", reason)
        response = injector.send(doc)
        assert "patch" not in response, reason
        assert injector.count("skipped", reason) == before + 1


def test_failures_never_block_the_pod(injector: Injector) -> None:
    """A bad annotation, a namespace the API cannot read, a pod without containers: allowed, unpatched, said why."""
    cases = [
        (kind_review("Deployment", "plain", {"linkerd.io/inject": "enabled",
                                             "config.linkerd.io/proxy-cpu-limit": "lots"}),
         "bad_annotation", "config.linkerd.io/proxy-cpu-limit"),
        (kind_review("Deployment", "broken-ns"), "bad_annotation", 'deployment "web-deployment": linkerd.io/inject'),
        (kind_review("Deployment", "flaky"), "namespace_lookup", "flaky"),
        (kind_review("Deployment", "gone"), "namespace_lookup", "gone"),
        (kind_review("Deployment", "slow"), "namespace_lookup", "namespace slow could not be read: TimeoutError"),
    ]
    malformed = kind_review("Pod", "meshed")
    del malformed["request"]["object"]["spec"]["containers"]
    cases.append((malformed, "malformed_pod", "containers"))
    for doc, reason, named in cases:
        before = injector.count("error", reason)
        response = injector.send(doc)
        assert "patch" not in response and "patchType" not in response, reason
        [warning] = response["warnings"]
        assert named in warning and warning.startswith("meshproxy injector: not injected"), warning
        assert injector.count("error", reason) == before + 1
        logged = [line for line in injector.lines() if line.get("uid") == doc["request"]["uid"]]
        assert [(e["event"], e["result"], e["reason"]) for e in logged] == [("pod not injected", "error", reason)]
        assert named in logged[0]["detail"]


def test_other_operations_and_kinds_pass(injector: Injector) -> None:
    pod = kind_review("Pod", "meshed")["request"]["object"]
    for doc in (review(pod, "meshed", operation="UPDATE"), review(pod, "meshed", kind="Service")):
        before = injector.count("skipped", "not_pod_create")
        response = injector.send(doc)
        assert "patch" not in response and "warnings" not in response
        assert injector.count("skipped", "not_pod_create") == before + 1


@pytest.mark.parametrize(("change", "reason", "words"), [
    ({"object": "a pod"}, "malformed_pod", "request.object is not a pod"),
    ({"object": None}, "malformed_pod", "request.object is not a pod"),
    ({"namespace": "../../apis"}, "bad_namespace", "'../../apis' is not a namespace name"),
    ({"namespace": ""}, "bad_namespace", "'' is not a namespace name"),
])
def test_unusable_pod_creates_pass_with_a_warning(injector: Injector, change: dict, reason: str,
                                                  words: str) -> None:
    doc = kind_review("Pod", "meshed")
    doc["request"].update(change)
    before = injector.count("error", reason)
    response = injector.send(doc)
    assert "patch" not in response
    assert words in response["warnings"][0]
    assert injector.count("error", reason) == before + 1


@pytest.mark.parametrize(("body", "words"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}).encode(),
     "admission.k8s.io/v1"),
    (json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(), "AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "no request"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {}}}).encode(),
     "no uid"),
])
def test_malformed_reviews_get_400(injector: Injector, body: bytes, words: str) -> None:
    before = injector.count("error", "bad_request")
    status, data = injector.post(body)
    assert status == 400 and words in data.decode(), data
    assert injector.count("error", "bad_request") == before + 1


def test_request_bounds(injector: Injector) -> None:
    status, _ = injector.post(b"", method="GET")
    assert status == 405
    status, _ = injector.post(b"{}", path="/other")
    assert status == 404
    before = injector.count("error", "too_large")
    status, data = injector.post(b"{" + b" " * (5 << 20) + b"}")
    assert status == 413 and b"larger than" in data
    assert injector.count("error", "too_large") == before + 1
    status, _ = injector.post(b"{}", headers={"X-Big": "a" * 9000})
    assert status in (400, 431)
    status, _ = injector.post(b"{}", headers={f"X-H{i}": "1" for i in range(100)})
    assert status in (400, 431)
    # Still serving.
    assert "patch" in injector.send(kind_review("Pod", "meshed"))


def test_https_only_with_the_serving_certificate(injector: Injector) -> None:
    with socket.create_connection(("127.0.0.1", injector.port), timeout=5) as sock:
        sock.sendall(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        sock.settimeout(5)
        try:
            data = sock.recv(100)
        except (ConnectionResetError, TimeoutError):
            data = b""
    assert not data.startswith(b"HTTP/1.1 2")
    with pytest.raises(ssl.SSLCertVerificationError):
        conn = http.client.HTTPSConnection("127.0.0.1", injector.port, context=ssl.create_default_context(),
                                           timeout=5)
        conn.request("GET", "/inject")


def test_a_renewed_certificate_is_served_without_a_restart(injector: Injector) -> None:
    serving_certificate(injector.tmp, "renewed-ca.crt")
    renewed = ssl.create_default_context(cafile=str(injector.tmp / "renewed-ca.crt"))
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", injector.port, context=renewed, timeout=5)
            conn.request("GET", "/inject")
            assert conn.getresponse().status == 405
            conn.close()
            break
        except ssl.SSLCertVerificationError:
            assert time.monotonic() < deadline, "the renewed certificate was not loaded"
            time.sleep(0.1)
    # The old CA no longer verifies it; later tests use the new one.
    with pytest.raises(ssl.SSLCertVerificationError):
        injector.post(b"{}")
    injector.ctx = renewed
    assert any(e["event"] == "serving certificate reloaded" for e in injector.lines())


def test_admin_endpoints(injector: Injector) -> None:
    assert injector.admin("/ready") == (200, "ready\n")
    assert injector.admin("/live")[0] == 200
    status, text = injector.admin("/metrics")
    assert status == 200 and "injector_requests_total" in text and "injector_request_duration_seconds" in text


def test_namespace_lookups_are_cached_briefly(api: FakeApiThread, injector: Injector) -> None:
    path = "/api/v1/namespaces/cached"
    api.server.add_namespace("cached", MESHED)
    for _ in range(3):
        assert "patch" in injector.send(kind_review("Pod", "cached"))
    assert [p for p, _, _ in api.server.requests].count(path) == 1
    assert any(auth == "Bearer injector-token" for p, _, auth in api.server.requests if p == path)


def test_linkerd_users_manifests_come_out_meshed(api: FakeApiThread, injector: Injector) -> None:
    """A Linkerd user's Namespace and Deployment, unchanged, through `meshproxy inject` and the webhook."""
    manifests = """\
apiVersion: v1
kind: Namespace
metadata:
  name: emojivoto
  annotations:
    linkerd.io/inject: enabled
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: emojivoto
spec:
  replicas: 1
  selector:
    matchLabels: {app: web-svc}
  template:
    metadata:
      labels: {app: web-svc}
      annotations:
        config.linkerd.io/opaque-ports: "6379"
        config.linkerd.io/skip-outbound-ports: "4222"
        config.linkerd.io/proxy-cpu-request: 100m
    spec:
      serviceAccountName: web
      containers:
      - name: web-svc
        image: docker.l5d.io/buoyantio/emojivoto-web:v11
        ports:
        - {name: http, containerPort: 8080}
"""
    policy = """\
---
apiVersion: policy.linkerd.io/v1beta2
kind: Server
metadata:
  name: web-http
  namespace: emojivoto
spec:
  podSelector:
    matchLabels: {app: web-svc}
  port: http
  proxyProtocol: HTTP/1
"""
    manifests += policy
    result = subprocess.run([sys.executable, "-m", "proxy", "inject", "-"], input=manifests, capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'deployment "web" injected' in result.stderr
    # The Namespace and the policy pass through byte for byte.
    assert result.stdout.startswith(manifests.split("---")[0]) and result.stdout.endswith(policy)
    namespace, deployment, _ = load(result.stdout)
    kubernetes_validate.validate(deployment, "1.29.0", strict=True)
    server_ns = namespace["metadata"]["name"]
    assert namespace["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}
    # The cluster now has the Namespace as applied.
    api.server.add_namespace(server_ns, namespace["metadata"]["annotations"])
    pod = pod_from(deployment, server_ns)
    meshed = patched(pod, injector.send(review(pod, server_ns)))
    validate(meshed)
    init = containers(meshed)
    proxy_env = kubelet_env(init[names.PROXY_CONTAINER], service_account="web", namespace=server_ns)
    assert proxy_env[cfg.OPAQUE_PORTS] == "6379"
    assert proxy_env[cfg.IDENTITY_NAME] == "web.emojivoto.serviceaccount.identity.cluster.local"
    assert kubelet_env(init[names.INIT_CONTAINER])[names.INIT_SKIP_OUTBOUND_PORTS] == "4222"
    assert init[names.PROXY_CONTAINER]["resources"]["requests"]["cpu"] == "100m"



def test_without_the_injector_extra_serve_says_what_to_install(tmp_path: Path) -> None:
    """The proxy's image installs meshproxy without [injector]: the webhook explains, exit 69."""
    serving_certificate(tmp_path)
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "aiohttp.py").write_text("raise ImportError(\"No module named 'aiohttp'\")\n")
    out = subprocess.run([sys.executable, "-m", "proxy", "injector", "serve", "--tls-cert", str(tmp_path / "tls.crt"),
                          "--tls-key", str(tmp_path / "tls.key"), "--k8s-api", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={"PYTHONPATH": f"{tmp_path / 'shadow'}:{ROOT}"})
    assert out.returncode == 69, out
    assert "pip install 'meshproxy[injector]'" in out.stderr
