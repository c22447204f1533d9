"""Every name injection writes or reads: annotations, container and volume names, ports.

The init container's environment names belong to ``iptables-init`` (its own
``meshproxy_init/config.py``, not importable from this package because the
init image ships alone); they are spelled here once and a test checks that both
spellings agree. The proxy's names come from ``proxy.config``.
"""

from __future__ import annotations

from proxy import __version__

# ---- annotations (read) -------------------------------------------------------
# meshproxy's own names; LINKERD below maps Linkerd's spelling of each to it,
# so manifests and namespaces annotated for Linkerd work unchanged. At one
# level meshproxy's name wins over Linkerd's; a more specific level wins over both.
INJECT = "meshproxy.io/inject"
SKIP_INBOUND_PORTS = "config.meshproxy.io/skip-inbound-ports"
SKIP_OUTBOUND_PORTS = "config.meshproxy.io/skip-outbound-ports"
SKIP_SUBNETS = "config.meshproxy.io/skip-subnets"
OPAQUE_PORTS = "config.meshproxy.io/opaque-ports"
PROXY_IMAGE = "config.meshproxy.io/proxy-image"
INIT_IMAGE = "config.meshproxy.io/init-image"
IMAGE_PULL_POLICY = "config.meshproxy.io/image-pull-policy"
DISABLE_IDENTITY = "config.meshproxy.io/disable-identity"
TRUST_DOMAIN = "config.meshproxy.io/trust-domain"
IDENTITY_SERVICE = "config.meshproxy.io/identity-service"
DEFAULT_INBOUND_POLICY = "config.meshproxy.io/default-inbound-policy"  # MESHPROXY_DEFAULT_POLICY
ACCESS_LOG = "config.meshproxy.io/access-log"  # "apache" or "json": MESHPROXY_ACCESS_LOG
PROXY_LOG_LEVEL = "config.meshproxy.io/proxy-log-level"  # MESHPROXY_LOG_LEVEL
PROXY_LOG_FORMAT = "config.meshproxy.io/proxy-log-format"  # MESHPROXY_LOG_FORMAT
PROXY_CPU_REQUEST = "config.meshproxy.io/proxy-cpu-request"
PROXY_CPU_LIMIT = "config.meshproxy.io/proxy-cpu-limit"
PROXY_MEMORY_REQUEST = "config.meshproxy.io/proxy-memory-request"
PROXY_MEMORY_LIMIT = "config.meshproxy.io/proxy-memory-limit"
PROXY_EPHEMERAL_STORAGE_REQUEST = "config.meshproxy.io/proxy-ephemeral-storage-request"
PROXY_EPHEMERAL_STORAGE_LIMIT = "config.meshproxy.io/proxy-ephemeral-storage-limit"
# "enabled" (default): the app containers start once the proxy is ready.
PROXY_AWAIT = "config.meshproxy.io/proxy-await"
OUTBOUND_CONNECT_TIMEOUT = "config.meshproxy.io/proxy-outbound-connect-timeout"  # MESHPROXY_CONNECT_TIMEOUT
SHUTDOWN_GRACE_PERIOD = "config.meshproxy.io/shutdown-grace-period"  # MESHPROXY_DRAIN_TIMEOUT
DISABLE_TAP = "config.meshproxy.io/disable-tap"  # MESHPROXY_TAP_DISABLED
# Where the proxy sends its spans (MESHPROXY_TRACE_COLLECTOR).
TRACE_COLLECTOR = "config.meshproxy.io/trace-collector"

# The proxy's resources: annotation -> (requests|limits, resource).
RESOURCES = {
    PROXY_CPU_REQUEST: ("requests", "cpu"),
    PROXY_CPU_LIMIT: ("limits", "cpu"),
    PROXY_MEMORY_REQUEST: ("requests", "memory"),
    PROXY_MEMORY_LIMIT: ("limits", "memory"),
    PROXY_EPHEMERAL_STORAGE_REQUEST: ("requests", "ephemeral-storage"),
    PROXY_EPHEMERAL_STORAGE_LIMIT: ("limits", "ephemeral-storage"),
}

