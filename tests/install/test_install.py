"""``meshproxy install [--crds] [--ha]`` and ``meshproxy uninstall`` (proxy/install/), run as a user runs them.

No API server runs here: every printed object is validated against the
Kubernetes 1.29 OpenAPI schemas offline (kubernetes-validate, strict, as in
tests/inject/test_schema.py), the CRDs' own schemas are checked for the
structural rules the API server enforces and against Linkerd documents from
the policy tests, and the webhook's caBundle is checked against its serving
certificate with real X.509 path validation and a real TLS handshake.
"""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509 import verification

from helpers.clients import clean_env
from proxy.identity import ca
from proxy.identity.command import build_parser as identity_parser
from proxy.install import controlplane, crds
from proxy.policy import _authz_docs, _gateway, _linkerd
from tests.policy import test_authz_parse, test_parse

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
VERSION = "1.29.0"
pytestmark = pytest.mark.timeout(120)


def meshproxy(*args: str, code: int = 0) -> tuple[str, str]:
    run = subprocess.run([sys.executable, "-m", "proxy", *args], cwd=REPO, env=clean_env(PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == code, run.stderr
    return run.stdout, run.stderr


def documents(*args: str) -> list[dict]:
    out, _ = meshproxy(*args)
    assert out.startswith("# meshproxy ") and out.endswith("\n")
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


@pytest.fixture(scope="module")
def install() -> list[dict]:
    return documents("install")


@pytest.fixture(scope="module")
def install_ha() -> list[dict]:
    return documents("install", "--ha")


@pytest.fixture(scope="module")
def install_crds() -> list[dict]:
    return documents("install", "--crds")


def key(doc: dict) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace", "")


def one(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


# ---- every manifest is a valid Kubernetes 1.29 object ------------------------------------


@pytest.mark.parametrize("args", [("install",), ("install", "--ha"), ("install", "--crds"), ("uninstall",),
                                  ("uninstall", "--keep-crds"), ("install", "--meshed-namespace", "shop")])
def test_every_printed_object_is_valid(args: tuple[str, ...]) -> None:
    docs = documents(*args)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_really_checks_these_kinds(install: list[dict], install_crds: list[dict]) -> None:
    """Guard against a validator that waves unknown kinds through."""
    webhook = one(install, "MutatingWebhookConfiguration", controlplane.WEBHOOK_CONFIG)
    bad = yaml.safe_load(yaml.safe_dump(webhook))
    bad["webhooks"][0]["failurePolicyy"] = "Ignore"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSION, strict=True)
    crd = yaml.safe_load(yaml.safe_dump(install_crds[0]))
    crd["spec"]["versions"][0]["served"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, VERSION, strict=True)


def test_install_prints_the_control_plane(install: list[dict]) -> None:
    assert [key(d) for d in install] == [
        ("Namespace", "meshproxy", ""),
        ("Secret", "meshproxy-identity-issuer", "meshproxy"),
        ("ConfigMap", "meshproxy-trust-anchors", "meshproxy"),
        ("ServiceAccount", "meshproxy-identity", "meshproxy"),
        ("ClusterRole", "meshproxy-identity", ""),
        ("ClusterRoleBinding", "meshproxy-identity", ""),
        ("Service", "meshproxy-identity", "meshproxy"),
        ("Deployment", "meshproxy-identity", "meshproxy"),
        ("ServiceAccount", "meshproxy-injector", "meshproxy"),
        ("ClusterRole", "meshproxy-injector", ""),
        ("ClusterRoleBinding", "meshproxy-injector", ""),
        ("Secret", "meshproxy-injector-tls", "meshproxy"),
        ("Service", "meshproxy-injector", "meshproxy"),
        ("Deployment", "meshproxy-injector", "meshproxy"),
        ("MutatingWebhookConfiguration", "meshproxy-injector-webhook-config", ""),
    ]
    for doc in install:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "meshproxy"


def test_the_identity_objects_are_the_shipped_manifests(install: list[dict]) -> None:
    """deploy/identity/ and install agree because they are the same files."""
    shipped = []
    for path in sorted((REPO / "deploy" / "identity").glob("*.yaml")):
        assert path.resolve().parent == REPO / "proxy" / "install" / "manifests"
        shipped += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    printed = {key(d): d for d in install}
    for doc in shipped:
        assert printed[key(doc)] == doc


def test_new_issuer_and_trust_anchors_are_consistent(install: list[dict]) -> None:
    secret = one(install, "Secret", controlplane.ISSUER_SECRET)["stringData"]
    anchors = one(install, "ConfigMap", "meshproxy-trust-anchors")["data"]["ca.crt"]
    assert secret[ca.CA_CERT] == anchors
    issuer = x509.load_pem_x509_certificate(secret[ca.ISSUER_CERT].encode())
    [root] = x509.load_pem_x509_certificates(anchors.encode())
    issuer.verify_directly_issued_by(root)
    assert issuer.subject.rfc4514_string() == "CN=identity.cluster.local"
    # The trust anchor's key is never printed.
    assert sum("PRIVATE KEY" in value for value in secret.values()) == 1
    assert "PRIVATE KEY" not in anchors
    # The issuer's Deployment mounts this Secret and runs a command the issuer accepts.
    deployment = one(install, "Deployment", "meshproxy-identity")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == controlplane.ISSUER_SECRET
    args = identity_parser().parse_args(pod["containers"][0]["args"][1:])
    assert args.issuer == pod["containers"][0]["volumeMounts"][0]["mountPath"]


def test_each_install_makes_a_new_trust_anchor() -> None:
    first, second = documents("install"), documents("install")
    assert (one(first, "ConfigMap", "meshproxy-trust-anchors")["data"]
            != one(second, "ConfigMap", "meshproxy-trust-anchors")["data"])


def test_identity_dir_installs_that_issuer(tmp_path: Path) -> None:
    meshproxy("identity", "init", "--out", str(tmp_path / "ca"), "--trust-domain", "mesh.example")
    docs = documents("install", "--identity-dir", str(tmp_path / "ca"))
    secret = one(docs, "Secret", controlplane.ISSUER_SECRET)["stringData"]
    for name in (ca.ISSUER_CERT, ca.ISSUER_KEY, ca.CA_CERT):
        assert secret[name] == (tmp_path / "ca" / name).read_text()
    anchors = (tmp_path / "ca" / ca.CA_CERT).read_text()
    webhook = one(docs, "MutatingWebhookConfiguration", controlplane.WEBHOOK_CONFIG)
    assert base64.b64decode(webhook["webhooks"][0]["clientConfig"]["caBundle"]).decode() == anchors
    _verify_serving_chain(docs, anchors)


def test_identity_dir_that_is_unusable_is_a_clear_error(tmp_path: Path) -> None:
    _, err = meshproxy("install", "--identity-dir", str(tmp_path), code=64)
    assert "issuer.crt" in err and "Traceback" not in err
    meshproxy("identity", "init", "--out", str(tmp_path / "ca"))
    (tmp_path / "ca" / ca.CA_CERT).unlink()
    _, err = meshproxy("install", "--identity-dir", str(tmp_path / "ca"), code=64)
    assert "ca.crt: missing" in err
    _, err = meshproxy("install", "--trust-domain", "Not A Domain", code=64)
    assert "meshproxy install:" in err and "Traceback" not in err


# ---- the injector webhook ------------------------------------------------------------------


def _verify_serving_chain(docs: list[dict], anchors_pem: str | None = None) -> tuple[str, str, bytes]:
    webhook = one(docs, "MutatingWebhookConfiguration", controlplane.WEBHOOK_CONFIG)["webhooks"][0]
    bundle = base64.b64decode(webhook["clientConfig"]["caBundle"])
    if anchors_pem is not None:
        assert bundle == anchors_pem.encode()
    tls = one(docs, "Secret", controlplane.INJECTOR_TLS_SECRET)
    assert tls["type"] == "kubernetes.io/tls"
    leaf, *intermediates = x509.load_pem_x509_certificates(tls["stringData"]["tls.crt"].encode())
    service = webhook["clientConfig"]["service"]
    host = f"{service['name']}.{service['namespace']}.svc"  # the name the API server dials
    verifier = (verification.PolicyBuilder().store(verification.Store(x509.load_pem_x509_certificates(bundle)))
                .build_server_verifier(verification.DNSName(host)))
    chain = verifier.verify(leaf, intermediates)
    assert len(chain) == 3  # leaf, issuer, trust anchor
    return tls["stringData"]["tls.crt"], tls["stringData"]["tls.key"], bundle


def test_ca_bundle_verifies_the_serving_certificate(install: list[dict]) -> None:
    _verify_serving_chain(install, one(install, "ConfigMap", "meshproxy-trust-anchors")["data"]["ca.crt"])


def test_ca_bundle_does_not_verify_another_install(install: list[dict]) -> None:
    other = documents("install")
    mixed = [d for d in install if d["kind"] != "Secret"] + [one(other, "Secret", controlplane.INJECTOR_TLS_SECRET)]
    with pytest.raises(verification.VerificationError):
        _verify_serving_chain(mixed)


def test_tls_handshake_with_the_serving_certificate(install: list[dict], tmp_path: Path) -> None:
    """As the API server does: TLS to the webhook Service's name, verified with caBundle only."""
    chain, key_pem, bundle = _verify_serving_chain(install)
    (tmp_path / "tls.crt").write_text(chain)
    (tmp_path / "tls.key").write_text(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(16))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cadata=bundle.decode())
    name = f"{controlplane.INJECTOR}.{controlplane.NAMESPACE}.svc"
    with socket.create_connection(listener.getsockname(), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"ping")
            assert tls.recv(16) == b"ping"
    thread.join(10)
    listener.close()


def test_webhook_reaches_the_injector_and_never_blocks(install: list[dict]) -> None:
    [webhook] = one(install, "MutatingWebhookConfiguration", controlplane.WEBHOOK_CONFIG)["webhooks"]
    assert webhook["failurePolicy"] == "Ignore" and webhook["sideEffects"] == "None"
    assert webhook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"], "scope": "Namespaced"}]
    target = webhook["clientConfig"]["service"]
    assert target["path"] == "/inject"
    service = one(install, "Service", target["name"])
    assert service["metadata"]["namespace"] == target["namespace"]
    [port] = service["spec"]["ports"]
    assert port["port"] == target["port"]
    deployment = one(install, "Deployment", target["name"])
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The command the brief of the injector gives; its flags in the --flag=value form.
    assert container["args"][:6] == [
        "injector", "serve", f"--listen=0.0.0.0:{ports[port['targetPort']]}",
        "--tls-cert=/var/run/meshproxy/injector/tls.crt", "--tls-key=/var/run/meshproxy/injector/tls.key",
        f"--admin-listen=0.0.0.0:{ports['admin']}"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == "/var/run/meshproxy/injector"
    [volume] = pod["spec"]["volumes"]
    assert volume["secret"]["secretName"] == controlplane.INJECTOR_TLS_SECRET
    # It may read namespaces (their inject annotations), nothing else.
    role = one(install, "ClusterRole", "meshproxy-injector")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]
    binding = one(install, "ClusterRoleBinding", "meshproxy-injector")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["spec"]["serviceAccountName"],
                                    "namespace": "meshproxy"}]


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    for expr in selector["matchExpressions"]:
        present, value = expr["key"] in labels, labels.get(expr["key"])
        if expr["operator"] == "NotIn" and present and value in expr["values"]:
            return False
        if expr["operator"] == "DoesNotExist" and present:
            return False
    return True


