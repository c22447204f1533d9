"""The identity issuer as tests run it: ``meshproxy identity init`` + ``identity serve`` as a real
process on a loopback port, with a token per identity, and the settings a proxy needs to use it."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from pathlib import Path

from helpers.clients import clean_env
from helpers.meshproxy import COMMAND, REPO
from helpers.ports import free_port

TRUST_DOMAIN = "cluster.local"
BASE = COMMAND[:-1]  # `python -m proxy` without the `run` subcommand


def identity_name(sa: str, ns: str = "default") -> str:
    return f"{sa}.{ns}.serviceaccount.identity.{TRUST_DOMAIN}"


class Issuer:
    def __init__(self, directory: Path, identities: list[str], leaf_lifetime: str = "24h") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.anchors = self.dir / "ca.crt"
        self.tokens: dict[str, Path] = {}
        lines = []
        for name in identities:
            token = secrets.token_hex(16)
            path = self.dir / f"token-{name.split('.')[0]}-{name.split('.')[1]}"
            path.write_text(token + "\n")
            self.tokens[name] = path
            lines.append(f"{token} {name}")
        (self.dir / "tokens").write_text("\n".join(lines) + "\n")
        self.leaf_lifetime = leaf_lifetime
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "issuer.log"

    def start(self) -> Issuer:
        subprocess.run([*BASE, "identity", "init", "--trust-domain", TRUST_DOMAIN, "--out", str(self.dir)],
                       cwd=REPO, env=clean_env(), check=True, capture_output=True, timeout=60)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*BASE, "identity", "serve", "--issuer", str(self.dir), "--listen", f"127.0.0.1:{self.port}",
                 "--tokens", str(self.dir / "tokens"), "--leaf-lifetime", self.leaf_lifetime],
                cwd=REPO, env=clean_env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"issuer exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("issuer did not listen within 20s")

    def env(self, name: str) -> dict[str, str]:
        """The proxy settings for identity ``name`` (which must have a token here)."""
        return {
            "MESHPROXY_IDENTITY_NAME": name,
            "MESHPROXY_IDENTITY_SERVICE": self.url,
            "MESHPROXY_IDENTITY_TOKEN_FILE": str(self.tokens[name]),
            "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(self.anchors),
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
