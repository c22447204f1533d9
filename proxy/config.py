"""Every setting of the proxy: environment names, defaults, parsing, validation.

Settings come from ``MESHPROXY_*`` environment variables and, optionally, a
YAML file (``meshproxy run --config FILE``) whose keys are the same names in
lower case without the prefix (``outbound_listen: 127.0.0.1:4140``). The
environment wins over the file. A bad value raises ``ConfigError`` naming the
setting; the command turns that into exit status 64 before anything binds.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from proxy.record import FrozenError, record
from proxy.telemetry import loglevel

PREFIX = "MESHPROXY_"

# ---- environment names (the only place they are spelled) -------------------
OUTBOUND_LISTEN = "MESHPROXY_OUTBOUND_LISTEN"
INBOUND_LISTEN = "MESHPROXY_INBOUND_LISTEN"
ADMIN_LISTEN = "MESHPROXY_ADMIN_LISTEN"
INBOUND_FORWARD_HOST = "MESHPROXY_INBOUND_FORWARD_HOST"
INBOUND_DEFAULT_TARGET = "MESHPROXY_INBOUND_DEFAULT_TARGET"
DETECT_TIMEOUT = "MESHPROXY_DETECT_TIMEOUT"
SERVER_FIRST_PROBE = "MESHPROXY_SERVER_FIRST_PROBE"
OPAQUE_PORTS = "MESHPROXY_OPAQUE_PORTS"
MAX_HEADER_BYTES = "MESHPROXY_MAX_HEADER_BYTES"
HEADER_TIMEOUT = "MESHPROXY_HEADER_TIMEOUT"
CONNECT_TIMEOUT = "MESHPROXY_CONNECT_TIMEOUT"
RESPONSE_TIMEOUT = "MESHPROXY_RESPONSE_TIMEOUT"
POOL_MAX_IDLE_PER_TARGET = "MESHPROXY_POOL_MAX_IDLE_PER_TARGET"
POOL_IDLE_TIMEOUT = "MESHPROXY_POOL_IDLE_TIMEOUT"
CLIENT_IDLE_TIMEOUT = "MESHPROXY_CLIENT_IDLE_TIMEOUT"
WRITE_BUFFER_HIGH = "MESHPROXY_WRITE_BUFFER_HIGH"
PIPELINE_BUFFER_BYTES = "MESHPROXY_PIPELINE_BUFFER_BYTES"
MAX_CONNECTIONS = "MESHPROXY_MAX_CONNECTIONS"
DRAIN_TIMEOUT = "MESHPROXY_DRAIN_TIMEOUT"
H2_MAX_CONCURRENT_STREAMS = "MESHPROXY_H2_MAX_CONCURRENT_STREAMS"
H2_INITIAL_WINDOW = "MESHPROXY_H2_INITIAL_WINDOW"
H2_CONNECTION_BUFFER = "MESHPROXY_H2_CONNECTION_BUFFER"
H2_CONNECTIONS_PER_TARGET = "MESHPROXY_H2_CONNECTIONS_PER_TARGET"
DESTINATION = "MESHPROXY_DESTINATION"
DNS_NAMESERVERS = "MESHPROXY_DNS_NAMESERVERS"
DNS_MIN_TTL = "MESHPROXY_DNS_MIN_TTL"
DNS_MAX_TTL = "MESHPROXY_DNS_MAX_TTL"
K8S_API = "MESHPROXY_K8S_API"
K8S_TOKEN_FILE = "MESHPROXY_K8S_TOKEN_FILE"
K8S_CA_FILE = "MESHPROXY_K8S_CA_FILE"
K8S_MAX_EVENT_BYTES = "MESHPROXY_K8S_MAX_EVENT_BYTES"
K8S_MAX_RESPONSE_BYTES = "MESHPROXY_K8S_MAX_RESPONSE_BYTES"
CLUSTER_DOMAIN = "MESHPROXY_CLUSTER_DOMAIN"
TRUST_DOMAIN = "MESHPROXY_TRUST_DOMAIN"
OUTBOUND_QUEUE_TIMEOUT = "MESHPROXY_OUTBOUND_QUEUE_TIMEOUT"
OUTBOUND_MAX_IN_FLIGHT = "MESHPROXY_OUTBOUND_MAX_IN_FLIGHT"
FAILURE_ACCRUAL_CONSECUTIVE = "MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE"
FAILURE_ACCRUAL_MIN_BACKOFF = "MESHPROXY_FAILURE_ACCRUAL_MIN_BACKOFF"
FAILURE_ACCRUAL_MAX_BACKOFF = "MESHPROXY_FAILURE_ACCRUAL_MAX_BACKOFF"
EWMA_DEFAULT_RTT = "MESHPROXY_EWMA_DEFAULT_RTT"
EWMA_DECAY = "MESHPROXY_EWMA_DECAY"
LOG_FORMAT = "MESHPROXY_LOG_FORMAT"
LOG_LEVEL = "MESHPROXY_LOG_LEVEL"
IDENTITY_NAME = "MESHPROXY_IDENTITY_NAME"
IDENTITY_SERVICE = "MESHPROXY_IDENTITY_SERVICE"
IDENTITY_TOKEN_FILE = "MESHPROXY_IDENTITY_TOKEN_FILE"
IDENTITY_TRUST_ANCHORS = "MESHPROXY_IDENTITY_TRUST_ANCHORS"
IDENTITY_CERT_FILE = "MESHPROXY_IDENTITY_CERT_FILE"
IDENTITY_KEY_FILE = "MESHPROXY_IDENTITY_KEY_FILE"
IDENTITY_RENEW_FRACTION = "MESHPROXY_IDENTITY_RENEW_FRACTION"
IDENTITY_MIN_BACKOFF = "MESHPROXY_IDENTITY_MIN_BACKOFF"
IDENTITY_MAX_BACKOFF = "MESHPROXY_IDENTITY_MAX_BACKOFF"
TLS_HANDSHAKE_TIMEOUT = "MESHPROXY_TLS_HANDSHAKE_TIMEOUT"
TLS_SESSION_CACHE = "MESHPROXY_TLS_SESSION_CACHE"
POLICY = "MESHPROXY_POLICY"
DEFAULT_POLICY = "MESHPROXY_DEFAULT_POLICY"
CLUSTER_NETWORKS = "MESHPROXY_CLUSTER_NETWORKS"
INBOUND_PROBE_PATHS = "MESHPROXY_INBOUND_PROBE_PATHS"
RETRY_BUFFER_BYTES = "MESHPROXY_RETRY_BUFFER_BYTES"
RETRY_LIMIT = "MESHPROXY_RETRY_LIMIT"
ROUTE_LABEL_LIMIT = "MESHPROXY_ROUTE_LABEL_LIMIT"
MIRROR_MAX_BODY_BYTES = "MESHPROXY_MIRROR_MAX_BODY_BYTES"
MIRROR_MAX_IN_FLIGHT = "MESHPROXY_MIRROR_MAX_IN_FLIGHT"
PEER_LABEL_LIMIT = "MESHPROXY_PEER_LABEL_LIMIT"
INBOUND_RATELIMIT_IDENTITIES = "MESHPROXY_INBOUND_RATELIMIT_IDENTITIES"
INBOUND_AUTHZ_CACHE = "MESHPROXY_INBOUND_AUTHZ_CACHE"
SHUTDOWN_ENDPOINT_ENABLED = "MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED"
ACCESS_LOG = "MESHPROXY_ACCESS_LOG"
ACCESS_LOG_BUFFER = "MESHPROXY_ACCESS_LOG_BUFFER"
TAP_DISABLED = "MESHPROXY_TAP_DISABLED"
TAP_LISTEN = "MESHPROXY_TAP_LISTEN"
TAP_IDENTITY = "MESHPROXY_TAP_IDENTITY"
TAP_MAX_SESSIONS = "MESHPROXY_TAP_MAX_SESSIONS"
TAP_BUFFER_BYTES = "MESHPROXY_TAP_BUFFER_BYTES"
TRACE_COLLECTOR = "MESHPROXY_TRACE_COLLECTOR"
TRACE_SERVICE_NAME = "MESHPROXY_TRACE_SERVICE_NAME"
TRACE_EXTRA_ATTRIBUTES = "MESHPROXY_TRACE_EXTRA_ATTRIBUTES"
TRACE_BATCH_SIZE = "MESHPROXY_TRACE_BATCH_SIZE"
TRACE_BATCH_INTERVAL = "MESHPROXY_TRACE_BATCH_INTERVAL"
TRACE_MAX_BUFFERED_SPANS = "MESHPROXY_TRACE_MAX_BUFFERED_SPANS"
TRACE_EXPORT_TIMEOUT = "MESHPROXY_TRACE_EXPORT_TIMEOUT"
TRACE_COLLECTOR_IDENTITY = "MESHPROXY_TRACE_COLLECTOR_IDENTITY"
# OpenTelemetry's own names (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/),
# honoured as Linkerd honours them: they describe the resource the proxy's spans come from.
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
METRICS_WORKLOAD_LABELS = "MESHPROXY_METRICS_WORKLOAD_LABELS"
WORKLOAD_NAMESPACE = "MESHPROXY_WORKLOAD_NAMESPACE"
WORKLOAD_POD = "MESHPROXY_WORKLOAD_POD"
WORKLOAD_KIND = "MESHPROXY_WORKLOAD_KIND"
WORKLOAD_NAME = "MESHPROXY_WORKLOAD_NAME"

DEFAULT_OPAQUE_PORTS = "25,587,3306,4444,5432,6379,9300,11211"
DEFAULT_POLICIES = ("all-unauthenticated", "all-authenticated", "cluster-unauthenticated",
                    "cluster-authenticated", "deny")
DEFAULT_CLUSTER_NETWORKS = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
ACCESS_LOG_FORMATS = ("apache", "json")
# Owner kinds a workload label may name (Linkerd's viz labels: deployment="web", ...).
WORKLOAD_KINDS = ("deployment", "statefulset", "daemonset", "replicaset", "replicationcontroller", "job",
                  "cronjob", "pod")


class ConfigError(ValueError):
    """A setting has a value the proxy cannot use; ``name`` is the setting."""

    def __init__(self, name: str, value: object, why: str) -> None:
        super().__init__(f"invalid {name}={value!r}: {why}")
        self.name = name


# ---- value types -------------------------------------------------------------


@record
class HostPort:
    """An address to listen on or connect to; ``host`` may be a name or an IP."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class PortSet:
    """Ports given as a list of numbers and inclusive ranges (``25,1000-1999``)."""

    __slots__ = ("ranges", "_few")
    ranges: tuple[tuple[int, int], ...]
    # The ports themselves when they are few (asked once per accepted connection: one hash
    # lookup instead of a generator over the ranges); None for wide ranges.
    _few: frozenset[int] | None

    def __init__(self, ranges: tuple[tuple[int, int], ...]) -> None:
        few = None
        if sum(hi - lo + 1 for lo, hi in ranges) <= _FEW_PORTS:
            few = frozenset(p for lo, hi in ranges for p in range(lo, hi + 1))
        object.__setattr__(self, "ranges", ranges)
        object.__setattr__(self, "_few", few)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        return self.ranges == other.ranges if isinstance(other, PortSet) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"PortSet(ranges={self.ranges!r})"

    def __contains__(self, port: object) -> bool:
        few = self._few
        if few is not None:
            return port in few and isinstance(port, int)
        if not isinstance(port, int):
            return False
        for lo, hi in self.ranges:
            if lo <= port <= hi:
                return True
        return False


