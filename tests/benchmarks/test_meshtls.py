"""benchmarks/lib/meshtls.py: the run's certificates, meshproxy's identity settings, reading
its TLS counters, and the TLS probe the handshake scenario sends before each run."""

from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from benchmarks.lib import meshtls

pytestmark = pytest.mark.timeout(30)


def test_each_leaf_chains_to_the_ca_for_its_own_name(certs):
    anchors = x509.load_pem_x509_certificates(certs.ca.read_bytes())
    for name in (meshtls.CLIENT_ID, meshtls.SERVER_ID):
        leaf, *chain = x509.load_pem_x509_certificates(certs[name].chain.read_bytes())
        assert len(chain) == 1, "leaf + issuer"
        assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
        assert leaf.public_key().curve.name == "secp256r1"
        verifier = PolicyBuilder().store(Store(anchors)).build_server_verifier(x509.DNSName(name))
        verifier.verify(leaf, chain)  # raises when it does not


def test_files_for_haproxy_nginx_and_meshproxy(certs):
    leaf = certs[meshtls.SERVER_ID]
    pem = leaf.pem.read_text()
    assert pem.count("BEGIN CERTIFICATE") == 2 and "BEGIN PRIVATE KEY" in pem
    assert "PRIVATE KEY" not in leaf.chain.read_text()
    for key_file in (leaf.key, leaf.pem):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_identity_env_names_the_files(certs):
    env = meshtls.identity_env(certs, meshtls.CLIENT_ID)
    assert env == {
        "MESHPROXY_IDENTITY_NAME": meshtls.CLIENT_ID,
        "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(certs.ca),
        "MESHPROXY_IDENTITY_CERT_FILE": str(certs[meshtls.CLIENT_ID].chain),
        "MESHPROXY_IDENTITY_KEY_FILE": str(certs[meshtls.CLIENT_ID].key),
    }


def test_the_identities_are_valid_mesh_names():
    from proxy.identity import names

    for name in (meshtls.CLIENT_ID, meshtls.SERVER_ID):
        names.parse(name, meshtls.TRUST_DOMAIN)


METRICS = f"""\
# HELP tls_connections_total Mesh TLS connections established, by peer identity.
# TYPE tls_connections_total counter
tls_connections_total{{direction="inbound",tls="true",client_id=""}} 2
tls_connections_total{{direction="inbound",tls="true",client_id="{meshtls.CLIENT_ID}"}} 51
tls_connections_total{{direction="outbound",tls="true",server_id="{meshtls.SERVER_ID}"}} 7
request_total{{direction="inbound"}} 1200
request_total{{direction="inbound",authority="web:80",tls="true",client_id="{meshtls.CLIENT_ID}"}} 34
request_total{{direction="outbound"}} 3
"""


def test_reading_the_counters():
    assert meshtls.inbound_tls_connections(METRICS, meshtls.CLIENT_ID) == 51
    assert meshtls.inbound_tls_connections(METRICS, "") == 2
    assert meshtls.inbound_tls_connections(METRICS, meshtls.SERVER_ID) == 0
    assert meshtls.inbound_requests(METRICS) == 1234
    assert meshtls.inbound_tls_connections("", meshtls.CLIENT_ID) == 0
    assert meshtls.series_value('request_total{direction="inbound"} nan?\n', 'request_total{direction="inbound"}') == 0


def test_probe_accepts_the_right_server_and_body(tls_server, certs):
    server = tls_server()
    assert meshtls.tls_probe(server.port, certs.ca, meshtls.SERVER_ID, b"ok") == ""
    assert server.server_names == [meshtls.SERVER_ID]


def test_probe_rejects_a_wrong_name_a_wrong_body_and_a_status(tls_server, certs):
    server = tls_server()
    wrong_name = meshtls.tls_probe(server.port, certs.ca, meshtls.CLIENT_ID, b"ok")
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_name or "mismatch" in wrong_name
    assert "different body" in meshtls.tls_probe(server.port, certs.ca, meshtls.SERVER_ID, b"other")
    failing = tls_server(reply=b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    assert "502" in meshtls.tls_probe(failing.port, certs.ca, meshtls.SERVER_ID, b"")


def test_probe_reports_a_server_without_tls(tls_server, certs):
    plain = tls_server(tls=False)
    assert meshtls.tls_probe(plain.port, certs.ca, meshtls.SERVER_ID, b"ok").startswith("TLS probe failed")
