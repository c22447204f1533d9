"""proxy/inject/podspec.py: the sidecar learns its namespace, pod and owner for the metrics' workload labels."""

from __future__ import annotations

import pytest

from proxy import config as cfg
from proxy.inject import inject_text, names
from tests.inject.manifests import ENABLED, dump, kubelet_env, load, pod_of, workload


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"])
def test_the_proxy_knows_its_workload(kind: str) -> None:
    [out] = load(inject_text(dump(workload(kind, ENABLED, namespace="shop"))).text)
    [sidecar] = [c for c in pod_of(out)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    env = kubelet_env(sidecar, namespace="shop")
    settings = cfg.load(env={**env, cfg.METRICS_WORKLOAD_LABELS: "true"}).metrics
    assert settings.labels() == (("namespace", "shop"), ("pod", "pod-0"), (kind.lower(), f"web-{kind.lower()}"))
    # Off unless asked: the shipped Prometheus configuration adds these labels while scraping.
    assert cfg.load(env=env).metrics.labels() == ()