_FEW_PORTS = 1024


@record
class Limits:
    """Sizes and times that bound one connection's work (read by the relay)."""

    max_header_bytes: int
    header_timeout: float  # a request head must arrive whole within this (from its first byte)
    pipeline_buffer_bytes: int
    write_buffer_high: int
    connect_timeout: float
    response_timeout: float  # 0 disables
    pool_max_idle_per_target: int
    pool_idle_timeout: float
    client_idle_timeout: float
    detect_timeout: float
    server_first_probe: float  # a silent client's target is connected after this (0: never)
    h2_max_concurrent_streams: int
    h2_initial_window: int
    h2_connection_buffer: int
    h2_connections_per_target: int


@record
class DiscoverySettings:
    """Where endpoints come from (read by proxy/discovery)."""

    destination: str | None  # file:///path.yaml, dns, k8s or None
    dns_nameservers: tuple[HostPort, ...] | None
    dns_min_ttl: float
    dns_max_ttl: float
    k8s_api: str | None
    k8s_token_file: str
    k8s_ca_file: str
    cluster_domain: str
    trust_domain: str
    # Defaulted for code that builds these settings itself (the injector webhook); the same as SETTINGS'.
    k8s_max_event_bytes: int = 4 << 20
    k8s_max_response_bytes: int = 64 << 20


