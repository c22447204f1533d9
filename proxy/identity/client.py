"""Obtaining a certificate from the issuer service: the proxy's side of ``POST /v1/certify``.

The CSR names the identity (DNS SAN) and its SPIFFE ID (URI SAN) for the
caller's P-256 key. The service's TLS certificate is verified against the
trust anchors (TLS 1.3 only), and so is the returned leaf, which must carry
the caller's key and identity, before anything is returned.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from proxy.identity import httpio, names


class CertifyError(Exception):
    """The certificate could not be obtained. ``code`` is the service's error
    code when it answered one, else ``unavailable`` (network, TLS) or
    ``bad_response`` (an answer that does not hold up)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def build_csr(key: ec.EllipticCurvePrivateKey, identity: names.Identity) -> bytes:
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(identity.name),
                                         x509.UniformResourceIdentifier(identity.spiffe_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return req.public_bytes(serialization.Encoding.PEM)


def client_ssl_context(trust_anchors_pem: str | bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=trust_anchors_pem.decode() if isinstance(trust_anchors_pem, bytes)
                              else trust_anchors_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def request_certificate(service_url: str, token: str, key: ec.EllipticCurvePrivateKey, identity_name: str,
                              trust_domain: str, trust_anchors_pem: str | bytes,
                              timeout: float = 10.0) -> tuple[str, list[str], dt.datetime]:
    """``(leaf_pem, chain_pems, not_after)`` for ``key``; raises CertifyError
    (or ValueError for a bad identity name or key)."""
    identity = names.parse(identity_name, trust_domain)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the key must be ECDSA P-256")
    anchors_pem = trust_anchors_pem.encode() if isinstance(trust_anchors_pem, str) else trust_anchors_pem
    anchors = x509.load_pem_x509_certificates(anchors_pem)
    body = json.dumps({"token": token, "csr": build_csr(key, identity).decode()}).encode()
    url = service_url.rstrip("/") + "/v1/certify"
    try:
        status, _, raw = await httpio.request(url, "POST", body, {"content-type": "application/json"},
                                              client_ssl_context(anchors_pem), timeout)
    except (OSError, ssl.SSLError, TimeoutError, httpio.HttpError) as err:
        raise CertifyError("unavailable", f"{url}: {err or type(err).__name__}") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise CertifyError("bad_response", f"HTTP {status}, not JSON: {raw[:200]!r}", status) from None
    if status != 200:
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            raise CertifyError(doc["error"], str(doc.get("message", "")), status)
        raise CertifyError("bad_response", f"HTTP {status}: {raw[:200]!r}", status)
    return _check_answer(doc, key, identity, anchors)


def _check_answer(doc: object, key: ec.EllipticCurvePrivateKey, identity: names.Identity,
                  anchors: list[x509.Certificate]) -> tuple[str, list[str], dt.datetime]:
    try:
        leaf_pem = doc["certificate"]  # type: ignore[index]
        chain_pems = list(doc["chain"])  # type: ignore[index]
        leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in chain_pems]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CertifyError("bad_response", f"malformed certificate answer: {err}") from None
    leaf_key = leaf.public_key()
    if (not isinstance(leaf_key, ec.EllipticCurvePublicKey)
            or leaf_key.public_numbers() != key.public_key().public_numbers()):
        raise CertifyError("bad_response", "the certificate is not for our key")
    verifier = PolicyBuilder().store(Store(anchors)).build_server_verifier(x509.DNSName(identity.name))
    try:
        verifier.verify(leaf, chain)
    except VerificationError as err:
        raise CertifyError("bad_response",
                           f"the certificate does not verify against the trust anchors: {err}") from None
    return leaf_pem, chain_pems, leaf.not_valid_after_utc