def test_webhook_selectors_skip_the_control_plane_and_opted_out_namespaces(install_ha: list[dict]) -> None:
    [webhook] = one(install_ha, "MutatingWebhookConfiguration", controlplane.WEBHOOK_CONFIG)["webhooks"]
    namespace = one(install_ha, "Namespace", "meshproxy")
    ns_labels = {**namespace["metadata"]["labels"], "kubernetes.io/metadata.name": "meshproxy"}
    assert not _matches(webhook["namespaceSelector"], ns_labels)
    for disabled in ({"config.linkerd.io/admission-webhooks": "disabled"},
                     {"kubernetes.io/metadata.name": "kube-system"}):
        assert not _matches(webhook["namespaceSelector"], disabled)
    assert _matches(webhook["namespaceSelector"], {"kubernetes.io/metadata.name": "shop"})
    for deployment in (d for d in install_ha if d["kind"] == "Deployment"):
        assert not _matches(webhook["objectSelector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert not _matches(webhook["objectSelector"], {"linkerd.io/control-plane-component": "destination"})
    assert _matches(webhook["objectSelector"], {"app": "web"})


# ---- --ha and --meshed-namespace ------------------------------------------------------------


def test_ha_spreads_replicas_and_bounds_disruption(install: list[dict], install_ha: list[dict]) -> None:
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in install if d["kind"] == "Deployment"} == {
        "meshproxy-identity": 2, "meshproxy-injector": 1}
    assert not any(d["kind"] == "PodDisruptionBudget" for d in install)
    deployments = [d for d in install_ha if d["kind"] == "Deployment"]
    budgets = {d["metadata"]["name"]: d for d in install_ha if d["kind"] == "PodDisruptionBudget"}
    assert len(deployments) == 2 and budgets.keys() == {d["metadata"]["name"] for d in deployments}
    for deployment in deployments:
        assert deployment["spec"]["replicas"] == 3
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        [required] = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert required["topologyKey"] == "kubernetes.io/hostname"
        assert required["labelSelector"]["matchLabels"].items() <= labels.items()
        budget = budgets[deployment["metadata"]["name"]]
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_images_are_flags_and_default_to_the_built_ones(install: list[dict]) -> None:
    docs = documents("install", "--image", "reg.example/meshproxy:9", "--proxy-image", "reg.example/p:9",
                     "--init-image", "reg.example/i:9")
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    images = {c["image"] for pod in pods for c in pod["containers"]}
    assert images == {"reg.example/meshproxy:9"}
    args = one(docs, "Deployment", "meshproxy-injector")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--proxy-image=reg.example/p:9" in args and "--init-image=reg.example/i:9" in args
    import proxy
    from proxy.inject import names

    assert names.DEFAULT_PROXY_IMAGE == f"meshproxy:{proxy.__version__}"
    assert names.DEFAULT_INIT_IMAGE == f"meshproxy-init:{proxy.__version__}"
    # scripts/images.sh tags what it builds with the same names.
    images_sh = (REPO / "scripts" / "images.sh").read_text()
    assert 'build "meshproxy:$VERSION"' in images_sh and 'build "meshproxy-init:$VERSION"' in images_sh
    # The control plane runs the controller image: the proxy's, with the injector extra (aiohttp).
    assert names.DEFAULT_CONTROLLER_IMAGE == f"meshproxy-controller:{proxy.__version__}"
    assert 'build "meshproxy-controller:$VERSION" . "${proxy_args[@]}" --build-arg "EXTRAS=[injector]"' in images_sh
    pods = [d["spec"]["template"]["spec"] for d in install if d["kind"] == "Deployment"]
    assert {c["image"] for pod in pods for c in pod["containers"]} == {names.DEFAULT_CONTROLLER_IMAGE}


def test_meshed_namespaces_get_the_trust_anchors() -> None:
    docs = documents("install", "--meshed-namespace", "shop", "--meshed-namespace", "books")
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert [m["metadata"]["namespace"] for m in maps] == ["meshproxy", "shop", "books"]
    assert len({m["data"]["ca.crt"] for m in maps}) == 1


# ---- the CRDs -------------------------------------------------------------------------------


def test_crds_have_linkerds_names_and_every_version_meshproxy_reads(install_crds: list[dict]) -> None:
    by_kind = {d["spec"]["names"]["kind"]: d for d in install_crds}
    assert by_kind.keys() == {"ServiceProfile", "Server", "ServerAuthorization", "AuthorizationPolicy",
                              "MeshTLSAuthentication", "NetworkAuthentication", "HTTPRoute", "TrafficSplit"}
    read = {kind: set(versions) for kind, versions in _authz_docs.VERSIONS.items()}
    read["ServiceProfile"] = set(_linkerd.PROFILE_VERSIONS)
    read["TrafficSplit"] = set(_linkerd.SPLIT_VERSIONS)
    read["HTTPRoute"] = {v for v in _gateway.ROUTE_VERSIONS if v.startswith("policy.linkerd.io/")}
    for kind, doc in by_kind.items():
        spec = doc["spec"]
        served = {f"{spec['group']}/{v['name']}" for v in spec["versions"] if v["served"]}
        assert read[kind] <= served, kind
        assert sum(v["storage"] for v in spec["versions"]) == 1
        assert doc["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        assert spec["scope"] == "Namespaced"
    assert by_kind["ServiceProfile"]["spec"]["names"]["shortNames"] == ["sp"]
    assert by_kind["Server"]["spec"]["names"]["shortNames"] == ["srv"]


def _structural(schema: dict, path: str = "") -> list[str]:
    """The API server's structural-schema rules that a hand-written schema can break."""
    problems = []
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in schema and not schema.get("x-kubernetes-int-or-string") and not preserve:
        problems.append(f"{path or '.'}: no type")
    if schema.get("x-kubernetes-int-or-string") and "type" in schema:
        problems.append(f"{path}: int-or-string with a type")
    for banned in ("$ref", "definitions", "additionalItems", "dependencies", "patternProperties", "uniqueItems"):
        if banned in schema:
            problems.append(f"{path}: {banned} is not allowed")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties together")
    for name, sub in schema.get("properties", {}).items():
        problems += _structural(sub, f"{path}.{name}")
    if "items" in schema:
        problems += _structural(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += _structural(schema["additionalProperties"], f"{path}{{}}")
    return problems


def test_crd_schemas_are_structural(install_crds: list[dict]) -> None:
    for doc in install_crds:
        for version in doc["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            assert _structural(schema) == [], doc["metadata"]["name"]
    assert _structural({"properties": {"a": {}}}) == [".: no type", ".a: no type"]


def _json_schema(schema: dict) -> dict:
    """OpenAPI v3 with Kubernetes' extensions, as JSON Schema for jsonschema."""
    if schema.get("x-kubernetes-int-or-string"):
        return {"type": ["integer", "string"]}
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in out:
        out["properties"] = {k: _json_schema(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _json_schema(out["items"])
    return out


def _linkerd_documents() -> list[dict]:
    docs = []
    for module in (test_parse, test_authz_parse):
        for value in vars(module).values():
            if isinstance(value, str) and "apiVersion:" in value:
                try:
                    docs += [d for d in yaml.safe_load_all(value) if isinstance(d, dict) and "kind" in d]
                except yaml.YAMLError:
                    continue
    return docs


def test_linkerd_documents_from_the_policy_tests_are_accepted(install_crds: list[dict]) -> None:
    schemas = {}
    for doc in install_crds:
        spec = doc["spec"]
        for version in spec["versions"]:
            schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _json_schema(
                version["schema"]["openAPIV3Schema"])
    docs = [d for d in _linkerd_documents() if (d["apiVersion"], d["kind"]) in schemas]
    assert {d["kind"] for d in docs} >= {"ServiceProfile", "TrafficSplit", "HTTPRoute", "Server",
                                          "ServerAuthorization", "AuthorizationPolicy", "MeshTLSAuthentication",
                                          "NetworkAuthentication"}
    for doc in docs:
        jsonschema.validate(doc, schemas[(doc["apiVersion"], doc["kind"])])
    server = next(d for d in docs if d["kind"] == "Server")
    wrong = {**server, "spec": {**server["spec"], "port": [8080]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schemas[(server["apiVersion"], "Server")])


def test_crds_module_lists_what_install_prints(install_crds: list[dict]) -> None:
    assert [d["metadata"]["name"] for d in install_crds] == [k.name for k in crds.KINDS]


# ---- uninstall ---------------------------------------------------------------------------


def test_uninstall_lists_everything_install_creates(install_ha: list[dict], install_crds: list[dict]) -> None:
    removed = documents("uninstall")
    assert {key(d) for d in removed} == {key(d) for d in install_ha + install_crds}
    # Last created first: the webhook goes before the injector it calls, the namespace after its objects.
    order = [key(d) for d in removed]
    assert order.index(key(one(install_ha, "MutatingWebhookConfiguration", controlplane.WEBHOOK_CONFIG))) < \
        order.index(("Deployment", "meshproxy-injector", "meshproxy")) < order.index(("Namespace", "meshproxy", ""))
    # Names only: no key or certificate in what is printed.
    assert not any("stringData" in d or "data" in d for d in removed)
    kept = documents("uninstall", "--keep-crds")
    assert {key(d) for d in kept} == {key(d) for d in install_ha}
    only = documents("uninstall", "--crds")
    assert {key(d) for d in only} == {key(d) for d in install_crds}
    shop = documents("uninstall", "--meshed-namespace", "shop")
    assert ("ConfigMap", "meshproxy-trust-anchors", "shop") in {key(d) for d in shop}


def test_the_injector_deployment_runs_a_command_the_injector_accepts(install: list[dict]) -> None:
    from proxy.inject.injector import build_parser as injector_parser

    deployment = one(install, "Deployment", "meshproxy-injector")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = injector_parser().parse_args(container["args"][1:])  # after "injector"
    assert args.action == "serve" and args.tls_cert.endswith("/tls.crt") and args.proxy_image.startswith("meshproxy:")
