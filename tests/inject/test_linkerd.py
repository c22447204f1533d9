"""`meshproxy inject` as `linkerd inject`: annotate by default, --manual, Linkerd's annotations, the images."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import __version__
from proxy import config as cfg
from proxy.inject import InjectError, Options, inject_text, names
from tests.inject.manifests import JSON, KINDS, dump, kubelet_env, load, pod_of, workload

ROOT = Path(__file__).resolve().parents[2]
kubernetes_validate = pytest.importorskip("kubernetes_validate")


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def proxy_of(doc: dict) -> dict:
    return next(c for c in pod_of(doc)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER)


def init_of(doc: dict) -> dict:
    return next(c for c in pod_of(doc)[1]["initContainers"] if c["name"] == names.INIT_CONTAINER)


def manual(*docs: dict, **options: object) -> list[dict]:
    return load(inject_text(dump(*docs), Options(**options)).text)  # type: ignore[arg-type]


# ---- default (annotate) and --manual ----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_default_annotates_the_pod_template_for_the_webhook(kind: str) -> None:
    original = workload(kind, namespace="shop")
    result = run("inject", "-", stdin=dump(original))
    assert result.returncode == 0, result.stderr
    [doc] = load(result.stdout)
    template, spec = pod_of(doc)
    assert template["metadata"]["annotations"] == {names.INJECT: names.ENABLED}
    assert "initContainers" not in spec
    assert result.stderr == (f'{kind.lower()} "web-{kind.lower()}" injected ({names.INJECT}: {names.ENABLED} '
                             "on the pod template, for the meshproxy injector)\n")
    kubernetes_validate.validate(doc, "1.29.0", strict=True)
    # Annotating again changes nothing.
    again = run("inject", "-", stdin=result.stdout)
    assert again.stdout == result.stdout


def test_manual_adds_the_containers() -> None:
    result = run("inject", "--manual", "-", stdin=dump(workload("Deployment")))
    assert result.returncode == 0
    [doc] = load(result.stdout)
    assert [c["name"] for c in pod_of(doc)[1]["initContainers"]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    assert result.stderr.startswith('deployment "web-deployment" injected (not annotated; proxy meshproxy:')


def test_disabled_workloads_are_skipped_and_said_so() -> None:
    source = dump(workload("Deployment", {"linkerd.io/inject": "disabled"}),
                  workload("StatefulSet", owner_annotations={names.INJECT: "disabled"}),
                  workload("DaemonSet", hostNetwork=True))
    for flags in ([], ["--manual"]):
        result = run("inject", *flags, "-", stdin=source)
        assert result.returncode == 0
        assert result.stdout == source
        assert result.stderr.splitlines() == [
            'deployment "web-deployment" skipped: linkerd.io/inject: disabled on the pod template',
            'statefulset "web-statefulset" skipped: meshproxy.io/inject: disabled on the workload',
            'daemonset "web-daemonset" skipped: hostNetwork: true (the pod shares the node\'s network namespace; '
            "iptables rules there would capture the node's traffic)",
            "meshproxy inject: nothing to inject; the stream was written back unchanged",
        ]


def test_a_linkerd_annotated_template_is_kept_as_it_is() -> None:
    source = dump(workload("Deployment", {"linkerd.io/inject": "enabled"}))
    result = run("inject", "-", stdin=source)
    assert result.stdout == source
    assert "linkerd.io/inject: enabled on the pod template, for the meshproxy injector" in result.stderr


def test_workload_annotations_are_carried_to_the_template() -> None:
    """The webhook sees the pod and its namespace only, so the workload's own annotations move down."""
    doc = workload("Deployment", {names.OPAQUE_PORTS: "1"}, {"config.linkerd.io/opaque-ports": "2",
                                                            "config.linkerd.io/proxy-cpu-limit": "1",
                                                            "example.com/unrelated": "x"})
    [out] = load(run("inject", "-", stdin=dump(doc)).stdout)
    assert pod_of(out)[0]["metadata"]["annotations"] == {names.OPAQUE_PORTS: "1",
                                                         "config.linkerd.io/proxy-cpu-limit": "1",
                                                         names.INJECT: names.ENABLED}