@record
class BalancerSettings:
    """How outbound requests are spread and shed (defaults; a service may override accrual)."""

    queue_timeout: float
    max_in_flight: int
    failure_accrual_consecutive: int
    failure_accrual_min_backoff: float
    failure_accrual_max_backoff: float
    ewma_default_rtt: float
    ewma_decay: float


@record
class IdentitySettings:
    """Who this proxy is and where its certificate comes from (read by proxy/identity/local.py).

    ``name`` None: no identity, every connection is plaintext. Otherwise either
    ``service`` (an issuer, with a token) or ``cert_file``/``key_file``
    (certificates managed outside, reloaded on change) provides the leaf.
    """

    name: str | None
    trust_domain: str
    service: str | None
    token_file: str | None
    trust_anchors: str | None
    cert_file: str | None
    key_file: str | None
    renew_fraction: float
    min_backoff: float
    max_backoff: float
    handshake_timeout: float
    session_cache: int  # peer sessions kept for resumption; 0 = no tickets issued or resumed


@record
class PolicySettings:
    """Where reliability and authorization policy comes from (read by proxy/policy)."""

    path: str | None
    default_policy: str
    cluster_networks: tuple[str, ...]
    probe_paths: tuple[str, ...]
    retry_buffer_bytes: int = 65536
    retry_limit: int = 3
    route_label_limit: int = 500
    peer_label_limit: int = 1000
    ratelimit_identities: int = 10000
    authz_cache: int = 1024
    mirror_max_body_bytes: int = 65536
    mirror_max_in_flight: int = 100


@record
class Collector:
    """Where spans go: ``protocol`` is ``grpc`` (OTLP/gRPC, h2c) or ``http/protobuf`` (POST ``path``)."""

    protocol: str
    host: str
    port: int
    path: str = ""

    def __str__(self) -> str:
        address = str(HostPort(self.host, self.port))
        return f"http://{address}{self.path}" if self.protocol == "http/protobuf" else f"grpc://{address}"


@record
class TracingSettings:
    """Span export (read by proxy/telemetry/trace_export.py); ``collector`` None: tracing is off."""

    collector: Collector | None
    resource: tuple[tuple[str, str], ...]  # service.name and the other resource attributes, in order
    batch_size: int
    batch_interval: float
    max_buffered_spans: int
    export_timeout: float
    # The collector's mesh identity: spans go over mutual TLS with this proxy's own certificate,
    # the collector proving this name (Linkerd's LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME). None: h2c.
    collector_identity: str | None = None


@record
class TapSettings:
    """The tap server (proxy/telemetry/tapserver.py): where it listens, whom it serves, what it may hold."""

    disabled: bool = False
    listen: HostPort = HostPort("0.0.0.0", 4190)
    identity: str | None = None  # the mesh identity allowed to tap (besides loopback clients); None: loopback only
    max_sessions: int = 16
    buffer_bytes: int = 262144


@record
class MetricsSettings:
    """Who this proxy's workload is (the downward API in Kubernetes), and whether /metrics says so itself."""

    workload_labels: bool = False
    workload_namespace: str = ""
    workload_pod: str = ""
    workload_kind: str = ""
    workload_name: str = ""

    def labels(self) -> tuple[tuple[str, str], ...]:
        """``namespace``, ``pod`` and the owner (``deployment="web"``...) as known; empty when not asked for."""
        return self.workload() if self.workload_labels else ()

    def workload(self) -> tuple[tuple[str, str], ...]:
        """``namespace``, ``pod`` and the owner as known (what a tap reports of this proxy's own workload)."""
        pairs = [("namespace", self.workload_namespace), ("pod", self.workload_pod)]
        if self.workload_kind and self.workload_name:
            pairs.append((self.workload_kind, self.workload_name))
        return tuple((k, v) for k, v in pairs if v)


@record
class Config:
    outbound_listen: HostPort
    inbound_listen: HostPort
    admin_listen: HostPort
    shutdown_endpoint_enabled: bool
    inbound_forward_host: str
    inbound_default_target: HostPort | None
    opaque_ports: PortSet
    max_connections: int
    drain_timeout: float
    log_format: str
    log_level: str  # normalized directives (proxy/telemetry/loglevel.py)
    access_log: str | None  # "apache", "json", or None (off)
    access_log_buffer: int  # lines waiting for the writer; more are dropped and counted
    limits: Limits
    discovery: DiscoverySettings
    balancer: BalancerSettings
    identity: IdentitySettings
    policy: PolicySettings
    tracing: TracingSettings
    metrics: MetricsSettings = MetricsSettings()
    tap: TapSettings = TapSettings()

    # Every setting as text in the syntax its parser reads, in SETTINGS order
    # (filled by ``load``): what /config shows.
    settings: tuple[tuple[str, str], ...] = ()

    def describe(self) -> dict[str, str]:
        """Settings for ``/config`` on the admin port: keyed by the names ``run --config`` reads
        (``outbound_listen``), valued in the syntax it reads, credentials redacted. Saved to a file
        and given to ``run --config``, it makes a proxy whose ``describe()`` is the same."""
        return {file_key(name): redact(text) for name, text in self.settings}


def file_key(name: str) -> str:
    """The ``--config`` file's key for an environment name: ``MESHPROXY_OUTBOUND_LISTEN`` -> ``outbound_listen``."""
    return name[len(PREFIX):].lower()


# scheme://userinfo@ ... ?query#fragment inside a setting's text.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:(?P<userinfo>[^/?#\s]*)@)?(?P<rest>[^?#\s]*)"
                  r"(?P<query>\?[^#\s]*)?(?P<fragment>#\S*)?")


