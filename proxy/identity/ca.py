"""The certificate authority: trust anchor and issuer creation, PEM files, leaf signing.

All keys are ECDSA P-256 signed with SHA-256. The trust anchor (root) may sign
one level of CA below it (the issuer, pathLen 0), and the issuer signs only
end-entity certificates. Times are passed in so tests can move the clock.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, ISSUER_CERT, ISSUER_KEY = "ca.crt", "ca.key", "issuer.crt", "issuer.key"
FILES = (CA_CERT, CA_KEY, ISSUER_CERT, ISSUER_KEY)
# Peers' clocks differ a little; a certificate valid from "now" would be
# rejected by a peer whose clock is behind.
CLOCK_SKEW = dt.timedelta(seconds=60)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _serial() -> int:
    return secrets.randbits(127) | 1  # positive, non-zero, at most 16 bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_builder(cn: str, key, issuer_name: x509.Name, issuer_key, path_length: int,
                not_before: dt.datetime, not_after: dt.datetime) -> x509.CertificateBuilder:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )


@dataclass(frozen=True, slots=True)
class Authority:
    """A signing certificate and its key (the trust anchor or the issuer)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc


def create_root(trust_domain: str, lifetime: dt.timedelta, now: dt.datetime | None = None) -> Authority:
    now = now or utcnow()
    key = new_key()
    name = _name(f"root.{trust_domain}")
    builder = _ca_builder(f"root.{trust_domain}", key, name, key, 1, now - CLOCK_SKEW, now + lifetime)
    cert = builder.sign(key, hashes.SHA256())
    return Authority(cert, key)


def create_issuer(root: Authority, trust_domain: str, lifetime: dt.timedelta, now: dt.datetime | None = None,
                  not_before: dt.datetime | None = None) -> Authority:
    """The intermediate CA, never valid beyond the root."""
    now = now or utcnow()
    key = new_key()
    not_after = min(now + lifetime, root.not_after)
    start = not_before or max(now - CLOCK_SKEW, root.not_before)
    cert = _ca_builder(f"identity.{trust_domain}", key, root.cert.subject, root.key, 0, start, not_after).sign(
        root.key, hashes.SHA256()
    )
    return Authority(cert, key)


def sign_leaf(issuer: Authority, public_key, common_name: str, sans: list[x509.GeneralName],
              lifetime: dt.timedelta, now: dt.datetime | None = None) -> x509.Certificate:
    """An end-entity certificate for mTLS (serverAuth and clientAuth), never valid beyond the issuer."""
    now = now or utcnow()
    not_after = min(now + lifetime, issuer.not_after)
    not_before = max(now - CLOCK_SKEW, issuer.not_before)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def host_sans(host: str) -> list[x509.GeneralName]:
    """SANs for a serving certificate of ``host`` (an IP or a DNS name); a
    wildcard address is reached as localhost in practice, so it gets those names."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return [x509.DNSName(host)]
    if addr.is_unspecified:
        return [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]
    return [x509.IPAddress(addr)]


# ---- files -------------------------------------------------------------------


class FilesExist(Exception):
    def __init__(self, paths: list[Path]) -> None:
        super().__init__(", ".join(str(p) for p in paths))
        self.paths = paths


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file beside ``path`` with ``mode`` from the
    start (a key is never readable by others, not even briefly), then rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_authorities(out: Path, root: Authority, issuer: Authority, force: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FILES]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise FilesExist(existing)
    contents = (cert_pem(root.cert), key_pem(root.key), cert_pem(issuer.cert), key_pem(issuer.key))
    # Keys first: a directory never holds a new certificate beside an old key.
    for path, data in sorted(zip(paths, contents), key=lambda pd: not pd[0].name.endswith(".key")):
        write_atomically(path, data, 0o600 if path.name.endswith(".key") else 0o644)
    dir_fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return paths


class BadIssuer(Exception):
    """The issuer directory cannot be used (missing, unreadable, mismatched files)."""


def load_issuer(directory: Path) -> tuple[Authority, list[x509.Certificate]]:
    """The issuer and the trust anchors beside it (``ca.crt``, may be absent)."""
    try:
        cert = x509.load_pem_x509_certificate((directory / ISSUER_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / ISSUER_KEY).read_bytes(), password=None)
    except OSError as err:
        raise BadIssuer(f"{err.filename}: {err.strerror}") from None
    except (ValueError, TypeError) as err:
        raise BadIssuer(f"{directory}: not a PEM certificate and unencrypted key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BadIssuer(f"{directory / ISSUER_KEY}: the issuer key must be ECDSA P-256")
    cert_key = cert.public_key()
    if (not isinstance(cert_key, ec.EllipticCurvePublicKey)
            or cert_key.public_numbers() != key.public_key().public_numbers()):
        raise BadIssuer(f"{directory}: {ISSUER_KEY} does not belong to {ISSUER_CERT}")
    anchors: list[x509.Certificate] = []
    ca_path = directory / CA_CERT
    if ca_path.exists():
        try:
            anchors = x509.load_pem_x509_certificates(ca_path.read_bytes())
        except (OSError, ValueError) as err:
            raise BadIssuer(f"{ca_path}: not PEM certificates: {err}") from None
        if not any(_signed_by(cert, a) for a in anchors):
            raise BadIssuer(f"{directory / ISSUER_CERT} is not signed by a trust anchor in {ca_path}")
    return Authority(cert, key), anchors


def _signed_by(cert: x509.Certificate, anchor: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(anchor)
    except Exception:  # ValueError, TypeError or InvalidSignature
        return False
    return True
