"""Tests of proxy/cli.py: the command's dispatch (subcommand behaviour is tested beside each module)."""

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