def test_force_is_harmless_and_says_it_is_not_needed() -> None:
    result = run("inject", "--force", "-", stdin=dump(workload("Pod")))
    assert result.returncode == 0
    assert "--force is no longer needed" in result.stderr
    assert load(result.stdout)[0]["metadata"]["annotations"] == {names.INJECT: names.ENABLED}


def test_layout_and_trailing_newline() -> None:
    source = ("# web\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n"
              + dump(workload("Pod"))[4:].rstrip("\n"))
    result = run("inject", "-", stdin=source)
    assert result.stdout.startswith("# web\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n")
    assert result.stdout.endswith("\n") and not result.stdout.endswith("\n\n")
    unchanged = "apiVersion: v1\nkind: Service\nmetadata: {name: web}"
    assert run("inject", "-", stdin=unchanged).stdout == unchanged + "\n"


# ---- Linkerd's annotations ----------------------------------------------------------


@pytest.mark.parametrize(("annotation", "value", "setting", "expected"), [
    ("config.linkerd.io/opaque-ports", "5432,6379", cfg.OPAQUE_PORTS, "5432,6379"),
    ("config.linkerd.io/proxy-log-level", "warn,proxy.outbound=debug", cfg.LOG_LEVEL, "warn,proxy.outbound=debug"),
    ("config.linkerd.io/proxy-log-format", "json", cfg.LOG_FORMAT, "json"),
    ("config.linkerd.io/default-inbound-policy", "all-authenticated", cfg.DEFAULT_POLICY, "all-authenticated"),
    ("config.linkerd.io/access-log", "apache", cfg.ACCESS_LOG, "apache"),
    ("config.linkerd.io/proxy-outbound-connect-timeout", "1000ms", cfg.CONNECT_TIMEOUT, "1000ms"),
    ("config.linkerd.io/shutdown-grace-period", "45s", cfg.DRAIN_TIMEOUT, "45s"),
    ("config.linkerd.io/disable-tap", "true", cfg.TAP_DISABLED, "true"),
    ("config.alpha.linkerd.io/trace-collector", "collector.tracing:4317", cfg.TRACE_COLLECTOR,
     "collector.tracing:4317"),
])
def test_linkerd_proxy_settings(annotation: str, value: str, setting: str, expected: str) -> None:
    [doc] = manual(workload("Deployment", {annotation: value}))
    env = kubelet_env(proxy_of(doc))
    assert env[setting] == expected
    cfg.load(env=env)  # the proxy accepts what the annotation gave it


@pytest.mark.parametrize(("annotation", "value", "variable"), [
    ("config.linkerd.io/skip-inbound-ports", "22,8000-8100", names.INIT_SKIP_INBOUND_PORTS),
    ("config.linkerd.io/skip-outbound-ports", "4222", names.INIT_SKIP_OUTBOUND_PORTS),
    ("config.linkerd.io/skip-subnets", "10.96.0.0/12", names.INIT_SKIP_SUBNETS),
])
def test_linkerd_iptables_settings(annotation: str, value: str, variable: str) -> None:
    [doc] = manual(workload("Deployment", {annotation: value}))
    assert kubelet_env(init_of(doc))[variable] == value


def test_linkerd_resources_identity_pull_policy_and_await() -> None:
    annotations = {"config.linkerd.io/proxy-cpu-request": "100m", "config.linkerd.io/proxy-cpu-limit": "1",
                   "config.linkerd.io/proxy-memory-request": "20Mi", "config.linkerd.io/proxy-memory-limit": "250Mi",
                   "config.linkerd.io/proxy-ephemeral-storage-limit": "1Gi",
                   "config.linkerd.io/image-pull-policy": "Always", "config.linkerd.io/disable-identity": "true"}
    [doc] = manual(workload("Deployment", annotations))
    proxy = proxy_of(doc)
    assert proxy["resources"] == {"requests": {"cpu": "100m", "memory": "20Mi"},
                                  "limits": {"cpu": "1", "memory": "250Mi", "ephemeral-storage": "1Gi"}}
    assert proxy["imagePullPolicy"] == init_of(doc)["imagePullPolicy"] == "Always"
    assert cfg.IDENTITY_NAME not in kubelet_env(proxy)
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": names.ADMIN_PORT}
    kubernetes_validate.validate(doc, "1.29.0", strict=True)
    [doc] = manual(workload("Deployment", {"config.linkerd.io/proxy-await": "disabled"}))
    assert "startupProbe" not in proxy_of(doc)


