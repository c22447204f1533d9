"""The issuer service: ``POST /v1/certify`` and ``GET /metrics`` on one TLS 1.3 listener.

A request is ``{"token": ..., "csr": PEM}``; the token checker names the
identity, the CSR is checked against it, and the issuer signs a leaf for at
most ``leaf_lifetime`` and never beyond its own expiry. Every issuance and
refusal is one log line and one count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import tempfile
from collections import Counter
from pathlib import Path

from proxy.identity import ca, csr, httpio
from proxy.identity.errors import Refusal
from proxy.identity.tokens import TokenChecker
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.identity")

CERTIFY_PATH = "/v1/certify"
METRICS_PATH = "/metrics"
IDLE_TIMEOUT = 30.0  # a kept-alive connection with no request is closed after this


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class IssuerService:
    def __init__(self, issuer: ca.Authority, checker: TokenChecker, trust_domain: str,
                 leaf_lifetime: dt.timedelta, clock=ca.utcnow) -> None:
        self.issuer = issuer
        self.checker = checker
        self.trust_domain = trust_domain
        self.leaf_lifetime = leaf_lifetime
        self.clock = clock
        self.issued = 0
        self.refused: Counter[str] = Counter()
        self._chain = [ca.cert_pem(issuer.cert).decode()]

    async def certify(self, body: bytes, client: str = "") -> tuple[int, dict]:
        """The response status and JSON document for one certify request."""
        try:
            return 200, await self._certify(body, client)
        except Refusal as refusal:
            self.refused[refusal.code] += 1
            log.warning("identity refused", reason=refusal.code, detail=refusal.message, client=client)
            return refusal.status, {"error": refusal.code, "message": refusal.message}

    async def _certify(self, body: bytes, client: str) -> dict:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refusal("bad_request", "the body must be JSON: {\"token\": ..., \"csr\": ...}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("token"), str) or not isinstance(doc.get("csr"), str):
            raise Refusal("bad_request", "expected {\"token\": string, \"csr\": PEM string}")
        if not doc["token"]:
            raise Refusal("unauthenticated", "empty token")
        now = self.clock()
        if not self.issuer.not_before <= now < self.issuer.not_after:
            raise Refusal("issuer_expired", f"the issuer certificate is valid only from "
                          f"{rfc3339(self.issuer.not_before)} to {rfc3339(self.issuer.not_after)}")
        identity = await self.checker.authenticate(doc["token"])
        req, sans = csr.check(doc["csr"], identity)
        leaf = ca.sign_leaf(self.issuer, req.public_key(), identity.name, sans, self.leaf_lifetime, now)
        self.issued += 1
        log.info("identity issued", identity=identity.name, serial=f"{leaf.serial_number:x}",
                 valid_until=rfc3339(leaf.not_valid_after_utc), client=client)
        return {
            "certificate": ca.cert_pem(leaf).decode(),
            "chain": list(self._chain),
            "valid_until": rfc3339(leaf.not_valid_after_utc),
        }

    def metrics(self) -> bytes:
        lines = [
            "# HELP identity_issued_total Certificates issued.",
            "# TYPE identity_issued_total counter",
            f"identity_issued_total {self.issued}",
            "# HELP identity_refused_total Certificate requests refused, by reason.",
            "# TYPE identity_refused_total counter",
        ]
        lines += [f'identity_refused_total{{reason="{code}"}} {n}' for code, n in sorted(self.refused.items())]
        lines += [
            "# HELP identity_issuer_expiry_timestamp_seconds When the issuer certificate expires.",
            "# TYPE identity_issuer_expiry_timestamp_seconds gauge",
            f"identity_issuer_expiry_timestamp_seconds {int(self.issuer.not_after.timestamp())}",
        ]
        return ("\n".join(lines) + "\n").encode()

    # ---- the connection loop -----------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        client = str(peer[0])
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        req = await httpio.read_request(reader)
                except TimeoutError:
                    return
                except httpio.HttpError as err:
                    code = {411: "bad_request", 413: "too_large", 431: "too_large"}.get(err.status, "bad_request")
                    self.refused[code] += 1
                    log.warning("identity refused", reason=code, detail=str(err), client=client)
                    writer.write(httpio.response(err.status, _error(code, str(err)), close=True))
                    await writer.drain()
                    return
                if req is None:
                    return
                status, body, ctype = await self._route(req, client)
                writer.write(httpio.response(status, body, ctype, close=not req.keep_alive))
                await writer.drain()
                if not req.keep_alive:
                    return
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        except Exception:  # a bug: say so once, close this connection, keep serving
            log.exception("identity request failed", client=client)
        finally:
            writer.close()

    async def _route(self, req: httpio.Request, client: str) -> tuple[int, bytes, str]:
        path = req.target.split("?", 1)[0]
        if path == CERTIFY_PATH:
            if req.method != "POST":
                return 405, _error("method_not_allowed", "POST only"), "application/json"
            status, doc = await self.certify(req.body, client)
            return status, json.dumps(doc).encode(), "application/json"
        if path == METRICS_PATH and req.method == "GET":
            return 200, self.metrics(), "text/plain; version=0.0.4; charset=utf-8"
        return 404, _error("not_found", f"no {req.method} {path}"), "application/json"


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def issued_ssl_context(issuer: ca.Authority, sans: list) -> ssl.SSLContext:
    """A serving certificate for ``sans`` issued now by the issuer itself, so
    that clients holding the trust anchors can verify the service."""
    key = ca.new_key()
    leaf = ca.sign_leaf(issuer, key.public_key(), str(sans[0].value), sans, issuer.not_after - ca.utcnow())
    # ssl loads a chain only from files: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="meshproxy-identity-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        ca.write_atomically(cert_path, ca.cert_pem(leaf) + ca.cert_pem(issuer.cert), 0o600)
        ca.write_atomically(key_path, ca.key_pem(key), 0o600)
        return server_ssl_context(str(cert_path), str(key_path))


async def start(service: IssuerService, host: str, port: int, ssl_context: ssl.SSLContext) -> asyncio.Server:
    return await asyncio.start_server(service.handle, host, port, ssl=ssl_context, limit=httpio.MAX_HEAD,
                                      ssl_handshake_timeout=10.0)