# Linkerd's annotation -> meshproxy's.
LINKERD = {
    "linkerd.io/inject": INJECT,
    "config.linkerd.io/skip-inbound-ports": SKIP_INBOUND_PORTS,
    "config.linkerd.io/skip-outbound-ports": SKIP_OUTBOUND_PORTS,
    "config.linkerd.io/skip-subnets": SKIP_SUBNETS,
    "config.linkerd.io/opaque-ports": OPAQUE_PORTS,
    "config.linkerd.io/image-pull-policy": IMAGE_PULL_POLICY,
    "config.linkerd.io/disable-identity": DISABLE_IDENTITY,
    "config.linkerd.io/default-inbound-policy": DEFAULT_INBOUND_POLICY,
    "config.linkerd.io/access-log": ACCESS_LOG,
    "config.linkerd.io/proxy-log-level": PROXY_LOG_LEVEL,
    "config.linkerd.io/proxy-log-format": PROXY_LOG_FORMAT,
    "config.linkerd.io/proxy-cpu-request": PROXY_CPU_REQUEST,
    "config.linkerd.io/proxy-cpu-limit": PROXY_CPU_LIMIT,
    "config.linkerd.io/proxy-memory-request": PROXY_MEMORY_REQUEST,
    "config.linkerd.io/proxy-memory-limit": PROXY_MEMORY_LIMIT,
    "config.linkerd.io/proxy-ephemeral-storage-request": PROXY_EPHEMERAL_STORAGE_REQUEST,
    "config.linkerd.io/proxy-ephemeral-storage-limit": PROXY_EPHEMERAL_STORAGE_LIMIT,
    "config.linkerd.io/proxy-await": PROXY_AWAIT,
    "config.linkerd.io/proxy-outbound-connect-timeout": OUTBOUND_CONNECT_TIMEOUT,
    "config.linkerd.io/shutdown-grace-period": SHUTDOWN_GRACE_PERIOD,
    "config.linkerd.io/disable-tap": DISABLE_TAP,
    "config.alpha.linkerd.io/trace-collector": TRACE_COLLECTOR,
}
# Linkerd's config annotations that name Linkerd's own images, ports or
# features meshproxy does not have: read, reported as ignored, never an error.
LINKERD_PREFIXES = ("config.linkerd.io/", "config.alpha.linkerd.io/", "config.beta.linkerd.io/")
# The names each meshproxy annotation is also read under (its own first).
ALIASES: dict[str, tuple[str, ...]] = {}
for _linkerd, _ours in LINKERD.items():
    ALIASES[_ours] = (*ALIASES.get(_ours, (_ours,)), _linkerd)

ENABLED = "enabled"
DISABLED = "disabled"
INGRESS = "ingress"  # Linkerd's ingress mode; meshproxy injects as for enabled

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
TOKEN_VOLUME = "meshproxy-identity-token"
TRUST_ANCHORS_VOLUME = "meshproxy-trust-anchors"
VOLUMES = (XTABLES_VOLUME, TOKEN_VOLUME, TRUST_ANCHORS_VOLUME)
# What scripts/images.sh builds: meshproxy:VERSION (Dockerfile), meshproxy-init:VERSION
# (iptables-init/Dockerfile) and meshproxy-controller:VERSION (Dockerfile with the webhook's
# libraries: the control plane's image), VERSION from pyproject.toml.
PROXY_IMAGE_NAME = "meshproxy"
INIT_IMAGE_NAME = "meshproxy-init"
CONTROLLER_IMAGE_NAME = "meshproxy-controller"
DEFAULT_PROXY_IMAGE = f"{PROXY_IMAGE_NAME}:{__version__}"
DEFAULT_INIT_IMAGE = f"{INIT_IMAGE_NAME}:{__version__}"
DEFAULT_CONTROLLER_IMAGE = f"{CONTROLLER_IMAGE_NAME}:{__version__}"

PROXY_UID = 2102
INBOUND_PORT = 4143
OUTBOUND_PORT = 4140
ADMIN_PORT = 4191
TAP_PORT = 4190
INBOUND_PORT_NAME = "meshproxy-in"
ADMIN_PORT_NAME = "meshproxy-admin"

# ---- identity (deploy/identity/ is the other side of these) ----------------
DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_IDENTITY_SERVICE = "https://meshproxy-identity.meshproxy.svc.cluster.local:8080"  # service.yaml
TOKEN_AUDIENCE = "meshproxy-identity"  # the issuer's --token-audience (deployment.yaml)
TOKEN_EXPIRATION_SECONDS = 86400  # the kubelet rotates the token at 80% of this
TOKEN_DIR = "/var/run/meshproxy/identity"
TOKEN_PATH = "token"
# The ConfigMap each meshed namespace holds (templates/trust-anchors-configmap.yaml).
TRUST_ANCHORS_CONFIGMAP = "meshproxy-trust-anchors"
TRUST_ANCHORS_KEY = "ca.crt"
TRUST_ANCHORS_DIR = "/var/run/meshproxy/trust-anchors"
# The downward API fills these two; MESHPROXY_IDENTITY_NAME is built from them
# by the kubelet's $(VAR) expansion. They must not start with MESHPROXY_: the
# proxy refuses MESHPROXY_* names it does not know.
POD_SERVICE_ACCOUNT_ENV = "_MESHPROXY_POD_SERVICE_ACCOUNT"
POD_NAMESPACE_ENV = "_MESHPROXY_POD_NAMESPACE"

# ---- iptables-init environment (iptables-init/meshproxy_init/config.py) -----
INIT_PROXY_UID = "MESHPROXY_INIT_PROXY_UID"
INIT_INBOUND_PORT = "MESHPROXY_INIT_INBOUND_PORT"
INIT_OUTBOUND_PORT = "MESHPROXY_INIT_OUTBOUND_PORT"
INIT_ADMIN_PORT = "MESHPROXY_INIT_ADMIN_PORT"
INIT_TAP_PORT = "MESHPROXY_INIT_TAP_PORT"
INIT_SKIP_INBOUND_PORTS = "MESHPROXY_INIT_SKIP_INBOUND_PORTS"
INIT_SKIP_OUTBOUND_PORTS = "MESHPROXY_INIT_SKIP_OUTBOUND_PORTS"
INIT_SKIP_SUBNETS = "MESHPROXY_INIT_SKIP_SUBNETS"
