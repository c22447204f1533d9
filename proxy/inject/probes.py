"""The request paths of a pod's own HTTP probes, for ``MESHPROXY_INBOUND_PROBE_PATHS``.

The kubelet's probes reach the app through the inbound proxy (the iptables
rules redirect them like any other connection), so the proxy must let them
through whatever the default inbound policy says. It admits GET and HEAD to
the listed paths; the paths are taken from every ``httpGet`` liveness,
readiness and startup probe of the containers injection did not add.

Paths are written as the kubelet requests them: an empty path is ``/``, a
path without a leading slash gets one, and the query is dropped (the proxy
ignores it). Two kinds of probe cannot be admitted by path and are returned
separately, so the caller can say so: HTTPS ``httpGet`` probes (the proxy sees
TLS it does not terminate) and ``grpc`` probes (a POST). ``tcpSocket`` probes
need nothing: the proxy accepts the connection before it judges it, and an
accepted connection is all such a probe checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


@dataclass(frozen=True, slots=True)
class ProbePaths:
    paths: tuple[str, ...]  # sorted, without duplicates
    uncovered: tuple[str, ...]  # "container app readinessProbe (grpc)", ...

    @property
    def value(self) -> str | None:
        """The environment value, or None when there is nothing to admit."""
        return ",".join(self.paths) or None


def request_path(http_get: dict[str, Any]) -> str:
    path = str(http_get.get("path") or "").partition("?")[0]
    return path if path.startswith("/") else "/" + path


def _containers(spec: dict[str, Any], skip: Iterable[str]) -> Iterable[dict[str, Any]]:
    skipped = set(skip)
    for key in ("initContainers", "containers"):
        listed = spec.get(key)  # not a list: podspec.check refuses the pod
        for container in listed if isinstance(listed, list) else ():
            if isinstance(container, dict) and not (isinstance(name := container.get("name"), str)
                                                    and name in skipped):
                yield container


def find(spec: dict[str, Any], skip: Iterable[str] = ()) -> ProbePaths:
    """Probe paths of the pod's containers, leaving out those named in ``skip``."""
    paths: set[str] = set()
    uncovered: list[str] = []
    for container in _containers(spec, skip):
        for probe_key in PROBES:
            probe = container.get(probe_key)
            if not isinstance(probe, dict):
                continue
            where = f"container {container.get('name')} {probe_key}"
            http_get = probe.get("httpGet")
            if isinstance(http_get, dict):
                path = request_path(http_get)
                if str(http_get.get("scheme") or "HTTP").upper() == "HTTPS":
                    uncovered.append(f"{where} (HTTPS)")
                elif "," in path:
                    # The setting is a comma-separated list.
                    uncovered.append(f"{where} (a comma in the path)")
                else:
                    paths.add(path)
            elif "grpc" in probe:
                uncovered.append(f"{where} (grpc)")
    return ProbePaths(tuple(sorted(paths)), tuple(uncovered))
