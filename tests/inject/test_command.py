"""``meshproxy inject`` / ``uninject`` as commands: files and stdin, stderr report, exit statuses."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import cli
from proxy import config as cfg
from proxy.inject import command, names
from tests.inject.manifests import ENABLED, dump, kubelet_env, load, pod_of, workload

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_inject_file_then_uninject_stdin(tmp_path: Path) -> None:
    source = dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}, workload("Deployment", ENABLED))
    path = tmp_path / "in.yaml"
    path.write_text(source)
    injected = run("inject", "--manual", str(path))
    assert injected.returncode == 0, injected.stderr
    assert injected.stderr.startswith('deployment "web-deployment" injected (meshproxy.io/inject: enabled on the '
                                      'pod template; proxy meshproxy:0.1.0; init meshproxy-init:0.1.0')
    back = run("uninject", "-", stdin=injected.stdout)
    assert back.returncode == 0
    assert back.stdout == source
    assert "uninjected" in back.stderr


def test_images_from_flags(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "in.yaml"
    path.write_text(dump(workload("Pod", ENABLED)))
    assert cli.main(["inject", "--manual", "--proxy-image", "r/p:9", "--init-image", "r/i:9", str(path)]) == 0
    [doc] = load(capsys.readouterr().out)
    assert [c["image"] for c in pod_of(doc)[1]["initContainers"]] == ["r/i:9", "r/p:9"]


def test_namespace_annotations_file_both_forms(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "in.yaml"
    path.write_text(dump(workload("Deployment", namespace="shop")))
    plain = tmp_path / "plain.yaml"
    plain.write_text("meshproxy.io/inject: enabled\n")
    namespace = tmp_path / "ns.yaml"
    namespace.write_text(dump({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": "shop", "annotations": ENABLED}}))
    for ns_file in (plain, namespace):
        assert cli.main(["inject", "--manual", "--namespace-annotations-file", str(ns_file), str(path)]) == 0
        [doc] = load(capsys.readouterr().out)
        assert "initContainers" in pod_of(doc)[1]


def test_nothing_to_inject_exits_0_with_a_note() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n"
    result = run("inject", "-", stdin=text)
    assert result.returncode == 0
    assert result.stdout == text
    assert "nothing to inject" in result.stderr


def test_bad_documents_exit_65_naming_index_and_kind() -> None:
    result = run("inject", "-", stdin="kind: Service\n---\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n")
    assert result.returncode == 65
    assert "document 2 (kind Deployment)" in result.stderr
    assert result.stdout == ""
    result = run("uninject", "-", stdin="a: [\n")
    assert result.returncode == 65 and "invalid YAML" in result.stderr


def test_missing_file_exits_66(tmp_path: Path) -> None:
    result = run("inject", str(tmp_path / "nope.yaml"))
    assert result.returncode == 66 and "nope.yaml" in result.stderr


def identity_parser() -> argparse.ArgumentParser:
    """``meshproxy inject``'s arguments with the identity flags, as proxy/cli.py builds them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--proxy-image", default="meshproxy:0.1.0")
    parser.add_argument("--init-image", default="meshproxy-init:0.1.0")
    parser.add_argument("--manual", action="store_true")
    parser.add_argument("--namespace-annotations-file")
    command.add_identity_arguments(parser)
    return parser


def sidecar_of(text: str) -> dict:
    [doc] = load(text)
    [sidecar] = [c for c in pod_of(doc)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    return sidecar


def test_identity_flags(tmp_path: Path) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(dump(workload("Deployment", ENABLED)))
    out, err = io.StringIO(), io.StringIO()
    args = identity_parser().parse_args(
        ["--manual", "--trust-domain", "mesh.example", "--identity-service", "https://ca.example:443", str(path)])
    assert command.inject_main(args, stdout=out, stderr=err) == 0
    env = kubelet_env(sidecar_of(out.getvalue()), "web", "shop")
    assert env[cfg.IDENTITY_NAME] == "web.shop.serviceaccount.identity.mesh.example"
    assert env[cfg.IDENTITY_SERVICE] == "https://ca.example:443"
    out, err = io.StringIO(), io.StringIO()
    args = identity_parser().parse_args(["--manual", "--disable-identity", str(path)])
    assert command.inject_main(args, stdout=out, stderr=err) == 0
    assert cfg.IDENTITY_NAME not in kubelet_env(sidecar_of(out.getvalue()))
    assert "identity off" in err.getvalue()


def test_parsers_without_the_identity_flags_get_the_defaults(tmp_path: Path) -> None:
    # proxy/cli.py's parser, whether or not it has the identity flags yet.
    path = tmp_path / "in.yaml"
    path.write_text(dump(workload("Pod", ENABLED)))
    args = argparse.Namespace(file=str(path), proxy_image="p", init_image="i", manual=True,
                              namespace_annotations_file=None)
    out = io.StringIO()
    assert command.inject_main(args, stdout=out, stderr=io.StringIO()) == 0
    env = kubelet_env(sidecar_of(out.getvalue()))
    assert env[cfg.IDENTITY_SERVICE] == names.DEFAULT_IDENTITY_SERVICE and env[cfg.TRUST_DOMAIN] == "cluster.local"


@pytest.mark.parametrize("flag", [["--trust-domain", "Not_A_Domain"], ["--identity-service", "http://plain:80"]])
def test_bad_identity_flags_are_usage_errors(flag: list[str], capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as info:
        identity_parser().parse_args([*flag, "-"])
    assert info.value.code == 2
    assert flag[0] in capsys.readouterr().err
