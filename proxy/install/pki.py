"""The certificates ``meshproxy install`` prints: the identity issuer and the webhook's serving certificate.

As ``linkerd install`` does, a fresh trust anchor and issuer are made at
install time unless ``--identity-dir`` names the output of ``meshproxy
identity init``; the trust anchor's key is never printed (a fresh one is
dropped once the issuer is signed). The injector's serving certificate is a
leaf of that issuer for the webhook Service's DNS names; the
MutatingWebhookConfiguration's ``caBundle`` is the trust anchors, so the API
server verifies the chain leaf -> issuer -> anchor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from proxy.identity import ca

ROOT_LIFETIME = dt.timedelta(days=3650)
ISSUER_LIFETIME = dt.timedelta(days=365)
# Linkerd's webhook certificates last a year too; never beyond the issuer.
WEBHOOK_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class Identity:
    """What the control plane is installed with, as PEM text."""

    anchors_pem: str
    issuer_cert_pem: str
    issuer_key_pem: str
    issuer: ca.Authority


def generate(trust_domain: str, now: dt.datetime | None = None) -> Identity:
    root = ca.create_root(trust_domain, ROOT_LIFETIME, now)
    issuer = ca.create_issuer(root, trust_domain, ISSUER_LIFETIME, now)
    return Identity(ca.cert_pem(root.cert).decode(), ca.cert_pem(issuer.cert).decode(),
                    ca.key_pem(issuer.key).decode(), issuer)


def load(directory: Path) -> Identity:
    """The issuer of ``meshproxy identity init --out DIR``; ca.BadIssuer when unusable or without ca.crt."""
    issuer, anchors = ca.load_issuer(directory)
    if not anchors:
        raise ca.BadIssuer(f"{directory / ca.CA_CERT}: missing; the trust anchors are needed for the proxies")
    return Identity("".join(ca.cert_pem(a).decode() for a in anchors), ca.cert_pem(issuer.cert).decode(),
                    ca.key_pem(issuer.key).decode(), issuer)


def serving_certificate(identity: Identity, dns_names: list[str],
                        now: dt.datetime | None = None) -> tuple[str, str]:
    """(certificate chain PEM: leaf then issuer, key PEM) for a TLS server named ``dns_names``."""
    key = ca.new_key()
    leaf = ca.sign_leaf(identity.issuer, key.public_key(), dns_names[0], [x509.DNSName(n) for n in dns_names],
                        WEBHOOK_LIFETIME, now)
    return ca.cert_pem(leaf).decode() + identity.issuer_cert_pem, ca.key_pem(key).decode()
