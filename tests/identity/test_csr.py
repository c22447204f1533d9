"""CSR checks: P-256 only, self-signed, and naming exactly the authenticated identity."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from proxy.identity import ca, csr
from proxy.identity.errors import Refusal

from .support import DB, WEB, csr_pem, identity_csr, tamper


def _refused(pem: str, code: str, identity=WEB) -> Refusal:
    with pytest.raises(Refusal) as info:
        csr.check(pem, identity)
    assert info.value.code == code
    return info.value


def test_accepts_dns_and_spiffe_or_dns_alone():
    key = ca.new_key()
    _, sans = csr.check(identity_csr(key), WEB)
    assert sans == [x509.DNSName(WEB.name), x509.UniformResourceIdentifier(WEB.spiffe_id)]
    _, sans = csr.check(identity_csr(key, spiffe=False), WEB)
    assert sans == [x509.DNSName(WEB.name)]
    # No Common Name at all is fine.
    _, sans = csr.check(csr_pem(key, None, [WEB.name]), WEB)
    assert sans == [x509.DNSName(WEB.name)]


@pytest.mark.parametrize("key", [
    pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
    pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa"),
    pytest.param(lambda: ed25519.Ed25519PrivateKey.generate(), id="ed25519"),
])
def test_wrong_key_type(key):
    refusal = _refused(identity_csr(key()), "wrong_key_type")
    assert refusal.status == 400 and "P-256" in refusal.message


def test_bad_signature():
    assert _refused(tamper(identity_csr(ca.new_key())), "bad_signature").status == 400


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(cn=WEB.name, dns=[DB.name]), id="other-dns"),
    pytest.param(dict(cn=WEB.name, dns=[WEB.name, "evil.example.com"]), id="extra-dns"),
    pytest.param(dict(cn=WEB.name, dns=[WEB.name, WEB.name]), id="dns-twice"),
    pytest.param(dict(cn=WEB.name, dns=[WEB.name], uris=[DB.spiffe_id]), id="other-spiffe"),
    pytest.param(dict(cn=WEB.name, dns=[WEB.name], uris=[WEB.spiffe_id, "https://x"]), id="extra-uri"),
    pytest.param(dict(cn=WEB.name, dns=[WEB.name], ips=["10.0.0.1"]), id="ip-san"),
    pytest.param(dict(cn=WEB.name, dns=[], uris=[WEB.spiffe_id]), id="uri-only"),
    pytest.param(dict(cn=DB.name, dns=[WEB.name]), id="cn-mismatch"),
    pytest.param(dict(cn=WEB.name, no_san=True), id="no-san"),
])
def test_name_mismatch(kwargs):
    assert _refused(csr_pem(ca.new_key(), **kwargs), "name_mismatch").status == 403


def test_not_a_csr():
    assert _refused("hello", "invalid_csr").status == 400
    cert_pem = ca.cert_pem(ca.create_root("cluster.local", ca.CLOCK_SKEW * 10).cert).decode()
    _refused(cert_pem, "invalid_csr")
