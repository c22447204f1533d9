"""proxy/inject: every workload kind, idempotence, round trips, annotation precedence, errors."""

from __future__ import annotations

import pytest

from proxy import config as cfg
from proxy.inject import InjectError, Options, inject_text, names, uninject_text
from tests.inject.manifests import ENABLED, KINDS, dump, kubelet_env, load, pod_of, workload


def env_of(container: dict) -> dict[str, str]:
    """The environment the kubelet gives the container, in a pod of ServiceAccount web, namespace shop."""
    return kubelet_env(container, service_account="web", namespace="shop")


def injected_pod(doc: dict) -> tuple[dict, dict, dict]:
    tmpl, spec = pod_of(doc)
    init = {c["name"]: c for c in spec["initContainers"]}
    return tmpl, init[names.INIT_CONTAINER], init[names.PROXY_CONTAINER]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gets_init_container_and_native_sidecar(kind: str) -> None:
    result = inject_text(dump(workload(kind, ENABLED)))
    [doc] = load(result.text)
    tmpl, spec = pod_of(doc)
    assert [c["name"] for c in spec["initContainers"]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    assert [c["name"] for c in spec["containers"]] == ["app"]
    _, init, sidecar = injected_pod(doc)
    assert init["image"] == "meshproxy-init:0.1.0"
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert init["securityContext"]["runAsUser"] == 0 and init["securityContext"]["runAsNonRoot"] is False
    assert env_of(init)[names.INIT_PROXY_UID] == "2102"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "meshproxy:0.1.0" and sidecar["args"] == ["run"]
    assert sidecar["securityContext"]["runAsUser"] == 2102
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert {(p["name"], p["containerPort"]) for p in sidecar["ports"]} == {("meshproxy-in", 4143),
                                                                          ("meshproxy-admin", 4191)}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 4191}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/live", "port": 4191}
    assert sidecar["resources"]["requests"]
    assert env_of(sidecar) == {
        cfg.INBOUND_LISTEN: "0.0.0.0:4143",
        cfg.OUTBOUND_LISTEN: "127.0.0.1:4140",
        cfg.ADMIN_LISTEN: "0.0.0.0:4191",
        cfg.TAP_LISTEN: "0.0.0.0:4190",
        cfg.DESTINATION: "k8s",
        cfg.WORKLOAD_NAMESPACE: "shop",
        cfg.WORKLOAD_POD: "pod-0",
        cfg.WORKLOAD_KIND: kind.lower(),
        cfg.WORKLOAD_NAME: f"web-{kind.lower()}",
        names.POD_SERVICE_ACCOUNT_ENV: "web",
        names.POD_NAMESPACE_ENV: "shop",
        cfg.IDENTITY_NAME: "web.shop.serviceaccount.identity.cluster.local",
        cfg.TRUST_DOMAIN: "cluster.local",
        cfg.IDENTITY_SERVICE: "https://meshproxy-identity.meshproxy.svc.cluster.local:8080",
        cfg.IDENTITY_TOKEN_FILE: "/var/run/meshproxy/identity/token",
        cfg.IDENTITY_TRUST_ANCHORS: "/var/run/meshproxy/trust-anchors/ca.crt",
    }
    assert [m["mountPath"] for m in sidecar["volumeMounts"]] == [
        "/var/run/meshproxy/identity", "/var/run/meshproxy/trust-anchors"]
    assert [v["name"] for v in spec["volumes"]] == [names.XTABLES_VOLUME, names.TOKEN_VOLUME,
                                                    names.TRUST_ANCHORS_VOLUME]
    # The proxy's settings must be ones its own config loader accepts.
    loaded = cfg.load(env=env_of(sidecar))
    assert loaded.identity.name == "web.shop.serviceaccount.identity.cluster.local"
    assert tmpl["metadata"]["annotations"][names.INJECTED] == "true"
    assert tmpl["metadata"]["annotations"][names.PROXY_VERSION] == "0.1.0"
    assert result.changed == 1
    assert result.report[0].startswith(f'{kind.lower()} "web-{kind.lower()}" injected (')


