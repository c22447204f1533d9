"""Resource arguments as Linkerd's viz commands take them (``deploy``, ``deploy/web``, ``po/web-1``,
``svc``, ``au``, ``ns``, ``all``) and the metric labels each kind is found under."""

from __future__ import annotations

from dataclasses import dataclass

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
