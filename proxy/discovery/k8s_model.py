"""Kubernetes objects -> the compact facts discovery keeps, and those facts -> endpoints.

Pure functions over the API's JSON (dicts), so the mapping rules are tested
without a server: which Service ports and cluster IPs name a service, which
EndpointSlice endpoints serve it and on which port, and what a Pod says
about identity and meshing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config import PortSet, parse_duration, parse_port_set
from proxy.discovery.model import AccrualSettings, Endpoint, normalize_ip
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.discovery.k8s")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
INJECT_ANNOTATION = "meshproxy.io/inject"
PROXY_CONTAINER = "meshproxy"
PROXY_INBOUND_PORT = 4143
OPAQUE_PORTS_ANNOTATION = "config.meshproxy.io/opaque-ports"
ACCRUAL_PREFIX = "balancer.meshproxy.io/failure-accrual-consecutive-"
_APP_PROTOCOLS = {"kubernetes.io/h2c": "h2", "h2c": "h2", "grpc": "h2", "http": "http1",
                  "kubernetes.io/ws": "http1"}


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str | None
    app_protocol: str | None


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]  # TCP only: the proxy carries nothing else
    opaque_ports: PortSet
    accrual: AccrualSettings

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    ip: str
    pod: tuple[str, str] | None  # (namespace, name) from targetRef
    pod_uid: str | None
    zone: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class SliceInfo:
    service: tuple[str, str]
    ports: tuple[tuple[str, int, str | None], ...]  # (name, port, appProtocol), TCP only
    endpoints: tuple[SliceEndpoint, ...]  # ready ones only


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    service_account: str | None
    meshed: bool
    proxy_port: int
    opaque_ports: PortSet
    # The sidecar has an identity (mutual TLS to it); False when injection turned identity off.
    has_identity: bool = True


def service_info(obj: dict) -> ServiceInfo | None:
    """None for services that are not endpoint sets (ExternalName)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
    cluster_ips = tuple(ip for ip in (normalize_ip(i) for i in ips if i and i != "None") if ip)
    ports = tuple(ServicePort(p.get("name") or "", int(p["port"]), p.get("targetPort"), p.get("appProtocol"))
                  for p in spec.get("ports") or () if p.get("protocol", "TCP") == "TCP" and "port" in p)
    annotations = meta.get("annotations") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    return ServiceInfo(meta.get("namespace", ""), meta.get("name", ""), cluster_ips, ports,
                       _opaque_ports(annotations, where), _accrual(annotations, where))


def slice_info(obj: dict) -> SliceInfo | None:
    """None for slices of no service, or of FQDN addresses (nothing to connect to directly)."""
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service or obj.get("addressType") not in ("IPv4", "IPv6"):
        return None
    ports = tuple((p.get("name") or "", int(p["port"]), p.get("appProtocol"))
                  for p in obj.get("ports") or () if p.get("protocol", "TCP") == "TCP" and p.get("port") is not None)
    endpoints = []
    for ep in obj.get("endpoints") or ():
        # A nil ready condition means unknown, which the API asks consumers to treat as ready.
        if (ep.get("conditions") or {}).get("ready") is False or not ep.get("addresses"):
            continue
        ip = normalize_ip(ep["addresses"][0])  # the addresses are fungible: the first will do
        if ip is None:
            continue
        ref = ep.get("targetRef") or {}
        pod = (ref.get("namespace") or meta.get("namespace", ""), ref["name"]) if ref.get("kind") == "Pod" else None
        endpoints.append(SliceEndpoint(ip, pod, ref.get("uid") if pod else None, ep.get("zone"), ep.get("nodeName")))
    return SliceInfo((meta.get("namespace", ""), service), ports, tuple(endpoints))


def pod_info(obj: dict) -> PodInfo:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    annotations = meta.get("annotations") or {}
    # Injected as a native sidecar (an init container that keeps running), or
    # by hand as an ordinary container.
    containers = [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
    proxy = next((c for c in containers if c.get("name") == PROXY_CONTAINER), None)
    meshed = proxy is not None or annotations.get(INJECT_ANNOTATION) == "enabled"
    port = PROXY_INBOUND_PORT
    env_names = set()
    for env in (proxy or {}).get("env") or ():
        env_names.add(env.get("name"))
        if env.get("name") == "MESHPROXY_INBOUND_LISTEN" and str(env.get("value", "")).rpartition(":")[2].isdigit():
            port = int(str(env["value"]).rpartition(":")[2])
    # A sidecar seen without MESHPROXY_IDENTITY_NAME speaks plaintext: asking
    # it for mutual TLS would only fail every request.
    has_identity = proxy is None or "MESHPROXY_IDENTITY_NAME" in env_names
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    return PodInfo(meta.get("uid", ""), spec.get("serviceAccountName") or spec.get("serviceAccount") or "default",
                   meshed, port, _opaque_ports(annotations, where), has_identity)


def target_port(service_port: ServicePort, slice_: SliceInfo) -> tuple[int, str | None] | None:
    """The slice's port for this Service port: by port name, else a numeric targetPort."""
    for name, number, app_protocol in slice_.ports:
        if name == service_port.name:
            return number, app_protocol or service_port.app_protocol
    if isinstance(service_port.target_port, int):
        return service_port.target_port, service_port.app_protocol
    return None


def endpoint(service: ServiceInfo, service_port: ServicePort, ep: SliceEndpoint, port: int,
             app_protocol: str | None, pod: PodInfo | None, trust_domain: str) -> Endpoint:
    meshed = pod is not None and pod.meshed
    protocol: str | None
    if port in service.opaque_ports or service_port.port in service.opaque_ports or (
            pod is not None and port in pod.opaque_ports):
        protocol = "opaque"
    else:
        protocol = _APP_PROTOCOLS.get((app_protocol or "").lower())
    labels = {"namespace": service.namespace, "service": service.name}
    if ep.pod is not None:
        labels["pod"] = ep.pod[1]
    if ep.zone:
        labels["zone"] = ep.zone
    if ep.node:
        labels["node"] = ep.node
    if pod is not None and pod.service_account:
        labels["serviceaccount"] = pod.service_account
    identity = (f"{pod.service_account}.{ep.pod[0]}.serviceaccount.identity.{trust_domain}"
                if meshed and pod is not None and pod.has_identity and ep.pod is not None else None)
    proxy_address = (ep.ip, pod.proxy_port) if meshed and pod is not None else None
    return Endpoint((ep.ip, port), proxy_address, identity, 1, protocol, tuple(sorted(labels.items())))


def _opaque_ports(annotations: dict, where: str) -> PortSet:
    text = annotations.get(OPAQUE_PORTS_ANNOTATION)
    if not text:
        return PortSet(())
    try:
        return parse_port_set(text)
    except ValueError as err:
        log.warning("bad opaque-ports annotation ignored", object=where, value=text, error=str(err))
        return PortSet(())


def _accrual(annotations: dict, where: str) -> AccrualSettings:
    values: dict[str, Any] = {}  # AccrualSettings fields by name
    for field, key, parse in (("consecutive_failures", "max-failures", int),
                              ("min_backoff", "min-penalty", parse_duration),
                              ("max_backoff", "max-penalty", parse_duration)):
        text = annotations.get(ACCRUAL_PREFIX + key)
        if text is None:
            continue
        try:
            value = parse(str(text))
            if field == "consecutive_failures" and value <= 0:
                raise ValueError("must be positive")
            values[field] = value
        except ValueError as err:
            log.warning("bad failure-accrual annotation ignored", object=where, key=ACCRUAL_PREFIX + key,
                        value=text, error=str(err))
    return AccrualSettings(**values)
