"""The embedded destination client: logical names -> streams of endpoint-set updates.

Start with ``build_resolver(settings.discovery, metrics)``; see resolver.py
for the interface and file.py, dns.py, k8s.py for the sources.
"""

from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import AccrualSettings, Endpoint, ServiceSnapshot, Update
from proxy.discovery.resolver import Resolver, Watch, build_resolver

__all__ = ["AccrualSettings", "DiscoveryMetrics", "Endpoint", "Resolver", "ServiceSnapshot", "Update", "Watch",
           "build_resolver"]
