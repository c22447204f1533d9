"""The proxy's own identity: a key made in memory, a certificate for it from the
issuer (or from files managed outside), renewed before it expires, and the
mesh TLS contexts built from the current certificate.

Issuer mode: a P-256 key is generated at start and kept for the process's
life; its CSR goes to ``MESHPROXY_IDENTITY_SERVICE`` with the token read from
``MESHPROXY_IDENTITY_TOKEN_FILE`` (read again at each renewal, since
projected tokens rotate). Renewal starts at ``renew_fraction`` of the
certificate's lifetime; failures retry with doubling, jittered backoff.

File mode (cert-manager style): the chain and key files are checked on every
sweep and reloaded when they change; a bad pair is logged and counted, and the
previous certificate stays in use.

Either way a new certificate only replaces the contexts used for *new*
connections: established ones keep the TLS session they have.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from proxy.config import IDENTITY_NAME, IDENTITY_TRUST_ANCHORS, ConfigError, IdentitySettings
from proxy.identity import client, names
from proxy.telemetry.logging import get_logger
from proxy.transport import tls

log = get_logger("proxy.identity")


class LocalIdentity:
    def __init__(self, settings: IdentitySettings, loop: asyncio.AbstractEventLoop) -> None:
        assert settings.name is not None
        self.settings = settings
        self.loop = loop
        self.name = settings.name
        self.tls: tls.MeshTls | None = None
        self.not_after = 0.0  # unix time; 0 until the first certificate
        self.refreshed = 0
        self.refresh_failed = 0
        self.anchors_pem = b""
        self._anchors: list[x509.Certificate] = []
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._task: asyncio.Task | None = None
        self._file_stamp: tuple | None = None

    @property
    def ready(self) -> bool:
        return self.tls is not None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Check the settings and begin obtaining a certificate; raises ConfigError (the command exits 64)."""
        settings = self.settings
        try:
            names.parse(self.name, settings.trust_domain)
        except ValueError as err:
            raise ConfigError(IDENTITY_NAME, self.name, str(err)) from None
        try:
            with open(settings.trust_anchors or "", "rb") as fh:
                self.anchors_pem = fh.read()
            self._anchors = x509.load_pem_x509_certificates(self.anchors_pem)
        except (OSError, ValueError) as err:
            raise ConfigError(IDENTITY_TRUST_ANCHORS, settings.trust_anchors, _why(err)) from None
        if settings.cert_file is not None:
            self.check_files()
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
            self._task = self.loop.create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # -- issuer mode -------------------------------------------------------------
    async def _renew_forever(self) -> None:
        settings = self.settings
        assert self._key is not None and settings.service is not None and settings.token_file is not None
        key_pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        backoff = settings.min_backoff
        while True:
            try:
                with open(settings.token_file, encoding="utf-8") as fh:
                    token = fh.read().strip()
                leaf_pem, chain_pems, _ = await client.request_certificate(
                    settings.service, token, self._key, self.name, settings.trust_domain, self.anchors_pem)
                leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
                self._install((leaf_pem + "".join(chain_pems)).encode(), key_pem, leaf)
            except (client.CertifyError, OSError, ValueError, ssl.SSLError) as err:
                self.refresh_failed += 1
                delay = backoff * random.uniform(0.5, 1.0)
                log.warning("identity: certificate request failed", service=settings.service,
                            error=_why(err), retry_in_s=round(delay, 2), have_certificate=self.ready)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, settings.max_backoff)
                continue
            backoff = settings.min_backoff
            await asyncio.sleep(self._renew_delay(leaf))

    def _renew_delay(self, leaf: x509.Certificate) -> float:
        start = leaf.not_valid_before_utc.timestamp()
        end = leaf.not_valid_after_utc.timestamp()
        at = start + (end - start) * self.settings.renew_fraction
        return max(at - dt.datetime.now(dt.UTC).timestamp(), 0.0)

    # -- file mode ---------------------------------------------------------------
    def check_files(self) -> None:
        """Reload the certificate and key files when they changed (called every sweep)."""
        settings = self.settings
        if settings.cert_file is None or settings.key_file is None:
            return
        try:
            stamp = tuple((s.st_ino, s.st_mtime_ns, s.st_size)
                          for s in (os.stat(settings.cert_file), os.stat(settings.key_file)))
        except OSError as err:
            if self._file_stamp != "missing":
                self._file_stamp = "missing"  # type: ignore[assignment]
                self.refresh_failed += 1
                log.warning("identity: certificate files unreadable", error=_why(err), have_certificate=self.ready)
            return
        if stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        try:
            with open(settings.cert_file, "rb") as fh:
                chain_pem = fh.read()
            with open(settings.key_file, "rb") as fh:
                key_pem = fh.read()
            certs = x509.load_pem_x509_certificates(chain_pem)
            self._verify(certs[0], certs[1:])
            self._install(chain_pem, key_pem, certs[0])
        except (OSError, ValueError, ssl.SSLError, VerificationError) as err:
            self.refresh_failed += 1
            log.warning("identity: certificate files rejected", cert_file=settings.cert_file,
                        error=_why(err), have_certificate=self.ready)

    def _verify(self, leaf: x509.Certificate, chain: list[x509.Certificate]) -> None:
        verifier = PolicyBuilder().store(Store(self._anchors)).build_server_verifier(x509.DNSName(self.name))
        verifier.verify(leaf, chain)

    # -- both ----------------------------------------------------------------------
    def _install(self, chain_pem: bytes, key_pem: bytes, leaf: x509.Certificate) -> None:
        # New contexts, new ticket keys, an empty session cache: nothing resumed
        # from the previous certificate or trust anchors survives the switch.
        self.tls = tls.build(self.name, chain_pem, key_pem, self.anchors_pem, self.settings.session_cache)
        first = self.not_after == 0.0
        self.not_after = leaf.not_valid_after_utc.timestamp()
        self.refreshed += 1
        log.info("identity: certificate installed" if first else "identity: certificate renewed",
                 identity=self.name, expires=leaf.not_valid_after_utc.isoformat())

    def render(self, out: list[str]) -> None:
        out.append("# HELP identity_cert_expiration_timestamp_seconds When the proxy's certificate expires.")
        out.append("# TYPE identity_cert_expiration_timestamp_seconds gauge")
        out.append(f"identity_cert_expiration_timestamp_seconds {self.not_after:.0f}")
        out.append("# HELP identity_cert_refresh_total Certificates obtained (ok) and attempts that failed.")
        out.append("# TYPE identity_cert_refresh_total counter")
        out.append(f'identity_cert_refresh_total{{result="ok"}} {self.refreshed}')
        out.append(f'identity_cert_refresh_total{{result="failed"}} {self.refresh_failed}')


def _why(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err) or type(err).__name__
