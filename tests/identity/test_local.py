"""proxy/identity/local.py: the proxy's own certificate in file mode, renewal timing, metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.config import ConfigError, load
from proxy.identity import ca
from proxy.identity.local import LocalIdentity
from proxy.transport import tls

NAME = "web.default.serviceaccount.identity.cluster.local"


def _files(tmp_path, authority, name=NAME, lifetime=dt.timedelta(hours=1)):
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.sign_leaf(authority, key.public_key(), name, [x509.DNSName(name)], lifetime)
    (tmp_path / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(authority.cert))
    (tmp_path / "tls.key").write_bytes(ca.key_pem(key))
    return leaf


@pytest.fixture()
def authorities(tmp_path):
    root = ca.create_root("cluster.local", dt.timedelta(days=10))
    issuer = ca.create_issuer(root, "cluster.local", dt.timedelta(days=5))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem(root.cert))
    return root, issuer


def _identity(tmp_path, **extra):
    env = {"MESHPROXY_IDENTITY_NAME": NAME, "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(tmp_path / "ca.crt"),
           "MESHPROXY_IDENTITY_CERT_FILE": str(tmp_path / "tls.crt"),
           "MESHPROXY_IDENTITY_KEY_FILE": str(tmp_path / "tls.key"), **extra}
    return LocalIdentity(load(env).identity, asyncio.new_event_loop())


def test_file_mode_loads_verifies_and_reloads(tmp_path, authorities):
    _, issuer = authorities
    leaf = _files(tmp_path, issuer)
    ident = _identity(tmp_path)
    ident.start()
    assert ident.ready and ident.refreshed == 1
    assert ident.not_after == leaf.not_valid_after_utc.timestamp()
    mesh = ident.tls
    assert mesh.server.minimum_version == ssl.TLSVersion.TLSv1_3
    assert mesh.server.verify_mode == ssl.CERT_OPTIONAL
    assert mesh.client_h2.verify_mode == ssl.CERT_REQUIRED and mesh.client_h2.check_hostname
    ident.check_files()  # unchanged: nothing happens
    assert ident.refreshed == 1
    # A certificate for another name is refused; the current one stays.
    _files(tmp_path, issuer, name="api.default.serviceaccount.identity.cluster.local")
    ident.check_files()
    assert ident.refresh_failed == 1 and ident.tls is mesh
    _files(tmp_path, issuer, lifetime=dt.timedelta(hours=2))
    ident.check_files()
    assert ident.refreshed == 2 and ident.tls is not mesh
    out: list[str] = []
    ident.render(out)
    assert 'identity_cert_refresh_total{result="ok"} 2' in out
    assert 'identity_cert_refresh_total{result="failed"} 1' in out


def test_a_certificate_from_another_ca_is_refused(tmp_path, authorities):
    other_root = ca.create_root("cluster.local", dt.timedelta(days=10))
    _files(tmp_path, ca.create_issuer(other_root, "cluster.local", dt.timedelta(days=5)))
    ident = _identity(tmp_path)
    ident.start()
    assert not ident.ready and ident.refresh_failed == 1


def test_unreadable_anchors_and_bad_names_are_configuration_errors(tmp_path, authorities):
    with pytest.raises(ConfigError) as err:
        _identity(tmp_path, MESHPROXY_IDENTITY_TRUST_ANCHORS=str(tmp_path / "missing.crt")).start()
    assert err.value.name == "MESHPROXY_IDENTITY_TRUST_ANCHORS"
    with pytest.raises(ConfigError) as err:
        _identity(tmp_path, MESHPROXY_IDENTITY_NAME="web.default.svc.cluster.local").start()
    assert err.value.name == "MESHPROXY_IDENTITY_NAME"


def test_renewal_starts_at_the_configured_fraction(tmp_path, authorities):
    _, issuer = authorities
    leaf = _files(tmp_path, issuer, lifetime=dt.timedelta(hours=10))
    ident = _identity(tmp_path)
    start, end = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
    expected = start + 0.7 * (end - start) - dt.datetime.now(dt.UTC).timestamp()
    assert abs(ident._renew_delay(leaf) - expected) < 5


def test_peer_identity_reads_the_first_dns_san():
    class Fake:
        def __init__(self, cert):
            self.cert = cert

        def getpeercert(self):
            return self.cert

    assert tls.peer_identity(None) is None
    assert tls.peer_identity(Fake({})) is None
    assert tls.peer_identity(Fake({"subjectAltName": (("URI", "spiffe://x"), ("DNS", NAME))})) == NAME
