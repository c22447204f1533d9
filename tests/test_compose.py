"""examples/compose: ``docker-compose config`` accepts it (no engine needed) and it has the pod shape.

Each app owns a network namespace; its init service (iptables-init) and its
proxy join it with ``network_mode: service:<app>``; the proxy starts only
after the init service exited successfully. Every MESHPROXY_* name is one the
proxy (proxy/config.py) or iptables-init knows, and the discovery file parses.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from proxy import config
from proxy.discovery import filespec

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "examples" / "compose" / "docker-compose.yml"
APPS = ("web", "api")


@pytest.fixture(scope="module")
def rendered() -> dict:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: ./scripts/test.sh installs it (Debian package docker-compose)")
    result = subprocess.run([binary, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_pods_share_the_app_namespace(rendered: dict) -> None:
    services = rendered["services"]
    assert set(services) == {*APPS, *(f"{a}-init" for a in APPS), *(f"{a}-proxy" for a in APPS)}
    for app in APPS:
        init, proxy_service = services[f"{app}-init"], services[f"{app}-proxy"]
        assert init["network_mode"] == f"service:{app}"
        assert proxy_service["network_mode"] == f"service:{app}"
        assert sorted(init["cap_add"]) == ["NET_ADMIN", "NET_RAW"]
        assert init["restart"] == "no"
        assert proxy_service["depends_on"][f"{app}-init"]["condition"] == "service_completed_successfully"
        assert "cap_add" not in proxy_service
        assert proxy_service["user"] == "2102"
        assert "network_mode" not in services[app]


def test_env_names_are_real_settings(rendered: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "iptables-init"))
    init_config = importlib.import_module("meshproxy_init.config")
    proxy_names = {v for k, v in vars(config).items() if k.isupper() and isinstance(v, str) and v.startswith(config.PREFIX)}
    init_names = {v for k, v in vars(init_config).items() if k.isupper() and isinstance(v, str) and v.startswith("MESHPROXY_INIT_")}
    services = rendered["services"]
    for app in APPS:
        proxy_env = services[f"{app}-proxy"]["environment"]
        assert set(proxy_env) <= proxy_names
        config.load(env={k: str(v) for k, v in proxy_env.items()})  # values the proxy accepts
        assert set(services[f"{app}-init"]["environment"]) <= init_names
        assert services[f"{app}-init"]["environment"]["MESHPROXY_INIT_PROXY_UID"] == "2102"


def test_discovery_file_is_mounted_and_valid(rendered: dict) -> None:
    services = rendered["services"]
    for app in APPS:
        env = services[f"{app}-proxy"]["environment"]
        target = env["MESHPROXY_DESTINATION"].removeprefix("file://")
        mounts = [str(m) for m in services[f"{app}-proxy"]["volumes"]]
        assert any(m.endswith("endpoints.yaml:" + target + ":ro") for m in mounts), mounts
    specs = filespec.parse_document((COMPOSE.parent / "endpoints.yaml").read_text())
    addresses = {app: services[app]["networks"]["mesh"]["ipv4_address"] for app in APPS}
    for app in APPS:
        spec = specs[f"{app}:8000"]
        assert tuple(spec.addresses[0]) == (addresses[app], 8000)
