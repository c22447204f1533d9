"""Helpers for the identity tests: a throwaway CA, CSRs of every shape, and the
issuer service running in-process on a loopback port."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from proxy.identity import ca, names, server

TD = "cluster.local"
WEB = names.make("web", "default", TD)
DB = names.make("db", "prod", TD)
DAY = dt.timedelta(days=1)
YEAR = dt.timedelta(days=365)


def authorities(issuer_life: dt.timedelta = YEAR, now: dt.datetime | None = None,
                not_before: dt.datetime | None = None) -> tuple[ca.Authority, ca.Authority]:
    root = ca.create_root(TD, 10 * YEAR, now=(now or ca.utcnow()) - DAY)
    return root, ca.create_issuer(root, TD, issuer_life, now=now, not_before=not_before)


def csr_pem(key, cn: str | None = None, dns: list[str] | None = None, uris: list[str] | None = None,
            ips: list[str] = (), no_san: bool = False) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    )
    if not no_san:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in (dns or [])]
        sans += [x509.UniformResourceIdentifier(u) for u in (uris or [])]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def identity_csr(key, identity: names.Identity = WEB, spiffe: bool = True) -> str:
    return csr_pem(key, identity.name, [identity.name], [identity.spiffe_id] if spiffe else [])


def tamper(pem: str) -> str:
    """The same CSR with one bit of its signature flipped."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


@contextlib.asynccontextmanager
async def running(issuer: ca.Authority, checker, root: ca.Authority, leaf_lifetime: dt.timedelta = DAY,
                  clock=ca.utcnow):
    """``(url, service, anchors_pem)`` for the service on 127.0.0.1, with a
    serving certificate issued by ``issuer`` for 127.0.0.1."""
    service = server.IssuerService(issuer, checker, TD, leaf_lifetime, clock=clock)
    ctx = server.issued_ssl_context(issuer, ca.host_sans("127.0.0.1"))
    srv = await server.start(service, "127.0.0.1", 0, ctx)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}", service, ca.cert_pem(root.cert).decode()
    finally:
        srv.close()
        await srv.wait_closed()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
