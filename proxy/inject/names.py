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
DISABLE_IDENTITY = "config.meshproxy.io/disable-identity"
TRUST_DOMAIN = "config.meshproxy.io/trust-domain"
IDENTITY_SERVICE = "config.meshproxy.io/identity-service"
# Linkerd's spelling, so that namespaces already annotated for Linkerd keep
# their default; the values are the proxy's MESHPROXY_DEFAULT_POLICY choices.
DEFAULT_INBOUND_POLICY = "config.linkerd.io/default-inbound-policy"
# Linkerd's too: "apache" or "json" turns the proxy's HTTP access log on (MESHPROXY_ACCESS_LOG).
ACCESS_LOG = "config.linkerd.io/access-log"
# Where the proxy sends its spans (MESHPROXY_TRACE_COLLECTOR); Linkerd's alpha
# annotation is read too, the meshproxy one wins when both are set.
TRACE_COLLECTOR = "config.meshproxy.io/trace-collector"
LINKERD_TRACE_COLLECTOR = "config.alpha.linkerd.io/trace-collector"

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
TOKEN_VOLUME = "meshproxy-identity-token"
TRUST_ANCHORS_VOLUME = "meshproxy-trust-anchors"
VOLUMES = (XTABLES_VOLUME, TOKEN_VOLUME, TRUST_ANCHORS_VOLUME)
DEFAULT_PROXY_IMAGE = "meshproxy:0.1.0"
DEFAULT_INIT_IMAGE = "meshproxy-init:0.1.0"

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