def redact(text: str) -> str:
    """``text`` with whatever can carry a credential in a URL masked: the userinfo
    (``https://user:pass@host`` -> ``https://***@host``), the query and the
    fragment (``?access_token=...``). Paths, hosts and file names stay readable."""

    def mask(match: re.Match) -> str:
        out = match.group("scheme")
        if match.group("userinfo") is not None:
            out += "***@"
        out += match.group("rest")
        if match.group("query"):
            out += "?***"
        if match.group("fragment"):
            out += "#***"
        return out

    return _URL.sub(mask, text) if "://" in text else text


# ---- parsers -----------------------------------------------------------------


def parse_host_port(text: str) -> HostPort:
    """``host:port``, ``[v6]:port``; raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError("expected [ipv6]:port")
        host, port_text = text[1:end], text[end + 2 :]
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        if ":" in host:
            raise ValueError("IPv6 addresses must be bracketed: [addr]:port")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("port must be 0-65535")
    return HostPort(host, int(port_text))


def parse_duration(text: str) -> float:
    """``10s``, ``250ms``, ``2m``, ``1h`` or a bare number of seconds; >= 0."""
    text = text.strip().lower()
    number, scale = text, 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], factor
            break
    value = float(number) * scale
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite, non-negative duration")
    return value


def parse_size(text: str) -> int:
    """A byte count: ``65536``, ``64KiB``, ``1MiB``, ``64k``; > 0."""
    text = text.strip()
    units = {"kib": 1024, "k": 1024, "kb": 1000, "mib": 1 << 20, "m": 1 << 20, "mb": 10**6}
    lowered = text.lower()
    for suffix in sorted(units, key=len, reverse=True):
        if lowered.endswith(suffix):
            value = int(lowered[: -len(suffix)].strip()) * units[suffix]
            break
    else:
        value = int(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def parse_port_set(text: str) -> PortSet:
    ranges = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo_text, dash, hi_text = part.partition("-")
        lo = int(lo_text)
        hi = int(hi_text) if dash else lo
        if not (0 < lo <= hi <= 65535):
            raise ValueError(f"bad port or range {part!r}")
        ranges.append((lo, hi))
    return PortSet(tuple(ranges))


def parse_positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def parse_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or a positive integer")
    return value


def parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def parse_window(text: str) -> int:
    value = parse_size(text)
    if not 65535 <= value <= 2**31 - 1:
        raise ValueError("must be between 65535 and 2147483647 bytes (RFC 9113)")
    return value


def parse_destination(text: str) -> str:
    """``file:///abs/path.yaml``, ``dns`` or ``k8s``."""
    text = text.strip()
    if text in ("dns", "k8s"):
        return text
    if text.startswith("file://"):
        path = text[len("file://") :]
        if not path.startswith("/"):
            raise ValueError("file:// needs an absolute path (file:///etc/meshproxy/endpoints.yaml)")
        return text
    raise ValueError("expected file:///path.yaml, dns or k8s")


def parse_host_port_list(text: str) -> tuple[HostPort, ...]:
    items = tuple(parse_host_port(part) for part in text.split(",") if part.strip())
    if not items:
        raise ValueError("expected host:port[,host:port...]")
    return items


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


