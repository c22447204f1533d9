"""The settled start through the real proxy (proxy/telemetry/memory.py): what the start built is frozen out of
the cyclic collector's walk, and the policy file and the discovery file still reload after the freeze."""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path

import pytest

from helpers.meshproxy import MeshProxy
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(60)

POLICY = """
services:
  web.test:80:
    routes:
      - name: {name}
        match: {{method: GET}}
"""


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic, as editors and ConfigMaps do


def _endpoints(path: Path, upstream: HttpUpstream) -> None:
    _write(path, f"services:\n  web.test:80:\n    endpoints:\n      - address: {upstream.hostport}\n")


def _get(proxy: MeshProxy) -> int:
    host, port = proxy.outbound
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/echo", headers={"Host": "web.test:80"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_the_start_is_frozen_and_reloads_still_apply(tmp_path, make_upstream):
    first, second = make_upstream(name="first"), make_upstream(name="second")
    endpoints, policy = tmp_path / "endpoints.yaml", tmp_path / "policy.yaml"
    _endpoints(endpoints, first)
    _write(policy, POLICY.format(name="before"))
    with MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}", "MESHPROXY_POLICY": str(policy)},
                   name="settle-proxy").start() as p:
        m = p.metrics()
        # Modules, classes, the configuration: far more than a request's worth of objects.
        assert m.get("python_gc_objects_frozen") > 10_000
        assert _get(p) == 200 and len(first.requests) == 1
        assert p.metrics().get("route_request_total", rt_route="before") == 1
        _write(policy, POLICY.format(name="after"))
        _endpoints(endpoints, second)
        deadline = time.monotonic() + 10
        while len(second.requests) == 0 or p.metrics().get("policy_reload_total", result="ok") < 1:
            assert time.monotonic() < deadline, "the edits after the freeze were not applied"
            assert _get(p) == 200
            time.sleep(0.1)
        assert _get(p) == 200
        after = p.metrics()
        assert after.get("route_request_total", rt_route="after") >= 1
        assert after.get("python_gc_objects_uncollectable_total", generation="2") == 0
