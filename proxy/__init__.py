"""meshproxy: a Linkerd-style service-mesh sidecar proxy (import package ``proxy``)."""

__version__ = "0.1.0"