def test_meshproxy_names_win_at_one_level_and_specific_levels_win_over_both() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": {
        names.OPAQUE_PORTS: "1", "config.linkerd.io/proxy-log-level": "debug"}}}
    doc = workload("Deployment", {"config.linkerd.io/opaque-ports": "2", names.PROXY_LOG_LEVEL: "warn",
                                  "config.linkerd.io/access-log": "json", names.ACCESS_LOG: "apache"},
                   namespace="shop")
    [_, out] = manual(ns, doc)
    env = kubelet_env(proxy_of(out))
    assert env[cfg.OPAQUE_PORTS] == "2"  # the pod's Linkerd name beats the namespace's meshproxy name
    assert env[cfg.LOG_LEVEL] == "warn"
    assert env[cfg.ACCESS_LOG] == "apache"  # same level: meshproxy's name wins


def test_namespace_document_is_inherited() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": {
        "linkerd.io/inject": "disabled", "config.linkerd.io/proxy-memory-limit": "128Mi"}}}
    off, on = workload("Deployment", namespace="shop"), workload("Job", {"linkerd.io/inject": "enabled"},
                                                                 namespace="shop")
    result = run("inject", "--manual", "-", stdin=dump(ns, off, on))
    _, off_out, on_out = load(result.stdout)
    assert "initContainers" not in pod_of(off_out)[1]
    assert proxy_of(on_out)["resources"]["limits"] == {"memory": "128Mi"}
    assert 'deployment "web-deployment" skipped: linkerd.io/inject: disabled on the namespace' in result.stderr


def test_ingress_mode_injects_and_says_what_it_means() -> None:
    result = inject_text(dump(workload("Deployment", {"linkerd.io/inject": "ingress"})))
    assert "linkerd.io/inject: ingress on the pod template; meshproxy has no ingress mode" in result.report[0]
    assert "initContainers" in pod_of(load(result.text)[0])[1]


def test_linkerd_annotations_without_a_meshproxy_setting_are_reported_not_refused() -> None:
    result = inject_text(dump(workload("Deployment", {"config.linkerd.io/proxy-version": "stable-2.14.10",
                                                      "config.linkerd.io/admin-port": "4191"})))
    assert result.changed == 1
    assert ("ignored (no meshproxy setting): config.linkerd.io/admin-port, config.linkerd.io/proxy-version"
            in result.report[0])


@pytest.mark.parametrize(("annotation", "value"), [
    ("linkerd.io/inject", "yes"),
    ("config.linkerd.io/proxy-cpu-limit", "lots"),
    ("config.linkerd.io/proxy-memory-request", "1 GB"),
    ("config.linkerd.io/proxy-log-level", "loud"),
    ("config.linkerd.io/proxy-await", "maybe"),
    ("config.linkerd.io/image-pull-policy", "always"),
    ("config.linkerd.io/default-inbound-policy", "everyone"),
    ("config.linkerd.io/opaque-ports", "http"),
    ("config.linkerd.io/proxy-outbound-connect-timeout", "soon"),
    ("config.linkerd.io/disable-tap", "yes"),
])
def test_bad_values_exit_65_naming_workload_and_annotation(annotation: str, value: str) -> None:
    for flags in ([], ["--manual"]):
        result = run("inject", *flags, "-", stdin=dump(workload("StatefulSet", {annotation: value})))
        assert result.returncode == 65, result.stderr
        assert result.stdout == ""
        assert (f'document 1 (kind StatefulSet): statefulset "web-statefulset": {annotation}: {value!r} '
                "on the pod template") in result.stderr
    with pytest.raises(InjectError):
        inject_text(dump(workload("Pod", {annotation: value})))


