"""Kubernetes TokenReview as the token checker, against a MOCK API server.

No Kubernetes API server can run here, so ``fake_tokenreview.py`` serves
TokenReview over TLS from responses in the API's recorded shapes
(``tokenreview_recorded.json``). Covered: an authenticated ServiceAccount
token, an unauthenticated one, a token of a user that is not a service
account, API errors (RBAC 403, 500, unreachable) and the issuer's own
credentials being sent.
"""

from __future__ import annotations

import pytest
import uvloop
from cryptography import x509

from proxy.identity import ca, client, names, server
from proxy.identity.errors import Refusal
from proxy.identity.tokens import TokenReview

from .fake_tokenreview import FakeTokenReviewApi
from .support import TD, WEB, authorities, metric, running

ISSUER_SA_TOKEN = "issuer-own-sa-token"


@pytest.fixture
def api_files(tmp_path):
    """The issuer's ServiceAccount token and the API server's CA, as mounted in a pod."""
    api_root, api_issuer = authorities()
    token_file = tmp_path / "token"
    token_file.write_text(ISSUER_SA_TOKEN + "\n")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem(api_root.cert))
    ctx = server.issued_ssl_context(api_issuer, ca.host_sans("127.0.0.1"))
    return token_file, ca_file, ctx


def _checker(api, token_file, ca_file) -> TokenReview:
    return TokenReview(TD, api.url, str(token_file), str(ca_file), timeout=3)


async def _refusal(checker: TokenReview, token: str) -> Refusal:
    with pytest.raises(Refusal) as info:
        await checker.authenticate(token)
    return info.value


def test_tokenreview_answers(api_files):
    token_file, ca_file, ctx = api_files

    async def main():
        api = FakeTokenReviewApi(ISSUER_SA_TOKEN, ctx)
        await api.start()
        try:
            checker = _checker(api, token_file, ca_file)
            assert await checker.authenticate("sa-token-web") == names.make("web", "default", TD)
            auth, body = api.requests[-1]
            assert auth == f"Bearer {ISSUER_SA_TOKEN}"
            assert body == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                            "spec": {"token": "sa-token-web"}}
            refusal = await _refusal(checker, "expired-or-forged")
            assert (refusal.code, refusal.status) == ("unauthenticated", 401)
            assert "expired" in refusal.message
            refusal = await _refusal(checker, "user-token-alice")
            assert (refusal.code, refusal.status) == ("not_a_service_account", 403)
            api.mode = "forbidden"
            refusal = await _refusal(checker, "sa-token-web")
            assert (refusal.code, refusal.status) == ("token_review_error", 503)
            assert "HTTP 403" in refusal.message and "cannot create resource" in refusal.message
            api.mode = "internal_error"
            refusal = await _refusal(checker, "sa-token-web")
            assert refusal.code == "token_review_error" and "HTTP 500" in refusal.message
            api.mode = "normal"
            # The issuer's own token is wrong (rotated away): the API says 401,
            # which is the issuer's problem, not the caller's.
            token_file.write_text("stale\n")
            refusal = await _refusal(checker, "sa-token-web")
            assert refusal.code == "token_review_error" and "HTTP 401" in refusal.message
        finally:
            await api.stop()
        # Unreachable API server.
        refusal = await _refusal(checker, "sa-token-web")
        assert refusal.code == "token_review_error" and "cannot be reached" in refusal.message

    uvloop.run(main())


def test_tokenreview_checks_the_api_servers_certificate(api_files, tmp_path):
    token_file, _ca_file, ctx = api_files
    other_root, _ = authorities()
    wrong_ca = tmp_path / "wrong-ca.crt"
    wrong_ca.write_bytes(ca.cert_pem(other_root.cert))

    async def main():
        api = FakeTokenReviewApi(ISSUER_SA_TOKEN, ctx)
        await api.start()
        try:
            refusal = await _refusal(_checker(api, token_file, wrong_ca), "sa-token-web")
            assert refusal.code == "token_review_error" and "CERTIFICATE_VERIFY_FAILED" in refusal.message
            assert api.requests == []
        finally:
            await api.stop()

    uvloop.run(main())


def test_issuer_service_with_tokenreview_end_to_end(api_files):
    token_file, ca_file, ctx = api_files
    root, issuer = authorities()

    async def main():
        api = FakeTokenReviewApi(ISSUER_SA_TOKEN, ctx)
        await api.start()
        try:
            async with running(issuer, _checker(api, token_file, ca_file), root) as (url, service, anchors):
                leaf_pem, _, _ = await client.request_certificate(url, "sa-token-web", ca.new_key(), WEB.name, TD,
                                                                 anchors, 5)
                leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
                assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                    x509.DNSName) == [WEB.name]
                for token, code in (("expired-or-forged", "unauthenticated"),
                                    ("user-token-alice", "not_a_service_account")):
                    with pytest.raises(client.CertifyError) as info:
                        await client.request_certificate(url, token, ca.new_key(), WEB.name, TD, anchors, 5)
                    assert info.value.code == code
                api.mode = "internal_error"
                with pytest.raises(client.CertifyError) as info:
                    await client.request_certificate(url, "sa-token-web", ca.new_key(), WEB.name, TD, anchors, 5)
                assert (info.value.code, info.value.status) == ("token_review_error", 503)
                return service.metrics().decode()
        finally:
            await api.stop()

    text = uvloop.run(main())
    assert metric(text, "identity_issued_total") == 1
    assert metric(text, 'identity_refused_total{reason="token_review_error"}') == 1
    assert metric(text, 'identity_refused_total{reason="unauthenticated"}') == 1
