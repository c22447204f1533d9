"""meshproxy: a Linkerd-style service-mesh sidecar proxy (import package ``proxy``)."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("MESHPROXY_PURE", "") not in ("", "0"):
    # Before anything imports a compiled module: the plain sources take their place.
    from proxy import compiled as _compiled
    from proxy import pureshim as _pureshim

    _pureshim.install()  # Cython's shadow module, or a stand-in where Cython is not installed
    _compiled.load_pure()
