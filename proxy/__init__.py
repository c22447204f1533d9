"""meshproxy: a Linkerd-style service-mesh sidecar proxy (import package ``proxy``)."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("MESHPROXY_PURE", "") not in ("", "0"):
    # Before anything imports a compiled module: the plain sources take their place.
    from proxy import compiled as _compiled

    _compiled.load_pure()