def parse_fraction(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 0.95:
        raise ValueError("must be between 0.1 and 0.95")
    return value


def parse_service_url(text: str) -> str:
    text = text.strip()
    if not text.startswith("https://") or len(text) <= len("https://"):
        raise ValueError("expected https://host:port")
    return text


def parse_networks(text: str) -> tuple[str, ...]:
    nets = tuple(str(ipaddress.ip_network(part.strip(), strict=False)) for part in text.split(",") if part.strip())
    return nets


def parse_paths(text: str) -> tuple[str, ...]:
    paths = tuple(part.strip() for part in text.split(",") if part.strip())
    for path in paths:
        if not path.startswith("/"):
            raise ValueError(f"paths must start with '/': {path!r}")
    return paths


def parse_collector(text: str) -> Collector:
    """``host:port`` or ``grpc://host:port`` (OTLP/gRPC), ``http://host:port[/path]`` (OTLP/HTTP protobuf,
    path ``/v1/traces`` by default)."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "grpc", text
    scheme = scheme.lower()
    if scheme == "https":
        raise ValueError("TLS to the collector is not supported: use http:// or grpc:// (plaintext)")
    if scheme not in ("grpc", "http"):
        raise ValueError("expected host:port, grpc://host:port or http://host:port[/path]")
    address, slash, path = rest.partition("/")
    hp = parse_host_port(address)
    if hp.port == 0:
        raise ValueError("the collector needs a port")
    if scheme == "grpc":
        if slash and path:
            raise ValueError("a gRPC collector address has no path")
        return Collector("grpc", hp.host, hp.port)
    return Collector("http/protobuf", hp.host, hp.port, "/" + path if path else "/v1/traces")


def parse_attributes(text: str) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs separated by commas or newlines (values may be "quoted", as the downward API
    writes them; ``%XX`` escapes are decoded, as OTEL_RESOURCE_ATTRIBUTES allows)."""
    if not text.strip():
        return ()  # the default: urllib is not loaded for it
    from urllib.parse import unquote

    out = []
    for item in text.replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        out.append((unquote(key.strip()), unquote(value.strip().strip('"'))))
    return tuple(out)


# ---- the table: name -> (default, parser) ------------------------------------

def parse_identity_name(text: str) -> str:
    """A mesh identity (a DNS name, ``sa.ns.serviceaccount.identity.<trust domain>``), lower-cased."""
    name = text.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
        raise ValueError("not a DNS name (e.g. otel-collector.tracing.serviceaccount.identity.cluster.local)")
    return name


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


SETTINGS: dict[str, tuple[str | None, Callable[[str], Any], str]] = {
    OUTBOUND_LISTEN: ("127.0.0.1:4140", parse_host_port, "outbound listener (apps' traffic out)"),
    INBOUND_LISTEN: ("0.0.0.0:4143", parse_host_port, "inbound listener (traffic to the app)"),
    ADMIN_LISTEN: ("0.0.0.0:4191", parse_host_port, "admin listener: /live /ready /metrics"),
    # Off by default, as Linkerd's LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED: a
    # proxy stopped by an HTTP request is a denial of service waiting to happen.
    SHUTDOWN_ENDPOINT_ENABLED: ("false", parse_bool,
                                "admin POST /shutdown (loopback clients only); false: 404 like any unknown path"),
    INBOUND_FORWARD_HOST: ("127.0.0.1", str, "host the inbound side forwards to"),
    INBOUND_DEFAULT_TARGET: (None, parse_host_port, "inbound target for connections addressed to the listener itself"),
    DETECT_TIMEOUT: ("10s", parse_duration, "protocol detection time limit for bytes that decide nothing yet"),
    # Clients of client-first protocols write with the connect; one silent
    # this long may be waiting for its server (SMTP, MySQL): its target is
    # connected, and if the server speaks first the connection is opaque.
    SERVER_FIRST_PROBE: ("50ms", parse_duration, "a silent client's target is connected after this; 0 = never"),
    OPAQUE_PORTS: (DEFAULT_OPAQUE_PORTS, parse_port_set, "ports that skip detection"),
    MAX_HEADER_BYTES: ("65536", parse_size, "largest request/response head; larger -> 431/502"),
    # HAProxy's `timeout http-request`: a client trickling its head (slowloris)
    # is answered 408 and closed instead of holding a connection for minutes.
    HEADER_TIMEOUT: ("10s", parse_duration, "a request head must arrive whole within this, from its first byte -> 408"),
    # 3 s, not 1 s: a SYN dropped by a full accept backlog is retransmitted
    # after 1 s, and a burst of new connections should survive one retry.
    CONNECT_TIMEOUT: ("3s", parse_duration, "upstream connect time limit -> 504"),
    RESPONSE_TIMEOUT: ("0", parse_duration, "time to the response head, 0 = none -> 504"),
    # High on purpose: every request in flight holds one upstream connection,
    # and a low cap would close and reopen them under concurrency. Idle ones
    # are still bounded by POOL_IDLE_TIMEOUT.
    POOL_MAX_IDLE_PER_TARGET: ("10000", parse_positive_int, "idle upstream connections kept per target"),
    POOL_IDLE_TIMEOUT: ("3s", parse_duration,
                        "idle upstream connection lifetime (HTTP/1, and HTTP/2 with no stream open)"),
    CLIENT_IDLE_TIMEOUT: ("120s", parse_duration, "idle keep-alive client connection lifetime"),
    WRITE_BUFFER_HIGH: ("262144", parse_size, "write buffer high-water mark per connection"),
    PIPELINE_BUFFER_BYTES: ("262144", parse_size, "bytes read ahead of an in-flight request"),
    MAX_CONNECTIONS: ("20000", parse_positive_int, "open client connections per listener"),
    DRAIN_TIMEOUT: ("30s", parse_duration, "SIGTERM: time for in-flight requests to finish"),
    H2_MAX_CONCURRENT_STREAMS: ("100", parse_positive_int, "HTTP/2 streams a peer may open at once; more are refused"),
    H2_INITIAL_WINDOW: ("1MiB", parse_window, "HTTP/2 flow-control window per stream (bytes buffered per stream)"),
    # Per-stream windows are the backpressure; the connection window comes back
    # as DATA arrives until this much is buffered across streams, so a stalled
    # stream never starves the connection it shares.
    H2_CONNECTION_BUFFER: ("8MiB", parse_size,
                           "HTTP/2 data buffered per connection, all streams, before the connection window waits"),
    H2_CONNECTIONS_PER_TARGET: ("4", parse_positive_int, "upstream HTTP/2 connections per target when streams run out"),
    DESTINATION: (None, parse_destination, "discovery source: file:///path.yaml, dns or k8s; unset = none"),
    DNS_NAMESERVERS: (None, parse_host_port_list, "DNS servers (host:port list) instead of /etc/resolv.conf"),
    DNS_MIN_TTL: ("1s", parse_duration, "shortest DNS refresh interval"),
    DNS_MAX_TTL: ("300s", parse_duration, "longest DNS refresh interval"),
    K8S_API: (None, str, "Kubernetes API URL; unset = in-cluster (KUBERNETES_SERVICE_HOST)"),
    K8S_TOKEN_FILE: ("/var/run/secrets/kubernetes.io/serviceaccount/token", str, "Kubernetes API token file"),
    K8S_CA_FILE: ("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", str, "Kubernetes API CA file"),
    # An object is at most 1.5 MiB in etcd; its JSON in a watch event a little more.
    K8S_MAX_EVENT_BYTES: ("4MiB", parse_size, "largest Kubernetes watch event; larger -> the watch relists"),
    K8S_MAX_RESPONSE_BYTES: ("64MiB", parse_size, "largest Kubernetes API response (a list page of 500 objects)"),
    CLUSTER_DOMAIN: ("cluster.local", str, "cluster DNS domain (svc.<domain> names)"),
    TRUST_DOMAIN: ("cluster.local", str, "identity trust domain of meshed peers"),
    OUTBOUND_QUEUE_TIMEOUT: ("3s", parse_duration, "wait for a ready endpoint, then 503"),
    OUTBOUND_MAX_IN_FLIGHT: ("10000", parse_positive_int, "outbound requests in flight; more are shed with 503"),
    FAILURE_ACCRUAL_CONSECUTIVE: ("7", parse_positive_int, "consecutive failures that eject an endpoint"),
    FAILURE_ACCRUAL_MIN_BACKOFF: ("1s", parse_duration, "first ejection time (doubles, with jitter)"),
    FAILURE_ACCRUAL_MAX_BACKOFF: ("60s", parse_duration, "longest ejection time"),
    EWMA_DEFAULT_RTT: ("30ms", parse_duration, "PeakEWMA latency estimate of a new endpoint"),
    EWMA_DECAY: ("10s", parse_duration, "PeakEWMA decay time"),
    LOG_FORMAT: ("plain", parse_choice(("plain", "json")), "log format"),
    # Linkerd's directives (LINKERD2_PROXY_LOG): a default level and target=level pairs.
    LOG_LEVEL: ("info", loglevel.normalize,
                "log level directives: a level (trace, debug, info, warn, error, off) and target=level pairs, "
                "e.g. warn,proxy.outbound=debug (changeable at /proxy-log-level)"),
    # Off by default, as Linkerd's LINKERD2_PROXY_ACCESS_LOG: a line per request costs throughput.
    ACCESS_LOG: (None, parse_choice(ACCESS_LOG_FORMATS), "HTTP access log on stderr: apache or json; unset = off"),
    ACCESS_LOG_BUFFER: ("10000", parse_positive_int,
                        "access log lines waiting to be written; more are dropped and counted"),
    IDENTITY_NAME: (None, str, "this proxy's identity (sa.ns.serviceaccount.identity.<trust domain>); unset = no mTLS"),
    IDENTITY_SERVICE: (None, parse_service_url, "issuer URL (https://host:port) that signs the proxy's CSR"),
    IDENTITY_TOKEN_FILE: (None, str, "file holding the token sent to the issuer (re-read at each renewal)"),
    IDENTITY_TRUST_ANCHORS: (None, str, "PEM file of trust anchors (roots) for peers and the issuer"),
    IDENTITY_CERT_FILE: (None, str, "leaf certificate + chain PEM managed outside (instead of the issuer); reloaded"),
    IDENTITY_KEY_FILE: (None, str, "private key PEM for IDENTITY_CERT_FILE; reloaded with it"),
    IDENTITY_RENEW_FRACTION: ("0.7", parse_fraction, "renew the certificate at this fraction of its lifetime"),
    IDENTITY_MIN_BACKOFF: ("1s", parse_duration, "first retry delay after a failed certificate request"),
    IDENTITY_MAX_BACKOFF: ("60s", parse_duration, "longest retry delay after failed certificate requests"),
    TLS_HANDSHAKE_TIMEOUT: ("10s", parse_duration,
                            "inbound mesh TLS handshake time limit (outbound, MESHPROXY_CONNECT_TIMEOUT covers it)"),
    TLS_SESSION_CACHE: ("256", parse_count,
                        "mesh TLS sessions kept for resumption, one per (peer address, identity, ALPN); "
                        "0 = no session tickets issued or resumed"),
    POLICY: (None, str, "policy file (YAML: routes, retries, splits, authorization); reloaded on change"),
    DEFAULT_POLICY: ("all-unauthenticated", parse_choice(DEFAULT_POLICIES),
                     "inbound authorization for ports without a Server in the policy"),
    CLUSTER_NETWORKS: (DEFAULT_CLUSTER_NETWORKS, parse_networks,
                       "client networks that cluster-* policies admit; without an identity, the only clients "
                       "whose transport header is obeyed"),
    INBOUND_PROBE_PATHS: ("", parse_paths, "request paths always allowed inbound (kubelet probes), comma-separated"),
    RETRY_BUFFER_BYTES: ("64KiB", parse_size,
                         "request body kept for retries; larger (or chunked) requests are never retried"),
    RETRY_LIMIT: ("3", parse_positive_int, "retries per request on isRetryable routes without their own limit"),
    ROUTE_LABEL_LIMIT: ("500", parse_positive_int,
                        "distinct (service, route) metric labels; more count as route=\"other\""),
    MIRROR_MAX_BODY_BYTES: ("64KiB", parse_size,
                            "largest request body mirrored (RequestMirror); larger requests are not mirrored"),
    MIRROR_MAX_IN_FLIGHT: ("100", parse_positive_int,
                           "mirrored request copies in flight at once; more are skipped and counted"),
    PEER_LABEL_LIMIT: ("1000", parse_positive_int,
                       "distinct label sets per TLS-peer and authorization metric, and per direction for the "
                       "HTTP and TCP families; more count as \"other\""),
    INBOUND_AUTHZ_CACHE: ("1024", parse_positive_int,
                          "inbound HTTP connection authorizations remembered per (client address, TLS identity, "
                          "target, port) until the policy changes; past it the cache starts over"),
    INBOUND_RATELIMIT_IDENTITIES: ("10000", parse_positive_int,
                                   "client identities with their own bucket per HTTPLocalRateLimitPolicy "
                                   "identity limit; past it the least recently seen client's is dropped"),
    # Linkerd's tap server: LINKERD2_PROXY_TAP_DISABLED, _TAP_LISTEN_ADDR, _TAP_SVC_NAME.
    TAP_DISABLED: ("false", parse_bool, "no tap server (Linkerd's tap API on MESHPROXY_TAP_LISTEN)"),
    TAP_LISTEN: ("0.0.0.0:4190", parse_host_port, "tap server listener (io.linkerd.proxy.tap.Tap, gRPC)"),
    TAP_IDENTITY: (None, str, "mesh identity allowed to tap over mTLS (loopback clients always may); "
                              "unset = loopback only"),
    TAP_MAX_SESSIONS: ("16", parse_positive_int, "taps open at once; more are refused with RESOURCE_EXHAUSTED"),
    TAP_BUFFER_BYTES: ("256KiB", parse_size, "tap events waiting for one slow tap client; more are dropped and "
                                             "counted"),
    TRACE_COLLECTOR: (None, parse_collector,
                      "OTLP collector for spans: host:port or grpc://host:port (gRPC), http://host:port[/path] "
                      "(HTTP/protobuf, /v1/traces); unset = no tracing"),
    TRACE_SERVICE_NAME: ("meshproxy", str, "service.name of the proxy's spans (OTEL_SERVICE_NAME wins)"),
    TRACE_EXTRA_ATTRIBUTES: ("", parse_attributes,
                             "resource attributes of the proxy's spans: key=value, comma or newline separated "
                             "(OTEL_RESOURCE_ATTRIBUTES wins)"),
    TRACE_BATCH_SIZE: ("512", parse_positive_int, "spans per export request"),
    TRACE_BATCH_INTERVAL: ("1s", parse_duration, "longest wait before a partial batch is exported"),
    # Spans wait here while the collector is slow or away; a full buffer drops
    # new spans (trace_spans_dropped_total) instead of holding requests.
    TRACE_MAX_BUFFERED_SPANS: ("2048", parse_positive_int, "spans waiting for export; more are dropped and counted"),
    TRACE_EXPORT_TIMEOUT: ("10s", parse_duration, "time limit of one export; its spans are dropped after it"),
    TRACE_COLLECTOR_IDENTITY: (None, parse_identity_name,
                               "the collector's mesh identity: spans go over mutual TLS with this proxy's "
                               "certificate, gRPC or HTTP (needs MESHPROXY_IDENTITY_NAME); unset = plaintext"),
    METRICS_WORKLOAD_LABELS: ("false", parse_bool,
                              "add this proxy's namespace, pod and owner labels to every metric (for a Prometheus "
                              "that does not add them while scraping)"),
    WORKLOAD_NAMESPACE: ("", str, "this proxy's namespace (the downward API's metadata.namespace)"),
    WORKLOAD_POD: ("", str, "this proxy's pod name (the downward API's metadata.name)"),
    WORKLOAD_KIND: ("", parse_choice(("",) + WORKLOAD_KINDS), "the kind of the workload that owns the pod"),
    WORKLOAD_NAME: ("", str, "the name of the workload that owns the pod"),
}


def _duration_text(seconds: float) -> str:
    """A duration as ``parse_duration`` reads it: ``50ms``, ``10s``, or bare seconds when finer."""
    ms = seconds * 1000.0
    if abs(ms - round(ms)) < 1e-6:
        whole = round(ms)
        return "0" if whole == 0 else f"{whole // 1000}s" if whole % 1000 == 0 else f"{whole}ms"
    return repr(seconds)


def render(name: str, value: Any) -> str:
    """A parsed setting back as text its parser reads and parses to the same value (for /config)."""
    if value is None:
        return ""
    if SETTINGS[name][1] is parse_duration:
        return _duration_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, PortSet):
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in value.ranges)
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _value(name: str, sources: Mapping[str, str]) -> Any:
    default, parser, _ = SETTINGS[name]
    raw = sources.get(name, default)
    if raw is None or (raw == "" and default is None):
        return None
    try:
        return parser(str(raw))
    except (ValueError, TypeError) as err:
        raise ConfigError(name, raw, str(err) or "malformed") from None


