"""The iptables-init image on its own, as an init container uses it.

A holder container owns a network namespace with no network (as a pod's
pause container would); the image runs in it with NET_ADMIN and NET_RAW,
the rules are read back with the image's own iptables and compared with its
dry run, then its cleanup leaves the nat table as it found it. Without the
capabilities it refuses with its documented status (77).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.containers.engine import SAVE_NAT, Engine

pytestmark = pytest.mark.timeout(1500)  # the first run on a machine builds the base images

CAPS = ["--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW"]


@pytest.fixture
def holder(engine: Engine, images: dict[str, str]) -> Iterator[str]:
    name = f"mpinit-holder-{int(time.time() * 1000) % 10**8}"
    engine.docker("run", "-d", "--name", name, "--network", "none", "--entrypoint", "sleep", images["init"], "600")
    try:
        yield name
    finally:
        engine.docker("rm", "-f", name, check=False)


def nat_rules(engine: Engine, image: str, holder: str) -> list[str]:
    saved = engine.docker("run", "--rm", f"--network=container:{holder}", *CAPS, "--entrypoint", "sh", image,
                          "-c", SAVE_NAT).stdout
    return [line for line in saved.splitlines() if line.startswith(("-A", ":")) and "MESHPROXY" in line]


def test_apply_read_back_and_clean_up(engine: Engine, images: dict[str, str], holder: str) -> None:
    image = images["init"]
    run = ["run", "--rm", f"--network=container:{holder}", *CAPS, "-e", "MESHPROXY_INIT_PROXY_UID=2102", image]
    assert nat_rules(engine, image, holder) == []

    applied = engine.docker(*run, "--skip-inbound-ports", "22")
    assert "verified" in applied.stderr, applied.stderr
    rules = nat_rules(engine, image, holder)
    dry = engine.docker("run", "--rm", "--network", "none", "-e", "MESHPROXY_INIT_PROXY_UID=2102", image,
                        "--dry-run", "--skip-inbound-ports", "22").stdout
    expected = [line for line in dry.splitlines() if line.startswith(("-A", ":")) and "MESHPROXY" in line]
    # What is in the table is the dry run, line for line (counters aside;
    # iptables-nft-save lists the built-in chains' rules where it likes).
    assert sorted(re.sub(r"\[\d+:\d+\]", "[0:0]", r) for r in rules) == sorted(expected)
    assert any("--uid-owner 2102" in r for r in rules)
    assert any("REDIRECT --to-ports 4143" in r for r in rules)
    assert any("--dports 22 " in r for r in rules)

    # A second run refills the chains: the same table.
    engine.docker(*run, "--skip-inbound-ports", "22")
    assert nat_rules(engine, image, holder) == rules

    engine.docker(*run, "--cleanup")
    assert nat_rules(engine, image, holder) == []


def test_without_capabilities_it_says_so(engine: Engine, images: dict[str, str]) -> None:
    result = engine.docker("run", "--rm", "--network", "none", "--cap-drop", "NET_ADMIN", "--cap-drop", "NET_RAW",
                           images["init"], check=False)
    assert result.returncode == 77, result.stdout + result.stderr
    assert "NET_ADMIN" in result.stderr
