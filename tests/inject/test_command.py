"""``meshproxy inject`` / ``uninject`` as commands: files and stdin, stderr report, exit statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from proxy import cli
from tests.inject.manifests import ENABLED, dump, load, pod_of, workload

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_inject_file_then_uninject_stdin(tmp_path: Path) -> None:
    source = dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}, workload("Deployment", ENABLED))
    path = tmp_path / "in.yaml"
    path.write_text(source)
    injected = run("inject", str(path))
    assert injected.returncode == 0, injected.stderr
    assert "document 2: Deployment web-deployment: injected" in injected.stderr
    assert "document 1: Service: passed through" in injected.stderr
    back = run("uninject", "-", stdin=injected.stdout)
    assert back.returncode == 0
    assert back.stdout == source
    assert "uninjected" in back.stderr


def test_images_from_flags(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "in.yaml"
    path.write_text(dump(workload("Pod", ENABLED)))
    assert cli.main(["inject", "--proxy-image", "r/p:9", "--init-image", "r/i:9", str(path)]) == 0
    [doc] = load(capsys.readouterr().out)
    assert [c["image"] for c in pod_of(doc)[1]["initContainers"]] == ["r/i:9", "r/p:9"]


def test_namespace_annotations_file_both_forms(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "in.yaml"
    path.write_text(dump(workload("Deployment", namespace="shop")))
    plain = tmp_path / "plain.yaml"
    plain.write_text("meshproxy.io/inject: enabled\n")
    namespace = tmp_path / "ns.yaml"
    namespace.write_text(dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": ENABLED}}))
    for ns_file in (plain, namespace):
        assert cli.main(["inject", "--namespace-annotations-file", str(ns_file), str(path)]) == 0
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
