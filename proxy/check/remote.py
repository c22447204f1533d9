"""Checks of what the proxy depends on elsewhere: the identity issuer and the
discovery source (endpoints file, DNS, Kubernetes API)."""

from __future__ import annotations

import socket
import ssl
import urllib.parse
from pathlib import Path

from proxy.check.results import Result, fail, ok, skip
from proxy.config import Config


def issuer(cfg: Config, timeout: float) -> Result:
    """TCP + TLS to MESHPROXY_IDENTITY_SERVICE, verified with the trust anchors."""
    check, title = "issuer", "identity issuer"
    ident = cfg.identity
    if ident.name is None:
        return skip(check, title, "no identity configured")
    if ident.service is None:
        return skip(check, title, "certificates come from files (MESHPROXY_IDENTITY_CERT_FILE), not an issuer")
    url = urllib.parse.urlsplit(ident.service)
    host, port = url.hostname or "", url.port or 443
    try:
        ctx = ssl.create_default_context(cafile=ident.trust_anchors)
    except (OSError, ssl.SSLError) as err:
        return fail(check, title, f"cannot read the trust anchors {ident.trust_anchors}: {err}",
                    "MESHPROXY_IDENTITY_TRUST_ANCHORS must name a readable PEM file")
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                version = tls.version()
    except ssl.SSLCertVerificationError as err:
        return fail(check, title, f"{ident.service}: its certificate does not verify: {err.verify_message}",
                    "the issuer's serving certificate must chain to the trust anchors and name this host "
                    "(meshproxy identity serve --server-name)")
    except (OSError, ssl.SSLError) as err:
        return fail(check, title, f"cannot reach {ident.service}: {err}",
                    "is meshproxy identity serve running and reachable from here?")
    return ok(check, title, f"{ident.service} reachable ({version}, certificate verified)")


def token_file(cfg: Config) -> Result:
    check, title = "identity-token", "identity token"
    ident = cfg.identity
    if ident.name is None or ident.service is None:
        return skip(check, title, "no issuer configured")
    path = Path(ident.token_file or "")
    try:
        size = len(path.read_bytes().strip())
    except OSError as err:
        return fail(check, title, f"cannot read {path}: {err.strerror}",
                    "MESHPROXY_IDENTITY_TOKEN_FILE must be readable by the proxy's user")
    if size == 0:
        return fail(check, title, f"{path} is empty", "write the pod's token into it")
    return ok(check, title, f"{path} readable ({size} bytes)")


def discovery(cfg: Config, timeout: float) -> Result:
    check, title = "discovery", "discovery"
    destination = cfg.discovery.destination
    if destination is None:
        return skip(check, title, "no discovery configured (MESHPROXY_DESTINATION unset): destinations pass through")
    if destination.startswith("file://"):
        return _file(destination[len("file://"):])
    if destination == "dns":
        return _dns(cfg, timeout)
    return _k8s(cfg, timeout)


def _file(path: str) -> Result:
    from proxy.discovery.filespec import SpecError, parse_document

    check, title = "discovery", "discovery file"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        return fail(check, title, f"cannot read {path}: {err.strerror}",
                    "the endpoints file must exist and be readable")
    try:
        services = parse_document(text)
    except SpecError as err:
        return fail(check, title, f"{path}: {err}", "fix the file; the proxy keeps the last good version meanwhile")
    return ok(check, title, f"{path} parses: {len(services)} service{'s' if len(services) != 1 else ''}")


def _dns(cfg: Config, timeout: float) -> Result:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.resolver

    check, title = "discovery", "discovery DNS"
    if cfg.discovery.dns_nameservers:
        servers = [(s.host, s.port) for s in cfg.discovery.dns_nameservers]
    else:
        try:
            # From resolv.conf: addresses, never dnspython's Nameserver objects.
            servers = [(ns, 53) for ns in dns.resolver.Resolver(configure=True).nameservers if isinstance(ns, str)]
        except dns.exception.DNSException as err:
            return fail(check, title, f"no DNS servers: {err}",
                        "check /etc/resolv.conf or set MESHPROXY_DNS_NAMESERVERS")
    name = f"{cfg.discovery.cluster_domain}."
    query = dns.message.make_query(name, "SOA")
    errors = []
    for host, port in servers:
        try:
            response = dns.query.udp(query, host, port=port, timeout=timeout)
        except (dns.exception.DNSException, OSError) as err:
            errors.append(f"{host}:{port}: {err or type(err).__name__}")
            continue
        rcode = dns.rcode.to_text(response.rcode())
        return ok(check, title, f"{host}:{port} answers ({rcode} for {name})")
    return fail(check, title, "no DNS server answered: " + "; ".join(errors),
                "check the resolver (MESHPROXY_DNS_NAMESERVERS or /etc/resolv.conf)")


def _k8s(cfg: Config, timeout: float) -> Result:
    from proxy.check import kube

    check, title = "discovery", "discovery Kubernetes API"
    try:
        client = kube.Client.from_settings(cfg.discovery, timeout)
    except ValueError as err:
        return fail(check, title, f"MESHPROXY_K8S_API {err}", "set MESHPROXY_K8S_API to the API server's URL")
    if client is None:
        return fail(check, title, "MESHPROXY_K8S_API unset and not in a cluster (no KUBERNETES_SERVICE_HOST)",
                    "set MESHPROXY_K8S_API, or run inside the cluster")
    api = client.url
    try:
        status, _ = client.raw("GET", "/api/v1/services?limit=1")
    except kube.ApiUnavailable as err:
        return fail(check, title, f"cannot reach {err}", "check MESHPROXY_K8S_API, the network and the CA file")
    if status in (401, 403):
        return fail(check, title, f"{api} answered {status} to a list of services",
                    "the proxy's ServiceAccount needs list/watch on services and endpointslices and get on pods")
    if status != 200:
        return fail(check, title, f"{api} answered {status}", "check MESHPROXY_K8S_API")
    return ok(check, title, f"{api} reachable, services listable")