@pytest.mark.parametrize("kind", KINDS)
def test_idempotent_and_uninject_round_trip(kind: str) -> None:
    original = workload(kind, ENABLED, namespace="shop", volumes=[{"name": "data", "emptyDir": {}}])
    once = inject_text(dump(original)).text
    twice = inject_text(once)
    assert twice.text == once
    assert twice.changed == 0
    back = uninject_text(once)
    assert load(back.text) == [original]
    # Key order survives too.
    assert back.text == dump(original)


def test_round_trip_keeps_absent_and_empty_fields_apart() -> None:
    bare = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "a", "image": "x"}]}}
    empty = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {}},
             "spec": {"initContainers": [], "volumes": [], "containers": [{"name": "a", "image": "x"}]}}
    for original in (bare, empty):
        once = inject_text(dump(original), Options()).text
        assert load(uninject_text(once).text) == [original]


def test_existing_init_containers_run_after_the_proxy() -> None:
    doc = workload("Deployment", ENABLED, initContainers=[{"name": "migrate", "image": "m"}])
    [out] = load(inject_text(dump(doc)).text)
    assert [c["name"] for c in pod_of(out)[1]["initContainers"]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER,
                                                                     "migrate"]
    assert load(uninject_text(dump(out)).text) == [doc]


def test_reinject_with_new_settings_replaces_the_old_injection() -> None:
    once = inject_text(dump(workload("Deployment", ENABLED))).text
    again = inject_text(once, Options(proxy_image="meshproxy:0.2.0"))
    [doc] = load(again.text)
    _, _, sidecar = injected_pod(doc)
    assert sidecar["image"] == "meshproxy:0.2.0"
    assert [c["name"] for c in pod_of(doc)[1]["initContainers"]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    assert "re-injected" in again.report[0]


# ---- annotation precedence -------------------------------------------------


def _injected(text: str) -> bool:
    return names.INJECTED in ((pod_of(load(text)[-1])[0].get("metadata") or {}).get("annotations") or {})


def test_not_annotated_anywhere_is_injected_unless_the_caller_says_otherwise() -> None:
    """`meshproxy inject` meshes what no level annotates (as linkerd inject); the webhook does not."""
    text = dump(workload("Deployment"))
    result = inject_text(text)
    assert _injected(result.text) and result.changed == 1
    assert "not annotated" in result.report[0]
    result = inject_text(text, Options(unannotated=False))
    assert result.text == text and result.changed == 0
    assert "skipped: no meshproxy.io/inject or linkerd.io/inject annotation" in result.report[0]


@pytest.mark.parametrize(
    ("namespace", "owner", "pod", "unannotated", "expected"),
    [
        ("enabled", None, None, False, True),
        ("enabled", "disabled", None, False, False),
        ("enabled", None, "disabled", False, False),
        ("disabled", "enabled", None, False, True),
        ("disabled", None, "enabled", False, True),
        ("enabled", "enabled", "disabled", False, False),  # a pod-level "disabled" wins
        (None, "disabled", "enabled", False, True),  # the pod template is the most specific
        (None, None, "disabled", True, False),  # injecting the unannotated does not override "disabled"
        ("disabled", None, None, True, False),
        (None, None, None, True, True),
        (None, None, None, False, False),
    ],
)
def test_annotation_precedence(namespace, owner, pod, unannotated, expected) -> None:  # noqa: ANN001
    def ann(value: str | None) -> dict[str, str] | None:
        return None if value is None else {names.INJECT: value}

    ns_doc = {"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "shop", "annotations": ann(namespace) or {}}}
    doc = workload("Deployment", ann(pod), ann(owner), namespace="shop")
    # From a Namespace document in the stream ...
    assert _injected(inject_text(dump(ns_doc, doc), Options(unannotated=unannotated)).text) is expected
    # ... and from --namespace-annotations-file (plain mapping form).
    opts = Options(unannotated=unannotated, namespace_annotations=ann(namespace) or {})
    assert _injected(inject_text(dump(workload("Deployment", ann(pod), ann(owner))), opts).text) is expected


def test_namespace_document_applies_only_to_its_namespace() -> None:
    ns_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": ENABLED}}
    other = workload("Deployment", namespace="other")
    mine = workload("StatefulSet", namespace="shop")
    docs = load(inject_text(dump(other, ns_doc, mine), Options(unannotated=False)).text)
    assert "initContainers" not in pod_of(docs[0])[1]
    assert "initContainers" in pod_of(docs[2])[1]
    # A Namespace document after the workload still counts.
    docs = load(inject_text(dump(mine, ns_doc), Options(unannotated=False)).text)
    assert "initContainers" in pod_of(docs[0])[1]


def test_config_annotations_follow_the_same_precedence() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": {
        **ENABLED, names.SKIP_OUTBOUND_PORTS: "443", names.PROXY_IMAGE: "reg/ns-proxy:1", names.OPAQUE_PORTS: "5432"}}}
    doc = workload("Deployment", {names.SKIP_OUTBOUND_PORTS: "5432, 6379-6380"}, {names.PROXY_IMAGE: "reg/wl-proxy:1"},
                   namespace="shop")
    [_, out] = load(inject_text(dump(ns, doc), Options(proxy_image="cli:1")).text)
    _, init, sidecar = injected_pod(out)
    assert env_of(init)[names.INIT_SKIP_OUTBOUND_PORTS] == "5432,6379-6380"
    assert sidecar["image"] == "reg/wl-proxy:1"
    assert env_of(sidecar)[cfg.OPAQUE_PORTS] == "5432"


