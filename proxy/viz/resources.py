"""Resource arguments as Linkerd's viz commands take them (``deploy``, ``deploy/web``, ``po/web-1``,
``svc``, ``au``, ``ns``, ``all``) and the metric labels each kind is found under."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """A duration argument as Linkerd's commands take one (``30s``, ``1m``, ``500ms``); a bare number is seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30s, 1m or 500ms, got {text!r}")
    return float(match[1]) * _UNITS[match[2]]

# kind -> (the label naming it on a proxy's own series, its dst_* label on a caller's series)
KINDS = {
    "deployment": ("deployment", "dst_deployment"),
    "pod": ("pod", "dst_pod"),
    "namespace": ("namespace", "dst_namespace"),
    "statefulset": ("statefulset", "dst_statefulset"),
    "daemonset": ("daemonset", "dst_daemonset"),
    "job": ("k8s_job", "dst_k8s_job"),
    # A service is only seen by its callers (Linkerd: "outbound only"); an authority by its server.
    "service": ("dst_service", "dst_service"),
    "authority": ("authority", "authority"),
}
ALIASES = {"deploy": "deployment", "deployments": "deployment", "po": "pod", "pods": "pod",
           "ns": "namespace", "namespaces": "namespace", "sts": "statefulset", "ds": "daemonset",
           "svc": "service", "services": "service", "au": "authority", "authorities": "authority",
           "jobs": "job"}
SHORT = {"deployment": "deploy", "pod": "po", "namespace": "ns", "statefulset": "sts", "daemonset": "ds",
         "job": "job", "service": "svc", "authority": "au"}
ALL = ("deployment", "pod", "service")  # what ``stat all`` shows, one table each


class ResourceError(ValueError):
    """A resource argument this command does not know."""


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str  # a key of KINDS
    name: str = ""  # empty: every resource of the kind

    @property
    def label(self) -> str:
        return KINDS[self.kind][0]

    @property
    def dst_label(self) -> str:
        return KINDS[self.kind][1]

    def __str__(self) -> str:
        return f"{SHORT[self.kind]}/{self.name}" if self.name else SHORT[self.kind]


def parse(text: str) -> Resource:
    """``KIND`` or ``KIND/NAME``."""
    kind, _, name = text.partition("/")
    kind = ALIASES.get(kind.lower(), kind.lower())
    if kind not in KINDS:
        raise ResourceError(f"unknown resource type {text.partition('/')[0]!r} (expected one of "
                            f"{', '.join(sorted(set(SHORT.values()) | set(KINDS)))}, or all)")
    if "/" in text and not name:
        raise ResourceError(f"{text!r}: expected {SHORT[kind]}/NAME")
    return Resource(kind, name)