# ---- images --------------------------------------------------------------------------


def test_default_images_are_the_ones_the_build_makes() -> None:
    version = re.search(r'^version = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version is not None and version.group(1) == __version__
    built = re.findall(r'^build "([^"]+)" (\S+)', (ROOT / "scripts/images.sh").read_text(), re.MULTILINE)
    tags = {tag.replace("$VERSION", version.group(1)) for tag, context in built}
    assert tags == {names.DEFAULT_PROXY_IMAGE, names.DEFAULT_INIT_IMAGE, names.DEFAULT_CONTROLLER_IMAGE}
    [doc] = manual(workload("Pod"))
    assert (proxy_of(doc)["image"], init_of(doc)["image"]) == (names.DEFAULT_PROXY_IMAGE, names.DEFAULT_INIT_IMAGE)


def test_registry_flag_prefixes_the_default_images() -> None:
    result = run("inject", "--manual", "--registry", "registry.example.com/mesh/", "-", stdin=dump(workload("Pod")))
    [doc] = load(result.stdout)
    assert proxy_of(doc)["image"] == f"registry.example.com/mesh/meshproxy:{__version__}"
    assert init_of(doc)["image"] == f"registry.example.com/mesh/meshproxy-init:{__version__}"
    result = run("inject", "--manual", "--registry", "r.example", "--proxy-image", "p:1", "-",
                 stdin=dump(workload("Pod")))
    [doc] = load(result.stdout)
    assert (proxy_of(doc)["image"], init_of(doc)["image"]) == ("p:1", f"r.example/meshproxy-init:{__version__}")


def test_uninject_takes_the_injector_mark_off() -> None:
    original = workload("Deployment", {"config.linkerd.io/proxy-cpu-limit": "1"})
    annotated = run("inject", "-", stdin=dump(original)).stdout
    back = run("uninject", "-", stdin=annotated)
    assert back.returncode == 0
    assert load(back.stdout) == [original]
    assert back.stderr.startswith('deployment "web-deployment" uninjected (removed meshproxy.io/inject;')
    linkerd = workload("Pod", {"linkerd.io/inject": "enabled"})
    [out] = load(run("uninject", "-", stdin=dump(linkerd)).stdout)
    assert "annotations" not in out["metadata"]
    disabled = dump(workload("Pod", {"linkerd.io/inject": "disabled"}))
    assert run("uninject", "-", stdin=disabled).stdout == disabled


def test_bad_pod_shapes_exit_65_naming_the_workload() -> None:
    text = "kind: Pod\nmetadata: {name: p, annotations: [a]}\nspec: {containers: [{name: app, image: x}]}\n"
    for flags in ([], ["--manual"]):
        result = run("inject", *flags, "-", stdin=text)
        assert result.returncode == 65
        assert 'document 1 (kind Pod): pod "p": metadata.annotations is not a mapping' in result.stderr \
            or 'pod "p".metadata.annotations is not a mapping' in result.stderr, result.stderr
    taken = "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: meshproxy, image: x}]}\n"
    result = run("inject", "--manual", "-", stdin=taken)
    assert result.returncode == 65
    assert 'document 1 (kind Pod): pod "p" already has a container named meshproxy' in result.stderr


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["containers", "initContainers", "volumes", "hostNetwork"]), JSON, max_size=4),
       st.dictionaries(st.sampled_from([names.INJECT, "linkerd.io/inject", "config.linkerd.io/proxy-cpu-limit",
                                        "config.linkerd.io/opaque-ports"]), st.text(max_size=6), max_size=3),
       st.booleans())
def test_any_template_is_injected_or_refused_cleanly(spec: dict, annotations: dict, manual_mode: bool) -> None:
    """Hostile manifests get an InjectError (exit 65), never a crash."""
    for candidate in (spec, {**spec, "containers": [{"name": v} for v in spec.values()]}):
        doc = workload("Deployment", annotations)
        doc["spec"]["template"]["spec"] = candidate
        try:
            inject_text(dump(doc), Options(manual=manual_mode))
        except InjectError:
            pass
