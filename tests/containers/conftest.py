"""Fixtures of the container tests: the engine, the two images built offline, and the figures.

The images are built the way the README's compose section says for a
machine without a registry: ``scripts/images.sh --offline``, with
``--local-base`` when the engine has no ``python:3.11-slim-bookworm`` (always
for our own dockerd, whose data root is new). The local base's root file
systems are cached (``/var/cache/meshproxy/docker-base``), so only the first
run on a machine runs debootstrap. The figures measured (build times, image
sizes, idle RSS, start-to-ready) are printed at the end of the run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers import engine as engine_module

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
PROXY_IMAGE, INIT_IMAGE = f"meshproxy:{VERSION}", f"meshproxy-init:{VERSION}"
CONTROLLER_IMAGE = f"meshproxy-controller:{VERSION}"
# A clean machine runs debootstrap (a few minutes); a cached one only imports.
BUILD_TIMEOUT = 1200

FIGURES: dict[str, str] = {}


# Package scope: the engine (ours, if we started one) stops once the last
# container test is done, not at the end of the whole run.
@pytest.fixture(scope="package")
def engine() -> Iterator[engine_module.Engine]:
    try:
        running = engine_module.start()
    except engine_module.EngineUnavailable as why:
        pytest.skip(f"no Docker engine: dockerd cannot start here: {why}")
    except FileNotFoundError as why:
        pytest.fail(f"{why}: ./scripts/test.sh installs it")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="package")
def images(engine: engine_module.Engine) -> dict[str, str]:
    """The three images, built offline (the builds' RUN steps have no network)."""
    args = ["--offline"]
    if engine.own or engine.docker("image", "inspect", "python:3.11-slim-bookworm", check=False).returncode:
        args.append("--local-base")
    env = {**engine.env, "DOCKER": engine.client, "PYTHON": sys.executable,
           "PATH": engine.env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"}
    start = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "images.sh"), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    FIGURES["scripts/images.sh " + " ".join(args)] = f"{time.monotonic() - start:.0f} s"
    for line in result.stderr.splitlines():
        if line.startswith(("images: built", "local-base: reusing", "local-base: debootstrap")):
            FIGURES[line.split(":", 1)[0] + ": " + line.split(":", 1)[1].strip()] = ""
    for image in (PROXY_IMAGE, INIT_IMAGE, CONTROLLER_IMAGE):
        size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
        FIGURES[f"{image} size"] = f"{size / 1e6:.0f} MB"
    return {"proxy": PROXY_IMAGE, "init": INIT_IMAGE, "controller": CONTROLLER_IMAGE}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("meshproxy containers: figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}{': ' + value if value else ''}")


@pytest.fixture(scope="session")
def figures() -> dict[str, str]:
    return FIGURES
