"""Certificates and meshproxy identity settings for the mutual-TLS scenarios (meshhop, handshake).

One throwaway authority per run, made with the proxy's own ``proxy.identity.ca``
(ECDSA P-256, a root and an issuer below it), signs a leaf for each identity.
Every contender gets the same kind of files, so only the proxies differ:
the chain (leaf + issuer) and the key apart for meshproxy and nginx, and
both in one PEM for HAProxy's ``crt``. meshproxy then reads them as its
cert-manager-style file identity: no issuer process is needed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

TRUST_DOMAIN = "cluster.local"
CLIENT_ID = f"web.default.serviceaccount.identity.{TRUST_DOMAIN}"   # proxy A: the caller
SERVER_ID = f"api.default.serviceaccount.identity.{TRUST_DOMAIN}"   # proxy B: the callee
LIFETIME = dt.timedelta(days=1)

try:
    from proxy import config as _cfg

    IDENTITY_ENV = {
        "name": _cfg.IDENTITY_NAME, "anchors": _cfg.IDENTITY_TRUST_ANCHORS,
        "cert": _cfg.IDENTITY_CERT_FILE, "key": _cfg.IDENTITY_KEY_FILE,
    }
    DESTINATION_ENV = _cfg.DESTINATION
except Exception:  # the proxy is being rebuilt; these are the documented names
    IDENTITY_ENV = {
        "name": "MESHPROXY_IDENTITY_NAME", "anchors": "MESHPROXY_IDENTITY_TRUST_ANCHORS",
        "cert": "MESHPROXY_IDENTITY_CERT_FILE", "key": "MESHPROXY_IDENTITY_KEY_FILE",
    }
    DESTINATION_ENV = "MESHPROXY_DESTINATION"


@dataclass(frozen=True)
class Leaf:
    """One identity's files: ``chain`` = leaf + issuer, ``key`` alone, ``pem`` = chain + key."""

    name: str
    chain: Path
    key: Path
    pem: Path


@dataclass(frozen=True)
class MeshCerts:
    ca: Path                   # the trust anchor (root certificate)
    leaves: dict[str, Leaf]    # by identity name

    def __getitem__(self, name: str) -> Leaf:
        return self.leaves[name]


def make(directory: Path, names: tuple[str, ...] = (CLIENT_ID, SERVER_ID)) -> MeshCerts:
    """A fresh root, issuer and one leaf per name (DNS SAN = the name), written under ``directory``."""
    from cryptography import x509

    from proxy.identity import ca

    directory.mkdir(parents=True, exist_ok=True)
    root = ca.create_root(TRUST_DOMAIN, LIFETIME)
    issuer = ca.create_issuer(root, TRUST_DOMAIN, LIFETIME)
    anchors = directory / "ca.crt"
    anchors.write_bytes(ca.cert_pem(root.cert))
    leaves = {}
    for name in names:
        key = ca.new_key()
        leaf = ca.sign_leaf(issuer, key.public_key(), name, [x509.DNSName(name)], LIFETIME)
        chain_pem = ca.cert_pem(leaf) + ca.cert_pem(issuer.cert)
        short = name.split(".", 1)[0]
        files = Leaf(name, directory / f"{short}.crt", directory / f"{short}.key", directory / f"{short}.pem")
        files.chain.write_bytes(chain_pem)
        ca.write_atomically(files.key, ca.key_pem(key), 0o600)
        ca.write_atomically(files.pem, chain_pem + ca.key_pem(key), 0o600)
        leaves[name] = files
    return MeshCerts(anchors, leaves)


def identity_env(certs: MeshCerts, name: str) -> dict[str, str]:
    """meshproxy's settings for ``name`` from files (the cert-manager mode of proxy/identity/local.py)."""
    leaf = certs[name]
    return {
        IDENTITY_ENV["name"]: name,
        IDENTITY_ENV["anchors"]: str(certs.ca),
        IDENTITY_ENV["cert"]: str(leaf.chain),
        IDENTITY_ENV["key"]: str(leaf.key),
    }


def series_value(metrics_text: str, series: str) -> float:
    """The sum of the samples of exactly ``series`` (name and labels as printed), 0 when absent."""
    total = 0.0
    for line in metrics_text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            try:
                total += float(value)
            except ValueError:
                continue
    return total


def inbound_tls_connections(metrics_text: str, client_id: str) -> float:
    """A proxy's count of inbound mesh TLS connections from ``client_id`` ("" = no client certificate)."""
    series = f'tls_connections_total{{direction="inbound",tls="true",client_id="{client_id}"}}'
    return series_value(metrics_text, series)


def inbound_requests(metrics_text: str) -> float:
    """A proxy's count of HTTP requests on its inbound side, over all its label sets."""
    total = 0.0
    for line in metrics_text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("request_total{") and 'direction="inbound"' in name:
            try:
                total += float(value)
            except ValueError:
                continue
    return total


def tls_probe(port: int, ca_file: Path, server_name: str, body: bytes, host: str = "localhost") -> str:
    """One request over a fresh TLS 1.3 connection, as the load tools send it; '' when all is well.

    The server's chain must verify against ``ca_file`` for ``server_name``
    (sent as SNI), and the answer must be 200 with exactly ``body``.
    """
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    chunks: list[bytes] = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_name) as conn:
            conn.sendall(request)
            while True:
                try:
                    data = conn.recv(65536)
                except ssl.SSLEOFError:  # closed without close_notify: the answer is what came
                    break
                if not data:
                    break
                chunks.append(data)
    except (OSError, ssl.SSLError) as err:
        return f"TLS probe failed: {type(err).__name__}: {err}"
    answer = b"".join(chunks)
    head, _, got = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if not status.startswith(("HTTP/1.1 200", "HTTP/1.0 200")):
        return f"TLS probe got {status or 'no answer'!r}"
    if got != body:
        return f"TLS probe got a different body ({len(got)} bytes)"
    return ""
