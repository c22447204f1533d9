"""A proxy whose outbound routes follow a Gateway API policy file to backends named in an endpoints file.

The route-metrics tests name every service ``<name>.test.svc.cluster.local:80``
(namespace ``test``, as their HTTPRoutes and GRPCRoutes say) and give each
backend one address and the protocol it speaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .meshproxy import MeshProxy


def http_route(name: str, parent: str, backend: str, prefix: str | None = None, metadata: str = "") -> str:
    """One HTTPRoute document of namespace ``test``: Service ``parent`` to ``backend`` (both on port 80), for
    paths under ``prefix`` (None: every request); ``metadata`` adds to its metadata (", annotations: {...}")."""
    matches = "" if prefix is None else f"matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}], "
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: test{metadata}}}
spec:
  parentRefs: [{{group: core, kind: Service, name: {parent}, port: 80}}]
  rules: [{{{matches}backendRefs: [{{name: {backend}, port: 80}}]}}]
"""


def write_endpoints(path: Path, backends: Iterable[tuple[str, str, str]]) -> Path:
    """An endpoints file: each (name, "host:port", protocol) one service of namespace ``test`` on port 80."""
    lines = ["services:"]
    for name, address, protocol in backends:
        lines += [f"  {name}.test.svc.cluster.local:80:", "    endpoints:",
                  f"      - {{address: '{address}', protocol: {protocol}}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_route_proxy(tmp: Path, name: str, policy: str, backends: Iterable[tuple[str, str, str]],
                      env: dict[str, str] | None = None) -> MeshProxy:
    """A started proxy with ``policy`` (Gateway API documents) and ``backends`` as its discovery, its files and
    log in ``tmp``; ``env`` adds settings."""
    endpoints = write_endpoints(tmp / "endpoints.yaml", backends)
    policy_file = tmp / "policy.yaml"
    policy_file.write_text(policy)
    return MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}", "MESHPROXY_POLICY": str(policy_file),
                          **(env or {})},
                     name=name, log_path=tmp / "proxy.log").start()
