"""Tests of proxy/cli.py: the command's dispatch (subcommand behaviour is tested beside each module)."""

import os
import subprocess
import sys

from proxy import cli


def test_every_delegated_subcommand_is_listed_and_importable():
    import importlib

    help_text = cli.build_parser().format_help()
    for name, (module, _) in cli.DELEGATED.items():
        assert name in help_text
        assert callable(importlib.import_module(module).main)


def test_profile_prints_a_service_profile_the_policy_parser_accepts(tmp_path):
    from proxy.policy.parse import parse

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "openapi: 3.0.0\ninfo: {title: books, version: '1'}\npaths:\n"
        "  /books/{id}:\n    get: {responses: {'200': {description: ok}}}\n"
    )
    out = subprocess.run([sys.executable, "-m", "proxy", "profile", "--open-api", str(spec),
                          "books.default.svc.cluster.local"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "kind: ServiceProfile" in out.stdout
    policy = parse(out.stdout).get("books.default.svc.cluster.local")
    assert policy is not None and [r.name for r in policy.ordered_routes] == ["GET /books/{id}"]


def test_version_says_whether_the_fast_path_is_compiled(capsys):
    assert cli.main(["version"]) == 0
    assert "fast path compiled" in capsys.readouterr().out


def test_run_is_parsed_without_argparse_and_anything_else_goes_to_it():
    assert cli._plain_run(["run"]) == (True, None)
    assert cli._plain_run(["run", "--config", "a.yaml"]) == (True, "a.yaml")
    assert cli._plain_run(["run", "--config=a.yaml"]) == (True, "a.yaml")
    for argv in (["run", "--config"], ["run", "--config", "-h"], ["run", "--conf", "a"], ["run", "-h"],
                 ["run", "x"], ["version"], []):
        assert cli._plain_run(argv) == (False, None), argv
    out = subprocess.run([sys.executable, "-m", "proxy", "run", "--config"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "expected one argument" in out.stderr


# Modules a proxy with the default settings must not load: each costs every
# sidecar resident memory for a feature that is off (benchmarks/RESULTS.md, Memory).
NOT_AT_IDLE = (
    "structlog", "argparse", "json", "ctypes", "yaml", "cryptography", "OpenSSL", "h2", "hpack", "dns",
    "prometheus_client", "proxy.identity", "proxy.discovery", "proxy.telemetry.tapserver",
    "proxy.telemetry.tap", "proxy.telemetry.tracing", "proxy.telemetry.trace_export",
    "proxy.telemetry.accesslog", "proxy.policy.model", "proxy.policy.routes", "proxy.outbound.policy",
    "proxy.outbound.mirror", "pathlib", "urllib", "importlib.util", "dataclasses", "copy",
)


def test_run_with_the_defaults_loads_no_module_for_a_feature_that_is_off():
    import site

    from tests.helpers.meshproxy import MeshProxy

    # As the installed console script starts it (no runpy, which -m would add), and with -S and the
    # site-packages on PYTHONPATH: this virtualenv's editable-install finder loads pathlib and urllib.
    script = "import sys; from proxy.cli import main; sys.exit(main(['run']))"
    proxy_proc = MeshProxy(command=[sys.executable, "-S", "-X", "importtime", "-c", script],
                           env={"MESHPROXY_LOG_LEVEL": "info", "PYTHONPATH": os.pathsep.join(site.getsitepackages())})
    with proxy_proc:
        proxy_proc.start()
        assert proxy_proc.admin_request("GET", "/ready")[0] == 200
    loaded = {line.rsplit("|", 1)[1].strip() for line in proxy_proc.stderr_lines if line.startswith("import time:")}
    assert "proxy.app" in loaded and "uvloop" in loaded  # the listing is real
    unwanted = sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_AT_IDLE))
    assert unwanted == []
