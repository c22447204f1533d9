"""``meshproxy identity init`` and the CA module: files, modes, chain validity, lifetimes."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from proxy import cli
from proxy.identity import ca

from .support import DAY, TD, WEB, YEAR, authorities


def _load(out):
    certs = {n: x509.load_pem_x509_certificate((out / n).read_bytes()) for n in (ca.CA_CERT, ca.ISSUER_CERT)}
    keys = {n: serialization.load_pem_private_key((out / n).read_bytes(), None) for n in (ca.CA_KEY, ca.ISSUER_KEY)}
    return certs, keys


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_init_writes_four_pem_files_with_private_keys(tmp_path, capsys):
    out = tmp_path / "ca"
    assert cli.main(["identity", "init", "--trust-domain", "example.org", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "issuer.crt", "issuer.key"]
    for name in ("ca.key", "issuer.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    for name in ("ca.crt", "issuer.crt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644
    certs, keys = _load(out)
    root, issuer = certs["ca.crt"], certs["issuer.crt"]
    assert _cn(root) == "root.example.org" and root.issuer == root.subject
    assert _cn(issuer) == "identity.example.org" and issuer.issuer == root.subject
    for cert, key in ((root, keys["ca.key"]), (issuer, keys["issuer.key"])):
        assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issuer.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    # No temporary files left behind.
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_default_and_configured_lifetimes(tmp_path):
    out = tmp_path / "default"
    assert cli.main(["identity", "init", "--out", str(out)]) == 0
    certs, _ = _load(out)
    root, issuer = certs["ca.crt"], certs["issuer.crt"]
    assert _cn(root) == f"root.{TD}"
    life = lambda c: c.not_valid_after_utc - ca.utcnow()  # noqa: E731
    assert dt.timedelta(days=3649) < life(root) <= dt.timedelta(hours=87600)
    assert dt.timedelta(days=364) < life(issuer) <= dt.timedelta(hours=8760)
    out = tmp_path / "short"
    assert cli.main(["identity", "init", "--out", str(out), "--root-lifetime", "48h", "--issuer-lifetime", "90m"]) == 0
    certs, _ = _load(out)
    assert dt.timedelta(hours=47) < life(certs["ca.crt"]) <= dt.timedelta(hours=48)
    assert dt.timedelta(minutes=89) < life(certs["issuer.crt"]) <= dt.timedelta(minutes=90)


def test_init_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    out = tmp_path / "ca"
    assert cli.main(["identity", "init", "--out", str(out)]) == 0
    before = (out / "ca.key").read_bytes()
    capsys.readouterr()
    assert cli.main(["identity", "init", "--out", str(out)]) == 73
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "ca.key").read_bytes() == before
    assert cli.main(["identity", "init", "--out", str(out), "--force"]) == 0
    assert (out / "ca.key").read_bytes() != before
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("argv", [
    ["--root-lifetime", "soon"],
    ["--issuer-lifetime", "0"],
    ["--root-lifetime", "1h", "--issuer-lifetime", "2h"],
    ["--trust-domain", "Not A Domain"],
])
def test_init_bad_arguments_exit_64(tmp_path, argv, capsys):
    assert cli.main(["identity", "init", "--out", str(tmp_path / "x"), *argv]) == 64
    assert capsys.readouterr().err.startswith("meshproxy identity: ")
    assert not (tmp_path / "x").exists()


def test_chain_verifies_with_cryptography_x509_verification(tmp_path):
    out = tmp_path / "ca"
    assert cli.main(["identity", "init", "--out", str(out)]) == 0
    certs, keys = _load(out)
    issuer = ca.Authority(certs["issuer.crt"], keys["issuer.key"])
    leaf_key = ca.new_key()
    sans = [x509.DNSName(WEB.name), x509.UniformResourceIdentifier(WEB.spiffe_id)]
    leaf = ca.sign_leaf(issuer, leaf_key.public_key(), WEB.name, sans, DAY)
    store = Store([certs["ca.crt"]])
    chain = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(WEB.name)).verify(leaf, [issuer.cert])
    assert chain == [leaf, issuer.cert, certs["ca.crt"]]
    client_chain = PolicyBuilder().store(store).build_client_verifier().verify(leaf, [issuer.cert])
    assert client_chain.subjects == [x509.DNSName(WEB.name), x509.UniformResourceIdentifier(WEB.spiffe_id)]
    # Leaf profile: not a CA, digitalSignature only, serverAuth + clientAuth.
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.key_encipherment
    assert set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # The issuer may not sign another CA (pathLen 0): a CA below it fails.
    sub = ca.create_issuer(issuer, TD, DAY)
    sub_leaf = ca.sign_leaf(sub, leaf_key.public_key(), WEB.name, sans, DAY)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName(WEB.name)).verify(
            sub_leaf, [sub.cert, issuer.cert])
    # A different root does not verify it.
    other_root, _ = authorities()
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([other_root.cert])).build_server_verifier(x509.DNSName(WEB.name)).verify(
            leaf, [issuer.cert])


def test_leaf_never_outlives_issuer_and_issuer_never_outlives_root():
    root, issuer = authorities(issuer_life=dt.timedelta(hours=2))
    leaf = ca.sign_leaf(issuer, ca.new_key().public_key(), WEB.name, [x509.DNSName(WEB.name)], DAY)
    assert leaf.not_valid_after_utc == issuer.not_after
    short_root = ca.create_root(TD, dt.timedelta(hours=1))
    assert ca.create_issuer(short_root, TD, YEAR).not_after == short_root.not_after


def test_load_issuer_checks_its_files(tmp_path):
    root, issuer = authorities()
    other_root, other_issuer = authorities()
    assert ca.write_authorities(tmp_path, root, issuer)
    loaded, anchors = ca.load_issuer(tmp_path)
    assert loaded.cert == issuer.cert and anchors == [root.cert]
    (tmp_path / "issuer.key").write_bytes(ca.key_pem(other_issuer.key))
    with pytest.raises(ca.BadIssuer, match="does not belong"):
        ca.load_issuer(tmp_path)
    (tmp_path / "issuer.key").write_bytes(ca.key_pem(issuer.key))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem(other_root.cert))
    with pytest.raises(ca.BadIssuer, match="not signed by a trust anchor"):
        ca.load_issuer(tmp_path)
    (tmp_path / "issuer.crt").unlink()
    with pytest.raises(ca.BadIssuer, match="issuer.crt"):
        ca.load_issuer(tmp_path)