def test_skip_lists_flow_into_the_init_container_env() -> None:
    annotations = {
        **ENABLED,
        names.SKIP_INBOUND_PORTS: "22,8000-8100",
        names.SKIP_OUTBOUND_PORTS: "5432",
        names.SKIP_SUBNETS: "10.96.0.0/12, fd00::/8",
        names.OPAQUE_PORTS: "3306,9000-9100",
    }
    [doc] = load(inject_text(dump(workload("Deployment", annotations))).text)
    _, init, sidecar = injected_pod(doc)
    env = env_of(init)
    assert env[names.INIT_SKIP_INBOUND_PORTS] == "22,8000-8100"
    assert env[names.INIT_SKIP_OUTBOUND_PORTS] == "5432"
    assert env[names.INIT_SKIP_SUBNETS] == "10.96.0.0/12,fd00::/8"
    assert env_of(sidecar)[cfg.OPAQUE_PORTS] == "3306,9000-9100"
    assert cfg.load(env=env_of(sidecar)).opaque_ports.ranges == ((3306, 3306), (9000, 9100))


def test_no_skip_annotations_no_skip_env() -> None:
    [doc] = load(inject_text(dump(workload("Deployment", ENABLED))).text)
    _, init, sidecar = injected_pod(doc)
    skips = {names.INIT_SKIP_INBOUND_PORTS, names.INIT_SKIP_OUTBOUND_PORTS, names.INIT_SKIP_SUBNETS}
    assert not skips & env_of(init).keys()
    assert cfg.OPAQUE_PORTS not in env_of(sidecar)


def test_init_env_names_match_iptables_init(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "iptables-init"))
    module = importlib.import_module("meshproxy_init.config")
    for ours, theirs in [
        (names.INIT_PROXY_UID, "PROXY_UID"),
        (names.INIT_INBOUND_PORT, "INBOUND_PORT"),
        (names.INIT_OUTBOUND_PORT, "OUTBOUND_PORT"),
        (names.INIT_ADMIN_PORT, "ADMIN_PORT"),
        (names.INIT_TAP_PORT, "TAP_PORT"),
        (names.INIT_SKIP_INBOUND_PORTS, "SKIP_INBOUND_PORTS"),
        (names.INIT_SKIP_OUTBOUND_PORTS, "SKIP_OUTBOUND_PORTS"),
        (names.INIT_SKIP_SUBNETS, "SKIP_SUBNETS"),
    ]:
        assert ours == getattr(module, theirs)


# ---- skips, Lists, streams ---------------------------------------------------


