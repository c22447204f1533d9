"""``meshproxy viz --kubernetes`` / ``--kubeconfig``: the proxies found as meshed pods of a cluster.

No API server runs here: the cluster is tests/discovery/fakeapi.py (in a thread of the test), its pods'
podIP and named admin ports pointing at real proxies on 127.0.0.1; ``meshproxy viz`` is a child process
reading a kubeconfig that names the fake server and a bearer token it checks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from helpers.clients import clean_env
from helpers.meshproxy import REPO, MeshProxy
from helpers.ports import free_port
from proxy.viz import tap
from tests.discovery.fakeapi import Cluster
from tests.viz.kubepods import kubeconfig, pod

pytestmark = pytest.mark.timeout(120)
TOKEN = "viz-reader-token"


@pytest.fixture(scope="module")
def proxies() -> Iterator[tuple[MeshProxy, MeshProxy]]:
    with MeshProxy(name="proxy-web") as web, MeshProxy(name="proxy-db") as db:
        web.start()
        db.start()
        yield web, db


@pytest.fixture
def cluster(proxies, tmp_path) -> Iterator[tuple[Cluster, str]]:
    web, db = proxies
    c = Cluster()
    c.api.token = TOKEN
    for obj in (
        pod("web-5d8f7c9b4-x2x9z", container="linkerd-proxy", owner=("ReplicaSet", "web-5d8f7c9b4"),
            template_hash="5d8f7c9b4", account="web", ports={"linkerd-admin": web.admin[1]}),
        pod("db-0", owner=("StatefulSet", "db"), account="db", ports={"meshproxy-admin": db.admin[1]}),
        # Would be scraped (web's proxy answers there) if the rules let them in:
        pod("plain-7c9d8b6f5-aaaaa", container=None, owner=("ReplicaSet", "plain-7c9d8b6f5"),
            template_hash="7c9d8b6f5"),
        pod("starting-6b7c8d9e0-bbbbb", phase="Pending", owner=("ReplicaSet", "starting-6b7c8d9e0"),
            template_hash="6b7c8d9e0", ports={"linkerd-admin": web.admin[1]}),
        pod("other-5f6a7b8c9-ccccc", namespace="prod", owner=("ReplicaSet", "other-5f6a7b8c9"),
            template_hash="5f6a7b8c9", ports={"linkerd-admin": db.admin[1]}),
    ):
        c.api.pods[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig(c.api.url, token=TOKEN))
    try:
        yield c, str(config)
    finally:
        c.close()


def viz(*args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "proxy", "viz", *args], cwd=REPO, env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def rows(run: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict]:
    assert run.returncode == 0, run.stdout + run.stderr
    return {(r["namespace"], r["name"]): r for r in json.loads(run.stdout)}


def test_stat_scrapes_the_meshed_running_pods_with_their_workload_names(cluster):
    c, config = cluster
    found = rows(viz("stat", "deploy", "-o", "json", "--interval", "1s", "--kubeconfig", config))
    assert list(found) == [("default", "web")]  # not plain (no proxy), starting (Pending), other (prod)
    assert found[("default", "web")]["meshed"] == "1/1"
    statefulsets = rows(viz("stat", "sts", "-o", "json", "--interval", "1s", "--kubeconfig", config))
    assert statefulsets[("default", "db")]["meshed"] == "1/1"
    pods = rows(viz("stat", "po", "-A", "-o", "json", "--interval", "1s", "--kubeconfig", config))
    assert sorted(pods) == [("default", "db-0"), ("default", "web-5d8f7c9b4-x2x9z"), ("prod", "other-5f6a7b8c9-ccccc")]
    listed = [(path, auth) for path, _, auth in c.api.requests if path.endswith("/pods")]
    auth = f"Bearer {TOKEN}"
    assert listed == [("/api/v1/namespaces/default/pods", auth)] * 2 + [("/api/v1/pods", auth)]


def test_no_meshed_pod_in_the_namespace(cluster):
    _, config = cluster
    run = viz("stat", "deploy", "-n", "empty", "--interval", "1s", "--kubeconfig", config)
    assert run.returncode == 69 and "no meshed pod" in run.stderr and "namespace empty" in run.stderr


def test_forbidden_and_unreachable_api_exit_69_naming_the_server(cluster):
    c, config = cluster
    c.api.forbidden = True
    run = viz("stat", "deploy", "--kubeconfig", config)
    assert run.returncode == 69, run.stderr
    assert f"{c.api.url}/api/v1/namespaces/default/pods: 403" in run.stderr and "may not list pods" in run.stderr
    c.api.forbidden = False
    c.api.token = "another"
    run = viz("tap", "--kubeconfig", config)
    assert run.returncode == 69 and "401: Unauthorized (the credentials were refused)" in run.stderr, run.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    with open(config, "w") as handle:
        handle.write(kubeconfig(dead, token=TOKEN))
    for argv in (["stat", "deploy"], ["top"], ["edges"]):
        run = viz(*argv, "--kubeconfig", config)
        assert run.returncode == 69 and f"the Kubernetes API is unreachable: {dead}" in run.stderr, run.stderr


def test_no_kubeconfig_exits_64():
    run = viz("stat", "deploy", "--kubeconfig", "/nonexistent/kubeconfig")
    assert run.returncode == 64 and "cannot read the kubeconfig /nonexistent/kubeconfig" in run.stderr


def test_tap_targets_are_the_pods_named_tap_ports_in_every_namespace(cluster):
    c, config = cluster
    for obj in c.api.pods.values():
        for container in obj["spec"]["containers"]:
            names = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            if "linkerd-admin" in names:
                container["ports"].append({"name": "linkerd-tap", "containerPort": 7000})
    args = argparse.Namespace(tap=["127.0.0.1:9=x.id"], endpoints=None, kubernetes=True, kubeconfig=config,
                              context=None, timeout=5.0)
    found = tap.targets(args)
    assert found[0] == ("127.0.0.1", 9, "x.id")
    assert sorted(found[1:]) == [("127.0.0.1", 4190, None), ("127.0.0.1", 7000, None), ("127.0.0.1", 7000, None)]
    assert tap.targets(args) == found and len(c.api.requests) == 1  # listed once per command
    assert c.api.requests[0][:2] == ("/api/v1/pods", {"limit": "500"})
