"""Frozen values describing egress control: Linkerd's EgressNetwork and the Gateway API routes attached to it.

parse.py builds them from the policy file (references resolved); the
outbound side (outbound/egress.py) compiles them. Traffic is egress when its
original destination (the address the app connected to) falls in a network.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.authz_model import Network
from proxy.policy.model import Route

TRAFFIC_POLICIES = ("Allow", "Deny")
# The route kinds that may have an EgressNetwork parent, and what they carry.
HTTP_KINDS = ("HTTPRoute", "GRPCRoute")
CONNECTION_KINDS = ("TLSRoute", "TCPRoute")
# A backend authority meaning "the original destination" (a backendRef naming the EgressNetwork itself).
ORIGINAL_DST = ""


@dataclass(frozen=True, slots=True)
class EgressRoute:
    """A route whose parent is an EgressNetwork. ``port``: the parentRef's port (None: every port).

    ``hostnames``: HTTP Host / TLS SNI the route is for (exact or ``*.suffix``; empty: any).
    ``rules``: model.Route values, one per rule; for TLS and TCP routes only their
    ``backends`` matter. A backend whose authority is ``ORIGINAL_DST`` (or a rule
    without backends) goes where the app connected.
    """

    kind: str
    group: str
    namespace: str
    name: str
    port: int | None = None
    hostnames: tuple[str, ...] = ()
    rules: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class EgressNetwork:
    """``networks`` None: every address outside the cluster networks (``MESHPROXY_CLUSTER_NETWORKS``).
    Traffic matching none of ``routes`` is allowed or denied by ``traffic_policy``."""

    name: str
    namespace: str
    traffic_policy: str
    networks: tuple[Network, ...] | None = None
    routes: tuple[EgressRoute, ...] = ()