def file_settings(document: object) -> dict[str, str]:
    """Map a YAML document's keys (``outbound_listen``) to environment names."""
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError("--config", type(document).__name__, "the file must be a mapping")
    out = {}
    for key, value in document.items():
        name = PREFIX + str(key).upper()
        if name not in SETTINGS:
            raise ConfigError(str(key), value, "unknown setting")
        out[name] = "" if value is None else str(value)
    return out


def load(env: Mapping[str, str] | None = None, file_path: str | None = None) -> Config:
    """Build the frozen configuration; raises ConfigError on the first bad value."""
    env = os.environ if env is None else env
    sources: dict[str, str] = {}
    if file_path:
        import yaml

        try:
            with open(file_path, encoding="utf-8") as fh:
                sources.update(file_settings(yaml.safe_load(fh)))
        except OSError as err:
            raise ConfigError("--config", file_path, err.strerror or str(err)) from None
        except yaml.YAMLError as err:
            raise ConfigError("--config", file_path, f"not valid YAML: {err}") from None
    unknown = [k for k in env if k.startswith(PREFIX) and k not in SETTINGS and k not in EXTERNAL_NAMES]
    if unknown:
        raise ConfigError(unknown[0], env[unknown[0]], "unknown setting")
    sources.update({k: v for k, v in env.items() if k in SETTINGS})
    v = {name: _value(name, sources) for name in SETTINGS}
    limits = Limits(
        max_header_bytes=v[MAX_HEADER_BYTES],
        header_timeout=v[HEADER_TIMEOUT],
        pipeline_buffer_bytes=v[PIPELINE_BUFFER_BYTES],
        write_buffer_high=v[WRITE_BUFFER_HIGH],
        connect_timeout=v[CONNECT_TIMEOUT],
        response_timeout=v[RESPONSE_TIMEOUT],
        pool_max_idle_per_target=v[POOL_MAX_IDLE_PER_TARGET],
        pool_idle_timeout=v[POOL_IDLE_TIMEOUT],
        client_idle_timeout=v[CLIENT_IDLE_TIMEOUT],
        detect_timeout=v[DETECT_TIMEOUT],
        server_first_probe=v[SERVER_FIRST_PROBE],
        h2_max_concurrent_streams=v[H2_MAX_CONCURRENT_STREAMS],
        h2_initial_window=v[H2_INITIAL_WINDOW],
        h2_connection_buffer=v[H2_CONNECTION_BUFFER],
        h2_connections_per_target=v[H2_CONNECTIONS_PER_TARGET],
    )
    if limits.connect_timeout <= 0:
        raise ConfigError(CONNECT_TIMEOUT, sources.get(CONNECT_TIMEOUT), "must be greater than zero")
    return Config(
        outbound_listen=v[OUTBOUND_LISTEN],
        inbound_listen=v[INBOUND_LISTEN],
        admin_listen=v[ADMIN_LISTEN],
        shutdown_endpoint_enabled=v[SHUTDOWN_ENDPOINT_ENABLED],
        inbound_forward_host=v[INBOUND_FORWARD_HOST],
        inbound_default_target=v[INBOUND_DEFAULT_TARGET],
        opaque_ports=v[OPAQUE_PORTS],
        max_connections=v[MAX_CONNECTIONS],
        drain_timeout=v[DRAIN_TIMEOUT],
        log_format=v[LOG_FORMAT],
        log_level=v[LOG_LEVEL],
        access_log=v[ACCESS_LOG],
        access_log_buffer=v[ACCESS_LOG_BUFFER],
        limits=limits,
        discovery=DiscoverySettings(
            destination=v[DESTINATION],
            dns_nameservers=v[DNS_NAMESERVERS],
            dns_min_ttl=v[DNS_MIN_TTL],
            dns_max_ttl=v[DNS_MAX_TTL],
            k8s_api=v[K8S_API],
            k8s_token_file=v[K8S_TOKEN_FILE],
            k8s_ca_file=v[K8S_CA_FILE],
            k8s_max_event_bytes=v[K8S_MAX_EVENT_BYTES],
            k8s_max_response_bytes=v[K8S_MAX_RESPONSE_BYTES],
            cluster_domain=v[CLUSTER_DOMAIN],
            trust_domain=v[TRUST_DOMAIN],
        ),
        balancer=BalancerSettings(
            queue_timeout=v[OUTBOUND_QUEUE_TIMEOUT],
            max_in_flight=v[OUTBOUND_MAX_IN_FLIGHT],
            failure_accrual_consecutive=v[FAILURE_ACCRUAL_CONSECUTIVE],
            failure_accrual_min_backoff=v[FAILURE_ACCRUAL_MIN_BACKOFF],
            failure_accrual_max_backoff=v[FAILURE_ACCRUAL_MAX_BACKOFF],
            ewma_default_rtt=v[EWMA_DEFAULT_RTT],
            ewma_decay=v[EWMA_DECAY],
        ),
        identity=_identity(v, sources),
        policy=PolicySettings(
            path=v[POLICY],
            default_policy=v[DEFAULT_POLICY],
            cluster_networks=v[CLUSTER_NETWORKS],
            probe_paths=v[INBOUND_PROBE_PATHS] or (),
            retry_buffer_bytes=v[RETRY_BUFFER_BYTES],
            retry_limit=v[RETRY_LIMIT],
            route_label_limit=v[ROUTE_LABEL_LIMIT],
            peer_label_limit=v[PEER_LABEL_LIMIT],
            ratelimit_identities=v[INBOUND_RATELIMIT_IDENTITIES],
            authz_cache=v[INBOUND_AUTHZ_CACHE],
            mirror_max_body_bytes=v[MIRROR_MAX_BODY_BYTES],
            mirror_max_in_flight=v[MIRROR_MAX_IN_FLIGHT],
        ),
        settings=tuple((name, render(name, v[name])) for name in SETTINGS),
        tracing=_tracing(v, env, sources),
        tap=TapSettings(
            disabled=v[TAP_DISABLED],
            listen=v[TAP_LISTEN],
            identity=v[TAP_IDENTITY],
            max_sessions=v[TAP_MAX_SESSIONS],
            buffer_bytes=v[TAP_BUFFER_BYTES],
        ),
        metrics=MetricsSettings(
            workload_labels=v[METRICS_WORKLOAD_LABELS],
            workload_namespace=v[WORKLOAD_NAMESPACE],
            workload_pod=v[WORKLOAD_POD],
            workload_kind=v[WORKLOAD_KIND],
            workload_name=v[WORKLOAD_NAME],
        ),
    )


