"""The trace-collector annotations: meshproxy's and Linkerd's alpha one become MESHPROXY_TRACE_COLLECTOR."""

from __future__ import annotations

import pytest

from proxy import config as cfg
from proxy.inject import InjectError, inject_text, names
from tests.inject.manifests import ENABLED, dump, kubelet_env, load, pod_of, workload


def _env(annotations: dict) -> dict[str, str]:
    [out] = load(inject_text(dump(workload("Deployment", {**ENABLED, **annotations}))).text)
    [sidecar] = [c for c in pod_of(out)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    return kubelet_env(sidecar)


def test_linkerd_annotation_sets_the_collector():
    env = _env({"config.alpha.linkerd.io/trace-collector": "otel-collector.tracing:4317"})
    assert env[cfg.TRACE_COLLECTOR] == "otel-collector.tracing:4317"
    assert cfg.load(env=env).tracing.collector == cfg.Collector("grpc", "otel-collector.tracing", 4317)


def test_meshproxy_annotation_wins():
    env = _env({"config.alpha.linkerd.io/trace-collector": "a:4317", names.TRACE_COLLECTOR: "http://b:4318"})
    assert cfg.load(env=env).tracing.collector == cfg.Collector("http/protobuf", "b", 4318, "/v1/traces")


def test_no_annotation_no_tracing():
    assert cfg.TRACE_COLLECTOR not in _env({})


def test_bad_collector_is_an_error():
    with pytest.raises(InjectError, match="trace-collector: 'nowhere'"):
        _env({names.TRACE_COLLECTOR: "nowhere"})
