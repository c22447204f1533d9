"""Which proxies ``meshproxy viz`` scrapes: admin addresses given with ``--proxy``, every meshed
endpoint of a discovery endpoints file, or every meshed pod of a cluster (``--kubernetes``), with the
workload labels known about them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from proxy.discovery.model import Address

ADMIN_PORT = 4191  # the proxy's default admin port (MESHPROXY_ADMIN_LISTEN)
# The endpoints file has no field for the admin port: an endpoint label with this key gives one
# when the proxy does not use 4191 (several proxies on one host, as in the tests).
ADMIN_PORT_LABEL = "meshproxy.io/admin-port"
# Endpoint labels that name the workload, as Linkerd's viz Prometheus relabels them (a Job is
# ``k8s_job`` there: ``job`` is Prometheus's own).
_WORKLOAD_LABELS = {"namespace": "namespace", "pod": "pod", "deployment": "deployment",
                    "statefulset": "statefulset", "daemonset": "daemonset", "replicaset": "replicaset",
                    "replicationcontroller": "replicationcontroller", "job": "k8s_job", "k8s_job": "k8s_job",
                    "cronjob": "cronjob", "serviceaccount": "serviceaccount"}


class TargetError(ValueError):
    """A ``--proxy`` address, an endpoints file or a cluster that cannot be used; the message says why, ``code``
    is the exit status (64; 69 when the Kubernetes API did not answer)."""

    def __init__(self, message: str, code: int = 64) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Target:
    """One proxy's admin address, and the workload labels known for it before scraping."""

    host: str
    port: int
    labels: tuple[tuple[str, str], ...] = field(default=())

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.hostport}/metrics"

    def name(self) -> str:
        """How a report names this proxy: its pod when known, else its admin address."""
        pod = dict(self.labels).get("pod")
        return f"{pod} ({self.hostport})" if pod and pod != self.hostport else self.hostport


def parse_proxy(text: str) -> Target:
    """``HOST:PORT`` (or ``HOST``: port 4191) of an admin listener."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or "]" in port:
        host, port = text.strip(), str(ADMIN_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise TargetError(f"--proxy {text!r}: expected HOST:PORT of a proxy's admin listener")
    return Target(host, int(port))


def from_endpoints_file(path: str) -> list[Target]:
    """Every meshed endpoint of the file (one with a ``proxy`` address): its proxy's host and the admin
    port (4191, or the endpoint's ``meshproxy.io/admin-port`` label), labelled with the workload labels
    the endpoint carries (``namespace``, ``pod``, ``deployment``...). One proxy listed under several
    services is scraped once."""
    from proxy.discovery.filespec import SpecError, parse_document

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise TargetError(f"cannot read the endpoints file {path}: {err.strerror or err}") from None
    try:
        services = parse_document(text)
    except SpecError as err:
        raise TargetError(f"invalid endpoints file {path}: {err}") from None
    found: dict[tuple[str, int], Target] = {}
    for spec in services.values():
        for endpoint in spec.snapshot.endpoints:
            if endpoint.proxy is None:
                continue
            labels = dict(endpoint.labels)
            port_text = labels.get(ADMIN_PORT_LABEL, str(ADMIN_PORT))
            if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
                raise TargetError(f"invalid endpoints file {path}: {spec.name} endpoint {_fmt(endpoint.address)}: "
                                  f"label {ADMIN_PORT_LABEL} must be a port, got {port_text!r}")
            key = (endpoint.proxy[0], int(port_text))
            workload = {_WORKLOAD_LABELS[k]: v for k, v in labels.items() if k in _WORKLOAD_LABELS}
            if key not in found:
                found[key] = Target(key[0], key[1], tuple(sorted(workload.items())))
    return list(found.values())


def add_kube_arguments(group: argparse._ActionsContainer) -> None:
    group.add_argument("--kubernetes", action="store_true",
                       help="the proxies of every meshed pod (Running, with a meshproxy or linkerd-proxy "
                            "container) of the kubeconfig's cluster (in a pod: of its service account)")
    group.add_argument("--kubeconfig", metavar="PATH", help="the kubeconfig (default $KUBECONFIG, ~/.kube/config); "
                                                            "implies --kubernetes")
    group.add_argument("--context", metavar="NAME", help="the kubeconfig context (default its current context); "
                                                         "implies --kubernetes")


def kube_wanted(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "kubernetes", False) or getattr(args, "kubeconfig", None)
                or getattr(args, "context", None))


def from_kubernetes(args: argparse.Namespace) -> list[Target]:
    """Every meshed pod's proxy (proxy/viz/kube.py), labelled with its workload."""
    from proxy.viz import kube

    try:
        return [Target(pod.ip, pod.admin_port, pod.labels) for pod in kube.pods(args)]
    except kube.KubeError as err:
        raise TargetError(str(err), err.code) from None


def _fmt(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
