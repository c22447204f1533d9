"""examples/compose: ``docker-compose config`` accepts it (no engine needed) and it has the pod shape.

Each app owns a network namespace; its init service (iptables-init) and its
proxy join it with ``network_mode: service:<app>``; the proxy starts only
after the init service exited successfully. Every MESHPROXY_* name is one the
proxy (proxy/config.py) or iptables-init knows, and the discovery file parses.
The identity issuer's command is one ``meshproxy identity`` accepts, and its
token file, the proxies' tokens and names, and the discovery file's
identities agree.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from proxy import config
from proxy.discovery import filespec
from proxy.identity import ca, tokens
from proxy.identity.command import build_parser as identity_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "examples" / "compose" / "docker-compose.yml"
APPS = ("web", "api")
ISSUER, ISSUER_INIT = "identity", "identity-init"


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
    assert set(services) == {*APPS, *(f"{a}-init" for a in APPS), *(f"{a}-proxy" for a in APPS), ISSUER, ISSUER_INIT}
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
    proxy_names = {v for k, v in vars(config).items()
                   if k.isupper() and isinstance(v, str) and v.startswith(config.PREFIX)}
    init_names = {v for k, v in vars(init_config).items()
                  if k.isupper() and isinstance(v, str) and v.startswith("MESHPROXY_INIT_")}
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


# ---- identity -------------------------------------------------------------------


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """container path -> (source, mode) of a rendered service's volumes."""
    out = {}
    for mount in service.get("volumes", []):
        source, target, mode = (str(mount).split(":") + ["rw"])[:3]
        out[target] = (source, mode)
    return out


def issuer_args(rendered: dict):  # noqa: ANN201
    command = rendered["services"][ISSUER]["command"]
    assert command[:2] == ["identity", "serve"]  # the image's entrypoint is meshproxy
    return identity_parser().parse_args(command[1:])


def test_issuer_runs_a_command_the_issuer_accepts(rendered: dict) -> None:
    services = rendered["services"]
    args = issuer_args(rendered)
    assert args.tokens and not args.token_review
    issuer_mounts = mounts(services[ISSUER])
    assert issuer_mounts[args.issuer][1] == "ro"
    assert issuer_mounts[args.tokens][0].endswith("examples/compose/identity/tokens.txt")
    # The issuer's directory is the volume identity-init fills, and it starts after that.
    init_mounts = mounts(services[ISSUER_INIT])
    assert issuer_mounts[args.issuer][0] == init_mounts[args.issuer][0]
    assert init_mounts[args.issuer][0] in rendered["volumes"]
    assert services[ISSUER]["depends_on"][ISSUER_INIT]["condition"] == "service_completed_successfully"
    # Its own health check: the image's one asks a proxy admin port.
    assert str(args.listen.rpartition(":")[2]) in " ".join(services[ISSUER]["healthcheck"]["test"])


def test_identity_init_script(rendered: dict, tmp_path: Path) -> None:
    """The init step runs `meshproxy identity init` once, keeps the root key out of the volume,
    and copies the trust anchor to the volume the proxies mount; run here with paths moved to tmp_path."""
    init = rendered["services"][ISSUER_INIT]
    assert init["entrypoint"][0] == "/bin/sh" and init["user"] == "0"
    [script] = init["command"]
    assert "meshproxy identity init --trust-domain cluster.local --out /ca" in script
    local = re.sub(r"/ca(?=[/\s]|$)", lambda _: str(tmp_path / "ca"),
                   script.replace("/trust-anchors", str(tmp_path / "anchors")))
    local = local.replace("meshproxy identity", f"{shlex.quote(sys.executable)} -m proxy identity")
    local = local.replace("chown -R 2102:2102", "true")  # not root here
    (tmp_path / "anchors").mkdir()
    anchors = []
    for _ in range(2):  # a second `up` keeps the CA it made the first time
        result = subprocess.run(["/bin/sh", "-ec", local], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == ["ca.crt", "issuer.crt", "issuer.key"]
        anchors.append((tmp_path / "anchors" / "ca.crt").read_bytes())
    assert anchors[0] == anchors[1] == (tmp_path / "ca" / "ca.crt").read_bytes()
    # What `identity serve --issuer` loads.
    ca.load_issuer(tmp_path / "ca")


def test_each_proxy_has_an_identity_its_token_proves(rendered: dict) -> None:
    services = rendered["services"]
    args = issuer_args(rendered)
    checker = tokens.TokenFile(COMPOSE.parent / "identity" / "tokens.txt", "cluster.local")
    specs = filespec.parse_document((COMPOSE.parent / "endpoints.yaml").read_text())
    anchors_volumes = set()
    for app in APPS:
        service = services[f"{app}-proxy"]
        env = service["environment"]
        settings = config.load(env={k: str(v) for k, v in env.items()}).identity
        assert settings.name == f"{app}.default.serviceaccount.identity.cluster.local"
        proxy_mounts = mounts(service)
        token_source, mode = proxy_mounts[settings.token_file]
        assert mode == "ro"
        token = Path(token_source).read_text().strip()
        assert asyncio.run(checker.authenticate(token)).name == settings.name
        # The issuer URL names the issuer service, on its port, and its certificate covers that name.
        url = urlsplit(settings.service)
        assert url.hostname == ISSUER and url.hostname in args.server_name
        assert url.port == int(args.listen.rpartition(":")[2])
        assert service["depends_on"][ISSUER]["condition"] == "service_healthy"
        # Trust anchors: a read-only mount of the volume identity-init fills.
        directory, _, file_name = settings.trust_anchors.rpartition("/")
        source, mode = proxy_mounts[directory]
        assert file_name == "ca.crt" and mode == "ro"
        anchors_volumes.add(source)
        # Discovery names the same identity, so the hop to this proxy is mutual TLS.
        [endpoint] = specs[f"{app}:8000"].snapshot.endpoints
        assert endpoint.identity == settings.name
    [volume] = anchors_volumes
    assert mounts(services[ISSUER_INIT])["/trust-anchors"][0] == volume
    # The issuer's key material is not mounted into the proxies.
    issuer_volume = mounts(services[ISSUER])[args.issuer][0]
    assert all(issuer_volume not in {m[0] for m in mounts(services[f"{a}-proxy"]).values()} for a in APPS)