def _tracing(v: dict[str, Any], env: Mapping[str, str], sources: Mapping[str, str]) -> TracingSettings:
    """Span export settings; the resource's attributes in Linkerd's order of precedence (later wins):
    the service name, the extra attributes, OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME."""
    identity = v[TRACE_COLLECTOR_IDENTITY]
    if identity is not None:
        # Mutual TLS needs a certificate of this proxy's own; refusing to start beats plaintext spans.
        if v[IDENTITY_NAME] is None:
            raise ConfigError(TRACE_COLLECTOR_IDENTITY, sources.get(TRACE_COLLECTOR_IDENTITY),
                              f"spans go to the collector over mutual TLS, which needs this proxy's own identity "
                              f"({IDENTITY_NAME})")
    resource: dict[str, str] = {"service.name": v[TRACE_SERVICE_NAME]}
    resource.update(v[TRACE_EXTRA_ATTRIBUTES] or ())
    otel = env.get(OTEL_RESOURCE_ATTRIBUTES, "")
    if otel.strip():
        try:
            resource.update(parse_attributes(otel))
        except ValueError as err:
            raise ConfigError(OTEL_RESOURCE_ATTRIBUTES, otel, str(err)) from None
    if env.get(OTEL_SERVICE_NAME, "").strip():
        resource["service.name"] = env[OTEL_SERVICE_NAME].strip()
    return TracingSettings(
        collector=v[TRACE_COLLECTOR],
        resource=tuple(resource.items()),
        batch_size=v[TRACE_BATCH_SIZE],
        batch_interval=v[TRACE_BATCH_INTERVAL],
        max_buffered_spans=v[TRACE_MAX_BUFFERED_SPANS],
        export_timeout=v[TRACE_EXPORT_TIMEOUT],
        collector_identity=identity,
    )


