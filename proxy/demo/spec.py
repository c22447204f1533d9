"""The demo mesh as data: which sample services exist, whom each one calls,
and the names (service authority, identity) both modes derive from them.

Nothing here touches a socket or a process, so the loopback and the
namespace modes build the same mesh from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "demo"  # the Kubernetes-style namespace in service and identity names
SERVICE_PORT = 8080  # every sample app listens here (namespace mode) and is called at it
TRUST_DOMAIN = "cluster.local"
ENTRY = "web"  # the service the load generator calls


class DemoError(Exception):
    """The demo cannot go on; the message says why (and where the logs are)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived before the mesh was up."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One pod's app: it calls each service in ``calls`` (through its own
    outbound proxy) and, when ``serves``, answers requests itself after a
    short random delay. The load generator is a pod that only calls."""

    name: str
    calls: tuple[str, ...] = ()
    latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform range of the app's own delay
    slow_fraction: float = 0.0  # share of answers that take 5x the top of that range
    failure_rate: float = 0.0  # share answered 500; --failure-rate sets it for services that call none
    serves: bool = True


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("load", calls=(ENTRY,), serves=False),
    ServiceSpec("web", calls=("api",)),
    ServiceSpec("api", calls=("backend",), latency_ms=(0.2, 1.0)),
    ServiceSpec("backend", latency_ms=(1.0, 6.0), slow_fraction=0.03, failure_rate=0.01),
)


def service_authority(service: str) -> str:
    """The name discovery knows a service by (the key of the endpoints file)."""
    return f"{service}.{NAMESPACE}.svc.cluster.local:{SERVICE_PORT}"


def identity_name(service: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """Each pod runs as the service account named after its service."""
    return f"{service}.{NAMESPACE}.serviceaccount.identity.{trust_domain}"
