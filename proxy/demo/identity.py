"""The demo's certificate authority: ``meshproxy identity init`` makes a trust
anchor and an issuer, ``meshproxy identity serve`` runs the issuer with a
token file naming one identity per pod, and each proxy gets the settings to
ask it for its certificate.

Files: the CA keys and the issuer's token list stay readable by root (or
the user) only; each pod's token is readable by its proxy's uid only; the
trust anchors are world-readable.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from proxy import config
from proxy.demo.processes import Child, meshproxy_command, package_env
from proxy.demo.spec import DemoError, identity_name


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    trust_domain: str
    issuer_dir: Path  # ca.crt, ca.key, issuer.crt, issuer.key, tokens.txt
    trust_anchors: Path
    tokens: Path  # the issuer's TOKEN IDENTITY list
    token_files: dict[str, Path]  # service -> its proxy's token


def prepare(state_dir: Path, services: list[str], trust_domain: str, proxy_uid: int | None) -> IdentityFiles:
    """Create the CA and the tokens under ``state_dir``; ``proxy_uid`` owns the
    pods' tokens (None: the current user, who also runs the proxies)."""
    issuer_dir = state_dir / "identity"
    init = subprocess.run(
        meshproxy_command("identity", "init", "--trust-domain", trust_domain, "--out", str(issuer_dir)),
        env=package_env(dict(os.environ)), capture_output=True, text=True, timeout=60,
    )
    if init.returncode != 0:
        raise DemoError(f"meshproxy identity init failed ({init.returncode}): {init.stderr.strip()}")
    issuer_dir.chmod(0o700)
    anchors = state_dir / "trust-anchors.pem"
    shutil.copyfile(issuer_dir / "ca.crt", anchors)
    anchors.chmod(0o644)
    token_dir = state_dir / "tokens"
    token_dir.mkdir(mode=0o755, exist_ok=True)
    token_dir.chmod(0o755)
    lines, token_files = [], {}
    for service in services:
        token = secrets.token_urlsafe(24)
        lines.append(f"{token} {identity_name(service, trust_domain)}")
        path = token_dir / f"{service}.token"
        path.write_text(token + "\n")
        path.chmod(0o400)
        if proxy_uid is not None:
            os.chown(path, proxy_uid, proxy_uid)
        token_files[service] = path
    tokens = issuer_dir / "tokens.txt"
    tokens.write_text("# TOKEN IDENTITY, one pod each (written by meshproxy demo)\n" + "\n".join(lines) + "\n")
    tokens.chmod(0o600)
    return IdentityFiles(trust_domain, issuer_dir, anchors, tokens, token_files)


def tap_identity(trust_domain: str) -> str:
    """Who may tap the demo's proxies over mutual TLS (Linkerd's viz tap service account)."""
    return f"tap.linkerd-viz.serviceaccount.identity.{trust_domain}"


def viz_identity(files: IdentityFiles, state_dir: Path) -> Path:
    """A certificate for the tap identity, signed by the demo's issuer, for ``meshproxy viz tap|top
    --identity-dir``: ``tls.crt`` (with the issuer's), ``tls.key`` (the user's only), ``ca.crt``."""
    from cryptography import x509

    from proxy.identity import ca

    authority, _ = ca.load_issuer(files.issuer_dir)
    name = tap_identity(files.trust_domain)
    key = ca.new_key()
    leaf = ca.sign_leaf(authority, key.public_key(), name, [x509.DNSName(name)], dt.timedelta(days=7))
    directory = state_dir / "viz"
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(authority.cert))
    ca.write_atomically(directory / "tls.key", ca.key_pem(key), 0o600)
    shutil.copyfile(files.trust_anchors, directory / "ca.crt")
    return directory


def issuer(files: IdentityFiles, listen: str, prefix: list[str], log_dir: Path) -> Child:
    """The issuer as a child process (``prefix`` runs it in a namespace)."""
    argv = prefix + meshproxy_command("identity", "serve", "--issuer", str(files.issuer_dir), "--listen", listen,
                                      "--tokens", str(files.tokens), "--trust-domain", files.trust_domain)
    return Child("issuer", argv, package_env(dict(os.environ)), log_dir / "issuer.log")


def proxy_settings(files: IdentityFiles, service: str, service_url: str) -> dict[str, str]:
    return {
        config.IDENTITY_NAME: identity_name(service, files.trust_domain),
        config.TRUST_DOMAIN: files.trust_domain,
        config.IDENTITY_SERVICE: service_url,
        config.IDENTITY_TOKEN_FILE: str(files.token_files[service]),
        config.IDENTITY_TRUST_ANCHORS: str(files.trust_anchors),
        config.TAP_IDENTITY: tap_identity(files.trust_domain),
    }