def _identity(v: dict[str, Any], sources: Mapping[str, str]) -> IdentitySettings:
    """Identity settings, checked as a whole: a name needs trust anchors and exactly one certificate source."""
    settings = IdentitySettings(
        name=v[IDENTITY_NAME],
        trust_domain=v[TRUST_DOMAIN],
        service=v[IDENTITY_SERVICE],
        token_file=v[IDENTITY_TOKEN_FILE],
        trust_anchors=v[IDENTITY_TRUST_ANCHORS],
        cert_file=v[IDENTITY_CERT_FILE],
        key_file=v[IDENTITY_KEY_FILE],
        renew_fraction=v[IDENTITY_RENEW_FRACTION],
        min_backoff=v[IDENTITY_MIN_BACKOFF],
        max_backoff=v[IDENTITY_MAX_BACKOFF],
        handshake_timeout=v[TLS_HANDSHAKE_TIMEOUT],
        session_cache=v[TLS_SESSION_CACHE],
    )
    if settings.name is None:
        return settings
    if settings.trust_anchors is None:
        raise ConfigError(IDENTITY_TRUST_ANCHORS, None, f"required when {IDENTITY_NAME} is set")
    files = (settings.cert_file is not None, settings.key_file is not None)
    if files[0] != files[1]:
        missing = IDENTITY_KEY_FILE if files[0] else IDENTITY_CERT_FILE
        raise ConfigError(missing, None, f"{IDENTITY_CERT_FILE} and {IDENTITY_KEY_FILE} go together")
    if files[0] and settings.service is not None:
        raise ConfigError(IDENTITY_SERVICE, settings.service, f"set either it or {IDENTITY_CERT_FILE}, not both")
    if not files[0]:
        if settings.service is None:
            raise ConfigError(IDENTITY_SERVICE, None,
                              f"required when {IDENTITY_NAME} is set (or give certificate files)")
        if settings.token_file is None:
            raise ConfigError(IDENTITY_TOKEN_FILE, None, f"required with {IDENTITY_SERVICE}")
    return settings


# Names read by other parts of the command (not the proxy itself), so the
# unknown-setting check does not reject them.
EXTERNAL_NAMES = frozenset({"MESHPROXY_PURE", "MESHPROXY_ANNOTATE"})
