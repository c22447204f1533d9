"""A small synchronous Kubernetes API client for the ``check`` commands.

A CLI asks a few questions and exits, so plain ``http.client`` does: no loop,
no watch. Where the API is comes from the proxy's own settings
(``MESHPROXY_K8S_API``, else the in-cluster ``KUBERNETES_SERVICE_HOST``) or
``--api URL``; the bearer token and CA come from ``MESHPROXY_K8S_TOKEN_FILE``
and ``MESHPROXY_K8S_CA_FILE`` when those files exist. From a laptop,
``kubectl proxy`` gives a plain-HTTP URL that carries the user's own
credentials.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from proxy.config import DiscoverySettings

# The most of one answer read into memory: a pod list of a large cluster fits,
# a misbehaving server does not exhaust the CLI.
MAX_BODY = 64 * 1024 * 1024


class ApiUnavailable(Exception):
    """No answer from the API server (network, TLS, or a body that is not JSON)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict

    @property
    def message(self) -> str:
        """The API's own words for a failure (a ``Status`` object's message)."""
        return str(self.body.get("message") or f"HTTP {self.status}")


def api_url(settings: DiscoverySettings, override: str | None = None) -> str | None:
    """The API server's base URL, or None when neither configured nor in a cluster."""
    from proxy.identity.tokens import in_cluster_api

    if override or settings.k8s_api:
        return (override or settings.k8s_api or "").rstrip("/")
    try:
        return in_cluster_api()
    except ValueError:
        return None


class Client:
    """One base URL and its credentials; each call opens and closes one connection."""

    def __init__(self, url: str, token_file: str | None, ca_file: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
        self.url, self.timeout = url, timeout
        self._parts = parts
        self._headers = {"Accept": "application/json"}
        if token_file and os.path.isfile(token_file):
            self._headers["Authorization"] = "Bearer " + Path(token_file).read_text().strip()
        self._cafile = ca_file if ca_file and os.path.isfile(ca_file) else None

    @classmethod
    def from_settings(cls, settings: DiscoverySettings, timeout: float, override: str | None = None) -> Client | None:
        url = api_url(settings, override)
        return None if url is None else cls(url, settings.k8s_token_file, settings.k8s_ca_file, timeout)

    @property
    def authenticated(self) -> bool:
        return "Authorization" in self._headers

    def _connection(self) -> http.client.HTTPConnection:
        host, scheme = self._parts.hostname or "", self._parts.scheme
        if scheme == "https":
            return http.client.HTTPSConnection(host, self._parts.port or 443, timeout=self.timeout,
                                               context=ssl.create_default_context(cafile=self._cafile))
        return http.client.HTTPConnection(host, self._parts.port or 80, timeout=self.timeout)

    def raw(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """``method path`` under the base URL's path -> (status, body bytes); ApiUnavailable on no answer."""
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, self._parts.path.rstrip("/") + path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read(MAX_BODY + 1)
        except (OSError, http.client.HTTPException) as err:
            raise ApiUnavailable(f"{self.url}: {err}") from None
        finally:
            conn.close()
        if len(payload) > MAX_BODY:
            raise ApiUnavailable(f"{self.url}{path}: answer larger than {MAX_BODY} bytes")
        return response.status, payload

    def call(self, method: str, path: str, body: dict | None = None) -> Answer:
        """Like ``raw`` for JSON answers; a body that is not a JSON object is ApiUnavailable."""
        status, payload = self.raw(method, path, body)
        try:
            document = json.loads(payload) if payload else {}
        except ValueError:
            raise ApiUnavailable(f"{self.url}{path} answered {status} with a body that is not JSON") from None
        if not isinstance(document, dict):
            raise ApiUnavailable(f"{self.url}{path} answered {status} with JSON that is not an object")
        return Answer(status, document)

    def get(self, path: str) -> Answer:
        return self.call("GET", path)
