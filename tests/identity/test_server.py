"""The issuer service end to end, in-process on loopback: the client function
against the TLS listener, every refusal, expiry limits, token file reload and
the metrics."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.identity import ca, client, httpio, server
from proxy.identity.tokens import TokenFile

from .support import DAY, DB, TD, WEB, authorities, identity_csr, metric, running, tamper


@pytest.fixture
def tokens(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# local tokens\n\nweb-token {WEB.name}\n  db-token   {DB.name}  \n")
    return path


def run(coro):
    return uvloop.run(coro)


async def _post(url: str, anchors: str, doc) -> tuple[int, dict]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    status, headers, raw = await httpio.request(url + "/v1/certify", "POST", body, {"content-type": "application/json"},
                                                client.client_ssl_context(anchors), 5)
    assert headers["content-type"] == "application/json"
    return status, json.loads(raw)


async def _metrics(url: str, anchors: str) -> str:
    status, _, raw = await httpio.request(url + "/metrics", "GET", b"", None, client.client_ssl_context(anchors), 5)
    assert status == 200
    return raw.decode()


def test_certify_flow_with_the_client_function(tokens):
    root, issuer = authorities()

    async def main():
        async with running(issuer, TokenFile(tokens, TD), root) as (url, service, anchors):
            key = ca.new_key()
            leaf_pem, chain, not_after = await client.request_certificate(url, "web-token", key, WEB.name, TD,
                                                                          anchors, 5)
            leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
            assert chain == [ca.cert_pem(issuer.cert).decode()]
            assert leaf.issuer == issuer.cert.subject
            assert list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
                x509.DNSName(WEB.name), x509.UniformResourceIdentifier(WEB.spiffe_id)]
            assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            assert not_after == leaf.not_valid_after_utc
            assert dt.timedelta(hours=23, minutes=59) < not_after - ca.utcnow() <= DAY
            # The raw wire format.
            status, doc = await _post(url, anchors, {"token": "db-token", "csr": identity_csr(key, DB, spiffe=False)})
            assert status == 200 and set(doc) == {"certificate", "chain", "valid_until"}
            assert doc["valid_until"].endswith("Z") and dt.datetime.fromisoformat(doc["valid_until"]) > ca.utcnow()
            return await _metrics(url, anchors)

    text = run(main())
    assert metric(text, "identity_issued_total") == 2


def test_refusals_have_stable_codes_and_are_counted(tokens):
    root, issuer = authorities()

    async def main():
        async with running(issuer, TokenFile(tokens, TD), root) as (url, service, anchors):
            key = ca.new_key()
            with pytest.raises(client.CertifyError) as info:
                await client.request_certificate(url, "nope", key, WEB.name, TD, anchors, 5)
            assert (info.value.code, info.value.status) == ("unauthenticated", 401)
            with pytest.raises(client.CertifyError) as info:  # db's name with web's token
                await client.request_certificate(url, "web-token", key, DB.name, TD, anchors, 5)
            assert (info.value.code, info.value.status) == ("name_mismatch", 403)
            cases = [
                ({"token": "web-token", "csr": identity_csr(ec.generate_private_key(ec.SECP384R1()))}, 400,
                 "wrong_key_type"),
                ({"token": "web-token", "csr": tamper(identity_csr(key))}, 400, "bad_signature"),
                ({"token": "web-token", "csr": "junk"}, 400, "invalid_csr"),
                ({"token": "web-token"}, 400, "bad_request"),
                (b"not json", 400, "bad_request"),
                ({"token": "", "csr": identity_csr(key)}, 401, "unauthenticated"),
            ]
            for doc, status, code in cases:
                got = await _post(url, anchors, doc)
                assert got[0] == status and got[1]["error"] == code, (doc, got)
                assert got[1]["message"]
            status, _, raw = await httpio.request(url + "/v1/certify", "GET", b"", None,
                                                  client.client_ssl_context(anchors), 5)
            assert status == 405 and json.loads(raw)["error"] == "method_not_allowed"
            return await _metrics(url, anchors)

    text = run(main())
    assert metric(text, "identity_issued_total") == 0
    assert metric(text, 'identity_refused_total{reason="unauthenticated"}') == 2
    assert metric(text, 'identity_refused_total{reason="name_mismatch"}') == 1
    assert metric(text, 'identity_refused_total{reason="wrong_key_type"}') == 1
    assert metric(text, 'identity_refused_total{reason="bad_request"}') == 2


def test_client_verifies_the_service_against_the_trust_anchors(tokens):
    root, issuer = authorities()
    other_root, _ = authorities()

    async def main():
        async with running(issuer, TokenFile(tokens, TD), root) as (url, _service, _anchors):
            with pytest.raises(client.CertifyError) as info:
                await client.request_certificate(url, "web-token", ca.new_key(), WEB.name, TD,
                                                 ca.cert_pem(other_root.cert).decode(), 5)
            assert info.value.code == "unavailable" and "CERTIFICATE_VERIFY_FAILED" in info.value.message
            # The wrong host name for the serving certificate fails too.
            with pytest.raises(client.CertifyError):
                await client.request_certificate(url.replace("127.0.0.1", "localhost"), "web-token", ca.new_key(),
                                                 WEB.name, TD, ca.cert_pem(root.cert).decode(), 5)

    run(main())


def test_leaf_never_outlives_the_issuer(tokens):
    root, issuer = authorities(issuer_life=dt.timedelta(hours=3))

    async def main():
        async with running(issuer, TokenFile(tokens, TD), root, leaf_lifetime=DAY) as (url, _s, anchors):
            return await client.request_certificate(url, "web-token", ca.new_key(), WEB.name, TD, anchors, 5)

    _, _, not_after = run(main())
    assert not_after == issuer.not_after


def test_issuer_expiring_while_serving_refuses(tokens):
    root, issuer = authorities()
    clock = {"now": ca.utcnow()}

    async def main():
        async with running(issuer, TokenFile(tokens, TD), root, clock=lambda: clock["now"]) as (url, _s, anchors):
            clock["now"] = issuer.not_after + dt.timedelta(seconds=1)
            status, doc = await _post(url, anchors, {"token": "web-token", "csr": identity_csr(ca.new_key())})
            assert (status, doc["error"]) == (503, "issuer_expired")

    run(main())


def test_token_file_is_reloaded_when_it_changes(tokens):
    root, issuer = authorities()
    checker = TokenFile(tokens, TD)

    async def main():
        async with running(issuer, checker, root) as (url, _s, anchors):
            key = ca.new_key()
            await client.request_certificate(url, "web-token", key, WEB.name, TD, anchors, 5)
            # Replace the file atomically (as a ConfigMap update does): web's
            # token is revoked, a new one appears.
            new = tokens.with_name("tokens.new")
            new.write_text(f"rotated {WEB.name}\n")
            os.replace(new, tokens)
            with pytest.raises(client.CertifyError) as info:
                await client.request_certificate(url, "web-token", key, WEB.name, TD, anchors, 5)
            assert info.value.code == "unauthenticated"
            await client.request_certificate(url, "rotated", key, WEB.name, TD, anchors, 5)
            # An invalid edit keeps the last good tokens.
            tokens.write_text("only-one-field\n")
            await client.request_certificate(url, "rotated", key, WEB.name, TD, anchors, 5)
            assert checker.reload_errors == 1

    run(main())


def test_token_file_rejects_bad_lines(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"t1 {WEB.name}\nt2 web.default.svc.cluster.local\n")
    with pytest.raises(ValueError, match=r"tokens:2: "):
        TokenFile(path, TD)
    path.write_text(f"t1 {WEB.name}\nt1 {DB.name}\n")
    with pytest.raises(ValueError, match="listed twice"):
        TokenFile(path, TD)


def test_unknown_path_malformed_http_and_old_tls(tokens):
    root, issuer = authorities()

    async def raw_exchange(port: int, anchors: str, data: bytes) -> bytes:
        import asyncio

        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client.client_ssl_context(anchors),
                                                       server_hostname="127.0.0.1")
        writer.write(data)
        answer = await reader.read()
        writer.close()
        return answer

    async def main():
        import asyncio
        import ssl

        async with running(issuer, TokenFile(tokens, TD), root) as (url, service, anchors):
            port = int(url.rsplit(":", 1)[1])
            status, _, raw = await httpio.request(url + "/nope", "GET", b"", None,
                                                  client.client_ssl_context(anchors), 5)
            assert status == 404 and json.loads(raw)["error"] == "not_found"
            answer = await raw_exchange(port, anchors, b"NONSENSE\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400 ") and b'"error": "bad_request"' in answer
            big = b"POST /v1/certify HTTP/1.1\r\ncontent-length: 999999\r\n\r\n"
            answer = await raw_exchange(port, anchors, big)
            assert answer.startswith(b"HTTP/1.1 413 ") and b'"error": "too_large"' in answer
            # TLS 1.2 is refused.
            old = client.client_ssl_context(anchors)
            old.minimum_version = ssl.TLSVersion.TLSv1_2
            old.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises((ssl.SSLError, ConnectionResetError)):  # uvloop reports the alert as a reset
                await asyncio.open_connection("127.0.0.1", port, ssl=old, server_hostname="127.0.0.1")
            return service.metrics().decode()

    text = run(main())
    assert metric(text, 'identity_refused_total{reason="too_large"}') == 1
    assert server.rfc3339(dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == "2030-01-02T03:04:05Z"
