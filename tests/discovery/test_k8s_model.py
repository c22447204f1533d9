"""Mapping Kubernetes objects to endpoints, without a server; and the lazy imports."""

from __future__ import annotations

import copy
import subprocess
import sys

from proxy.discovery.k8s_model import endpoint, pod_info, service_info, slice_info, target_port
from proxy.discovery.model import AccrualSettings

from .fakeapi import RECORDED

WEB_SVC = RECORDED["services"]["items"][0]
WEB_SLICE = RECORDED["endpointslices"]["items"][0]


def test_service_ports_ips_and_annotations():
    svc = service_info(WEB_SVC)
    assert svc.cluster_ips == ("10.96.0.10",)
    assert [p.port for p in svc.ports] == [80, 9990]  # UDP dropped
    assert svc.accrual == AccrualSettings(5, 2.0, 60.0)
    bad = copy.deepcopy(WEB_SVC)
    bad["metadata"]["annotations"] = {"balancer.meshproxy.io/failure-accrual-consecutive-max-failures": "many",
                                      "config.meshproxy.io/opaque-ports": "x"}
    assert service_info(bad).accrual == AccrualSettings() and 80 not in service_info(bad).opaque_ports
    assert service_info(RECORDED["services"]["items"][2]) is None  # ExternalName


def test_target_port_by_name_then_numeric_target():
    svc, slice_ = service_info(WEB_SVC), slice_info(WEB_SLICE)
    assert target_port(svc.port(80), slice_) == (8080, None)
    assert target_port(svc.port(9990), slice_) == (9990, "kubernetes.io/h2c")
    unnamed = copy.deepcopy(WEB_SLICE)
    unnamed["ports"] = []
    assert target_port(svc.port(80), slice_info(unnamed)) == (8080, None)  # numeric targetPort
    assert target_port(svc.port(9990), slice_info(unnamed)) is None  # a named targetPort needs the slice


def test_slice_filters_and_pod_meshing():
    slice_ = slice_info(WEB_SLICE)
    assert [e.ip for e in slice_.endpoints] == ["10.244.1.5", "10.244.2.7"]
    fqdn = {**WEB_SLICE, "addressType": "FQDN"}
    assert slice_info(fqdn) is None
    meshed, plain, injected = (pod_info(p) for p in RECORDED["pods"])
    assert (meshed.service_account, meshed.meshed, meshed.proxy_port) == ("web", True, 4143)
    assert (plain.service_account, plain.meshed) == ("default", False)
    assert injected.meshed
    svc = service_info(WEB_SVC)
    e = endpoint(svc, svc.port(80), slice_.endpoints[0], 8080, None, meshed, "example.org")
    assert e.identity == "web.default.serviceaccount.identity.example.org" and e.proxy == ("10.244.1.5", 4143)
    # The native sidecar (an init container) counts, and so does its identity.
    assert meshed.has_identity and injected.has_identity


def test_a_sidecar_injected_without_identity_gets_plaintext():
    import copy

    pod = copy.deepcopy(RECORDED["pods"][0])
    proxy = pod["spec"]["initContainers"][0]
    proxy["env"] = [env for env in proxy["env"] if env["name"] != "MESHPROXY_IDENTITY_NAME"]
    info = pod_info(pod)
    assert info.meshed and not info.has_identity
    slice_ = slice_info(WEB_SLICE)
    svc = service_info(WEB_SVC)
    e = endpoint(svc, svc.port(80), slice_.endpoints[0], 8080, None, info, "cluster.local")
    assert e.proxy == ("10.244.1.5", 4143) and e.identity is None


def test_discovery_does_not_import_dns_or_kubernetes_until_chosen():
    code = ("import sys, proxy.discovery, proxy.discovery.file; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dns', 'kubernetes_asyncio', 'aiohttp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
