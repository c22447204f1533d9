"""Checking a certificate signing request against the identity a token proved.

The CSR must carry a P-256 key, be signed by it, and name exactly the
identity: one DNS SAN equal to the identity name, optionally the identity's
SPIFFE URI, nothing else; a Common Name, when present, must be the identity
name too. Extensions other than SANs are ignored: the leaf's are chosen here.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.identity.errors import Refusal
from proxy.identity.names import Identity


def check(pem: str, identity: Identity) -> tuple[x509.CertificateSigningRequest, list[x509.GeneralName]]:
    """The parsed CSR and the SANs the leaf gets; raises Refusal."""
    try:
        req = x509.load_pem_x509_csr(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as err:
        raise Refusal("invalid_csr", f"not a PEM certificate signing request: {err}") from None
    try:
        key = req.public_key()
    except (ValueError, TypeError) as err:
        raise Refusal("wrong_key_type", f"unsupported public key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Refusal("wrong_key_type", f"the key must be ECDSA P-256, not {_describe(key)}")
    try:
        valid = req.is_signature_valid
    except Exception as err:  # an unsupported signature algorithm
        raise Refusal("bad_signature", f"cannot check the CSR signature: {err}") from None
    if not valid:
        raise Refusal("bad_signature", "the CSR is not signed by its own key")
    try:
        cns = [a.value for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        ext = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = list(ext)
    except x509.ExtensionNotFound:
        raise Refusal("name_mismatch", f"the CSR has no subjectAltName; it must name {identity.name}") from None
    except ValueError as err:  # duplicate or malformed extensions
        raise Refusal("invalid_csr", f"malformed CSR extensions: {err}") from None
    if any(cn != identity.name for cn in cns):
        raise Refusal("name_mismatch", f"CN {cns[0]!r} is not the authenticated identity {identity.name}")
    dns = [n.value for n in names if isinstance(n, x509.DNSName)]
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    others = [n for n in names if not isinstance(n, (x509.DNSName, x509.UniformResourceIdentifier))]
    if dns != [identity.name] or uris not in ([], [identity.spiffe_id]) or others:
        asked = ", ".join(str(getattr(n, "value", n)) for n in names)
        raise Refusal(
            "name_mismatch",
            f"the CSR names [{asked}]; allowed: DNS {identity.name} and optionally URI {identity.spiffe_id}",
        )
    sans: list[x509.GeneralName] = [x509.DNSName(identity.name)]
    if uris:
        sans.append(x509.UniformResourceIdentifier(identity.spiffe_id))
    return req, sans


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.lstrip("_").replace("PublicKey", "")
