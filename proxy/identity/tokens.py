"""Token checkers: who is asking for a certificate.

One interface, two implementations: a token file (local and docker-compose
use) and Kubernetes TokenReview (in cluster: the token is a pod's
ServiceAccount token and the API server says whose it is).
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from pathlib import Path
from typing import Protocol

from proxy.identity import httpio, names
from proxy.identity.errors import Refusal
from proxy.identity.names import Identity
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.identity.tokens")


class TokenChecker(Protocol):
    async def authenticate(self, token: str) -> Identity:
        """The identity the token proves; raises Refusal."""


def _digest(token: str) -> bytes:
    # Tokens are kept and looked up by digest: the lookup time says nothing
    # about how much of a guessed token was right.
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenFile:
    """``TOKEN IDENTITY`` per line (``#`` comments and blank lines allowed),
    reloaded when the file changes (checked on each request: one stat). An
    invalid edit keeps the last good tokens and logs why."""

    def __init__(self, path: str | os.PathLike, trust_domain: str) -> None:
        self.path = Path(path)
        self.trust_domain = trust_domain
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: dict[bytes, Identity] = {}
        self.reload_errors = 0
        self._tokens = self._parse(self.path.read_text(encoding="utf-8"))  # ValueError/OSError at start
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _parse(self, text: str) -> dict[bytes, Identity]:
        tokens: dict[bytes, Identity] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{self.path}:{number}: expected 'TOKEN IDENTITY'")
            token, name = fields
            try:
                identity = names.parse(name, self.trust_domain)
            except ValueError as err:
                raise ValueError(f"{self.path}:{number}: {err}") from None
            if _digest(token) in tokens:
                raise ValueError(f"{self.path}:{number}: the token is listed twice")
            tokens[_digest(token)] = identity
        return tokens

    def maybe_reload(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._tokens = self._parse(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            self.reload_errors += 1
            log.warning("token file reload failed; keeping the last good tokens", path=str(self.path), error=str(err))
            return
        log.info("token file reloaded", path=str(self.path), tokens=len(self._tokens))

    async def authenticate(self, token: str) -> Identity:
        self.maybe_reload()
        identity = self._tokens.get(_digest(token))
        if identity is None:
            raise Refusal("unauthenticated", "unknown token")
        return identity


SA_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SA_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def in_cluster_api() -> str:
    from proxy.discovery.k8s_client import in_cluster

    try:
        return in_cluster().url
    except ValueError as err:
        raise ValueError(f"{err}; give --k8s-api URL") from None


class TokenReview:
    """Asks the API server (``POST authentication.k8s.io/v1 TokenReview``)
    whose token it is, with the issuer's own ServiceAccount token (reread per
    call: kubelet rotates it). ``system:serviceaccount:<ns>:<sa>`` maps to
    ``<sa>.<ns>.serviceaccount.identity.<trust-domain>``. Needs RBAC
    ``create`` on ``tokenreviews``."""

    def __init__(self, trust_domain: str, api_url: str | None = None, token_file: str = SA_TOKEN_FILE,
                 ca_file: str = SA_CA_FILE, audiences: tuple[str, ...] = (), timeout: float = 5.0) -> None:
        self.trust_domain = trust_domain
        self.api_url = (api_url or in_cluster_api()).rstrip("/")
        self.token_file = token_file
        self.audiences = audiences
        self.timeout = timeout
        self.ssl_context: ssl.SSLContext | None = None
        if self.api_url.startswith("https:"):
            self.ssl_context = ssl.create_default_context(cafile=ca_file if os.path.isfile(ca_file) else None)

    async def authenticate(self, token: str) -> Identity:
        spec: dict = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        headers = {"content-type": "application/json", "accept": "application/json"}
        try:
            with open(self.token_file, encoding="utf-8") as fh:
                headers["authorization"] = f"Bearer {fh.read().strip()}"
        except OSError:
            pass  # e.g. a local API proxy that needs no credentials
        try:
            status, _, body = await httpio.request(self.api_url + TOKEN_REVIEW_PATH, "POST",
                                                   json.dumps(review).encode(), headers, self.ssl_context,
                                                   self.timeout)
        except (OSError, ssl.SSLError, TimeoutError, httpio.HttpError) as err:
            raise Refusal("token_review_error",
                          f"the Kubernetes API cannot be reached: {err or type(err).__name__}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if status not in (200, 201) or not isinstance(doc, dict) or doc.get("kind") != "TokenReview":
            message = doc.get("message") if isinstance(doc, dict) else None
            raise Refusal("token_review_error", f"TokenReview failed: HTTP {status}: {message or body[:200]!r}")
        result = doc.get("status") or {}
        if not result.get("authenticated"):
            detail = f": {result['error']}" if result.get("error") else ""
            raise Refusal("unauthenticated", f"token not authenticated{detail}")
        username = (result.get("user") or {}).get("username", "")
        try:
            return names.from_username(username, self.trust_domain)
        except ValueError as err:
            raise Refusal("not_a_service_account", str(err)) from None