def test_host_network_is_skipped_with_a_note() -> None:
    text = dump(workload("DaemonSet", ENABLED, hostNetwork=True))
    result = inject_text(text)
    assert result.text == text
    assert "hostNetwork" in result.report[0] and "skipped" in result.report[0]


def test_list_kind() -> None:
    items = [workload("Deployment", ENABLED), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
             workload("Job", ENABLED), workload("Pod", {names.INJECT: "disabled"})]
    original = {"apiVersion": "v1", "kind": "List", "items": items}
    result = inject_text(dump(original))
    [out] = load(result.text)
    assert "initContainers" in pod_of(out["items"][0])[1]
    assert out["items"][1] == items[1]
    assert "initContainers" in pod_of(out["items"][2])[1]
    assert "initContainers" not in pod_of(out["items"][3])[1]
    assert result.changed == 2 and len(result.report) == 3
    assert load(uninject_text(result.text).text) == [original]


def test_other_documents_pass_through_byte_identical() -> None:
    service = ("# the service\nkind: Service\napiVersion: v1\nmetadata: {name: web}   # odd spacing kept\n"
               "spec:\n  ports: [{port: 80}]\n")
    config = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: |\n    line\n      indented\n"
    empty = "---\n# just a comment\n"
    deployment = dump(workload("Deployment", ENABLED))
    text = service + config + deployment + empty
    out = inject_text(text).text
    assert out.startswith(service + config)
    assert out.endswith(empty)
    assert out != text
    [svc, cm, dep, nothing] = load(out)
    assert svc["kind"] == "Service" and cm["data"]["k"] == "line\n  indented\n" and nothing is None
    assert load(uninject_text(out).text) == load(text)


def test_stream_without_marker_and_with_leading_comment() -> None:
    text = "# header comment only\n---\n" + dump(workload("Pod", ENABLED))[4:]
    result = inject_text(text)
    assert result.text.startswith("# header comment only\n---\n")
    assert result.report[0].startswith('pod "web-pod" injected')


def test_nothing_to_inject_returns_text_unchanged() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n"
    result = inject_text(text)
    assert result.text == text and result.changed == 0


# ---- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "index", "kind", "words"),
    [
        ("kind: Service\n---\nkind: Deployment\nspec: [unclosed\n", 2, None, "invalid YAML"),
        ("---\nkind: Service\n---\n- a\n- b\n", 2, None, "mapping"),
        ("kind: Deployment\nmetadata: {name: x}\nspec: {replicas: 1}\n", 1, "Deployment", "spec.template"),
        ("kind: CronJob\nspec: {schedule: x}\n", 1, "CronJob", "jobTemplate"),
        ("kind: Pod\nmetadata: {name: p}\n", 1, "Pod", "spec"),
        ("kind: List\nitems: 3\n", 1, "List", "items"),
        ("kind: Pod\nmetadata: {annotations: {meshproxy.io/inject: yes-please}}\nspec: {containers: []}\n",
         1, "Pod", "meshproxy.io/inject"),
        ("kind: Pod\nmetadata: {annotations: {meshproxy.io/inject: enabled, "
         "config.meshproxy.io/skip-inbound-ports: '22,x'}}\nspec: {containers: []}\n", 1, "Pod", "skip-inbound-ports"),
        ("kind: Pod\nmetadata: {annotations: {meshproxy.io/inject: enabled, "
         "config.meshproxy.io/skip-subnets: '10.0.0.0/33'}}\nspec: {containers: []}\n", 1, "Pod", "skip-subnets"),
        ("kind: Pod\nmetadata: {annotations: {meshproxy.io/inject: enabled}}\n"
         "spec: {containers: [{name: meshproxy, image: x}]}\n", 1, "Pod", "already has a container named meshproxy"),
    ],
)
def test_errors_name_the_document_and_kind(text: str, index: int, kind: str | None, words: str) -> None:
    with pytest.raises(InjectError) as info:
        inject_text(text)
    assert info.value.index == index and info.value.kind == kind
    assert f"document {index} (kind {kind or 'unknown'})" in str(info.value)
    assert words in str(info.value)
