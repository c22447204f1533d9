"""Linkerd's config.linkerd.io/access-log annotation through injection: MESHPROXY_ACCESS_LOG on the proxy."""

from __future__ import annotations

import pytest

from proxy import config as cfg
from proxy.inject import InjectError, inject_text, names
from tests.inject.manifests import ENABLED, dump, kubelet_env, load, pod_of, workload


def _proxy_env(doc: dict) -> dict[str, str]:
    [out] = load(inject_text(dump(doc)).text)
    [sidecar] = [c for c in pod_of(out)[1]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    return kubelet_env(sidecar)


@pytest.mark.parametrize("fmt", ["apache", "json"])
def test_annotation_sets_the_access_log(fmt):
    env = _proxy_env(workload("Deployment", {**ENABLED, names.ACCESS_LOG: fmt}))
    assert env[cfg.ACCESS_LOG] == fmt
    assert cfg.load(env=env).access_log == fmt


def test_workload_annotation_applies_and_none_means_off():
    env = _proxy_env(workload("Deployment", ENABLED, owner_annotations={names.ACCESS_LOG: "json"}))
    assert env[cfg.ACCESS_LOG] == "json"
    env = _proxy_env(workload("Deployment", ENABLED))
    assert cfg.ACCESS_LOG not in env and cfg.load(env=env).access_log is None


def test_unknown_format_is_refused_naming_the_annotation():
    with pytest.raises(InjectError, match="access-log: 'xml'.*expected one of apache, json"):
        inject_text(dump(workload("Deployment", {**ENABLED, names.ACCESS_LOG: "xml"})))
