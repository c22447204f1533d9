"""deploy/identity/: the issuer's Kubernetes manifests are valid objects
(strict OpenAPI schemas, offline, as in tests/inject) and agree with the
command they run and with each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxy.identity import ca
from proxy.identity.command import build_parser

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "identity"
VERSION = "1.29.0"


def documents(pattern: str = "**/*.yaml") -> list[dict]:
    docs = []
    for path in sorted(DEPLOY.glob(pattern)):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def one(kind: str) -> dict:
    [doc] = [doc for doc in documents() if doc["kind"] == kind]
    return doc


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    docs = documents()
    assert {doc["kind"] for doc in docs} == {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "Secret",
        "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_templates_are_not_applied_with_the_directory() -> None:
    # kubectl apply -f deploy/identity/ reads only the top level: no placeholder Secret there.
    top = [doc["kind"] for doc in documents("*.yaml")]
    assert "Secret" not in top and "ConfigMap" not in top


def test_the_deployment_runs_a_command_the_issuer_accepts() -> None:
    deploy = one("Deployment")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    # The image's entrypoint is the meshproxy command (see the Dockerfile).
    assert container["args"][0] == "identity" and "command" not in container
    args = build_parser().parse_args(container["args"][1:])
    assert args.action == "serve" and args.token_review and not args.tokens
    # The mounted Secret is the --issuer directory, and holds what load_issuer reads.
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == args.issuer and mount["readOnly"]
    [volume] = deploy["spec"]["template"]["spec"]["volumes"]
    secret = one("Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) == {ca.ISSUER_CERT, ca.ISSUER_KEY, ca.CA_CERT}
    # It listens where its port and the Service say.
    [port] = container["ports"]
    assert args.listen.endswith(f":{port['containerPort']}")
    service = one("Service")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    # The serving certificate names the Service, so proxies verify the issuer by its DNS name.
    name = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert {name, name + ".cluster.local"} <= set(args.server_name)


def test_the_issuer_may_create_token_reviews_and_nothing_else() -> None:
    role, binding = one("ClusterRole"), one("ClusterRoleBinding")
    assert role["rules"] == [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                              "verbs": ["create"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    deploy, account = one("Deployment"), one("ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    namespaced = [doc for doc in documents() if doc["kind"] in ("ServiceAccount", "Deployment", "Service", "Secret")]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {one("Namespace")["metadata"]["name"]}


def test_the_issuer_runs_unprivileged() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 2102
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_schema_check_is_real() -> None:
    deploy = one("Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, VERSION, strict=True)
