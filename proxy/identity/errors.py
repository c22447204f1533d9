"""Refusals: every way the issuer can say no, with a stable code and its HTTP status."""

from __future__ import annotations


class Refusal(Exception):
    """A request the issuer will not serve. ``code`` is stable (clients and the
    ``identity_refused_total{reason}`` metric use it); ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.code]


STATUS = {
    "bad_request": 400,           # not JSON, missing or mistyped fields
    "invalid_csr": 400,           # not a PEM certificate signing request
    "bad_signature": 400,         # the CSR is not signed by its own key
    "wrong_key_type": 400,        # not ECDSA P-256
    "unauthenticated": 401,       # the token is unknown, or TokenReview said not authenticated
    "not_a_service_account": 403,  # TokenReview authenticated a user that is no service account
    "name_mismatch": 403,         # the CSR's names are not exactly the token's identity
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "token_review_error": 503,    # the Kubernetes API could not be asked (or answered an error)
    "issuer_expired": 503,        # the issuer certificate is no longer (or not yet) valid
}
