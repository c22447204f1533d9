"""Every name injection writes or reads: annotations, container and volume names, ports.

The init container's environment names belong to ``iptables-init`` (its own
``meshproxy_init/config.py``, not importable from this package because the
init image ships alone); they are spelled here once and a test checks that both
spellings agree. The proxy's names come from ``proxy.config``.
"""

from __future__ import annotations

# ---- annotations (read) -------------------------------------------------------
INJECT = "meshproxy.io/inject"
SKIP_INBOUND_PORTS = "config.meshproxy.io/skip-inbound-ports"
SKIP_OUTBOUND_PORTS = "config.meshproxy.io/skip-outbound-ports"
SKIP_SUBNETS = "config.meshproxy.io/skip-subnets"
OPAQUE_PORTS = "config.meshproxy.io/opaque-ports"
PROXY_IMAGE = "config.meshproxy.io/proxy-image"
INIT_IMAGE = "config.meshproxy.io/init-image"

ENABLED = "enabled"
DISABLED = "disabled"

# ---- annotations (written on the pod template; uninject removes them) -------
INJECTED = "meshproxy.io/injected"
PROXY_VERSION = "meshproxy.io/proxy-version"
# Which of metadata, annotations, initContainers, volumes injection had to
# create, so that uninject deletes exactly those and keeps ones that were
# present but empty.
CREATED = "meshproxy.io/inject-created"

# ---- what injection adds ----------------------------------------------------
INIT_CONTAINER = "meshproxy-init"
PROXY_CONTAINER = "meshproxy"
XTABLES_VOLUME = "meshproxy-init-xtables-lock"
DEFAULT_PROXY_IMAGE = "meshproxy:0.1.0"
DEFAULT_INIT_IMAGE = "meshproxy-init:0.1.0"

PROXY_UID = 2102
INBOUND_PORT = 4143
OUTBOUND_PORT = 4140
ADMIN_PORT = 4191
INBOUND_PORT_NAME = "meshproxy-in"
ADMIN_PORT_NAME = "meshproxy-admin"

# ---- iptables-init environment (iptables-init/meshproxy_init/config.py) -----
INIT_PROXY_UID = "MESHPROXY_INIT_PROXY_UID"
INIT_INBOUND_PORT = "MESHPROXY_INIT_INBOUND_PORT"
INIT_OUTBOUND_PORT = "MESHPROXY_INIT_OUTBOUND_PORT"
INIT_ADMIN_PORT = "MESHPROXY_INIT_ADMIN_PORT"
INIT_SKIP_INBOUND_PORTS = "MESHPROXY_INIT_SKIP_INBOUND_PORTS"
INIT_SKIP_OUTBOUND_PORTS = "MESHPROXY_INIT_SKIP_OUTBOUND_PORTS"
INIT_SKIP_SUBNETS = "MESHPROXY_INIT_SKIP_SUBNETS"
