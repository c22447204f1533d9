"""The endpoints file's format: strict parsing and validation into snapshots.

Pure (no I/O beyond the text given): every problem raises ``SpecError`` whose
message starts with the path of the bad field, e.g.
``services["web.default.svc.cluster.local:80"].endpoints[2].address: expected ip:port``.
Unknown keys, duplicate keys and a service address claimed twice are errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from proxy.config import parse_duration
from proxy.discovery.model import (
    PROTOCOLS,
    AccrualSettings,
    Address,
    Endpoint,
    ServiceSnapshot,
    normalize_ip,
    parse_ip_port,
    snapshot,
)

_DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$")
_SERVICE_KEYS = {"addresses", "failureAccrual", "endpoints"}
_ACCRUAL_KEYS = {"consecutiveFailures", "minBackoff", "maxBackoff"}
_ENDPOINT_KEYS = {"address", "proxy", "identity", "weight", "protocol", "labels"}


class SpecError(ValueError):
    """An invalid endpoints file; ``field`` is the path of the offending value."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}" if field else why)
        self.field = field


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str  # canonical authority, "host:port"
    host: str
    port: int
    addresses: tuple[Address, ...]  # cluster IPs that also mean this service
    snapshot: ServiceSnapshot


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                raise SpecError("", f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_document(text: str) -> dict[str, ServiceSpec]:
    """The services of an endpoints file, keyed by canonical authority; raises SpecError."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError("", f"not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if document is None:
        raise SpecError("", "the file is empty (write 'services: {}' for no services)")
    _mapping(document, "", {"services"}, required=("services",))
    services = document["services"]
    if services is None:
        services = {}
    if not isinstance(services, dict):
        raise SpecError("services", "expected a mapping of host:port to a service")
    out: dict[str, ServiceSpec] = {}
    claimed: dict[Address, str] = {}
    for key, body in services.items():
        spec = _service(key, body)
        if spec.name in out:
            raise SpecError(f'services["{key}"]', f"names the same service as another key ({spec.name})")
        for i, address in enumerate(spec.addresses):
            if address in claimed:
                raise SpecError(f'services["{key}"].addresses[{i}]', f"already an address of {claimed[address]!r}")
            claimed[address] = spec.name
        out[spec.name] = spec
    return out


def _mapping(value: object, path: str, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise SpecError(path, "expected a mapping")
    for key in value:
        if key not in allowed:
            raise SpecError(f"{path}.{key}" if path else str(key),
                            f"unknown key (expected one of {', '.join(sorted(allowed))})")
    for key in required:
        if key not in value:
            raise SpecError(f"{path}.{key}" if path else key, "required")
    return value


def _service(key: object, body: object) -> ServiceSpec:
    path = f'services["{key}"]'
    if not isinstance(key, str):
        raise SpecError(path, "the service name must be a host:port string")
    host, _, port_text = key.strip().rpartition(":")
    ip = normalize_ip(host)
    host = ip if ip is not None else host.lower().rstrip(".")
    if not (ip or _DNS_NAME.match(host)) or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise SpecError(path, "the service name must be host:port (a DNS name or IP, port 1-65535)")
    port = int(port_text)
    name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    body = _mapping(body, path, _SERVICE_KEYS, required=("endpoints",))
    addresses = body.get("addresses") or []
    if not isinstance(addresses, list):
        raise SpecError(f"{path}.addresses", "expected a list of ip:port")
    parsed_addresses = tuple(_ip_port(a, f"{path}.addresses[{i}]") for i, a in enumerate(addresses))
    accrual = _accrual(body.get("failureAccrual"), f"{path}.failureAccrual")
    endpoints = body["endpoints"]
    if endpoints is None:
        endpoints = []
    if not isinstance(endpoints, list):
        raise SpecError(f"{path}.endpoints", "expected a list of endpoints")
    parsed: list[Endpoint] = []
    seen: set[Address] = set()
    for i, item in enumerate(endpoints):
        endpoint = _endpoint(item, f"{path}.endpoints[{i}]")
        if endpoint.address in seen:
            raise SpecError(f"{path}.endpoints[{i}].address", "duplicate endpoint address")
        seen.add(endpoint.address)
        parsed.append(endpoint)
    return ServiceSpec(name, host, port, parsed_addresses, snapshot(name, parsed, accrual))


def _ip_port(value: object, path: str) -> Address:
    try:
        return parse_ip_port(value)
    except ValueError as err:
        raise SpecError(path, f"{err}, got {value!r}") from None


def _accrual(value: object, path: str) -> AccrualSettings:
    if value is None:
        return AccrualSettings()
    value = _mapping(value, path, _ACCRUAL_KEYS)
    failures = value.get("consecutiveFailures")
    if failures is not None and (isinstance(failures, bool) or not isinstance(failures, int) or failures <= 0):
        raise SpecError(f"{path}.consecutiveFailures", f"expected a positive integer, got {failures!r}")
    low = _duration(value.get("minBackoff"), f"{path}.minBackoff")
    high = _duration(value.get("maxBackoff"), f"{path}.maxBackoff")
    if low is not None and high is not None and low > high:
        raise SpecError(f"{path}.minBackoff", "must not exceed maxBackoff")
    return AccrualSettings(failures, low, high)


def _duration(value: object, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(path, f"expected a duration such as 1s or 250ms, got {value!r}")
    try:
        return parse_duration(str(value))
    except ValueError:
        raise SpecError(path, f"expected a duration such as 1s or 250ms, got {value!r}") from None


def _endpoint(value: object, path: str) -> Endpoint:
    value = _mapping(value, path, _ENDPOINT_KEYS, required=("address",))
    address = _ip_port(value["address"], f"{path}.address")
    proxy = value.get("proxy")
    proxy = None if proxy is None else _ip_port(proxy, f"{path}.proxy")
    identity = value.get("identity")
    if identity is not None and (not isinstance(identity, str) or not _DNS_NAME.match(identity)):
        raise SpecError(f"{path}.identity", f"expected a DNS-like identity name, got {identity!r}")
    weight = value.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 < weight <= 1_000_000:
        raise SpecError(f"{path}.weight", f"expected an integer 1-1000000, got {weight!r}")
    protocol = value.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise SpecError(f"{path}.protocol", f"expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    labels = value.get("labels") or {}
    if not isinstance(labels, dict):
        raise SpecError(f"{path}.labels", "expected a mapping of strings")
    for k, v in labels.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (str, int)):
            raise SpecError(f"{path}.labels.{k}", f"expected a string value, got {v!r}")
    return Endpoint(address, proxy, identity, weight, protocol, tuple(sorted((k, str(v)) for k, v in labels.items())))
