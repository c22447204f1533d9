"""proxy/viz/command.py: the arguments, the exit codes, where proxies are found; and that the proxy
itself (``meshproxy run``) never imports proxy.viz (its idle RSS)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxy import cli
from proxy.viz import command, targets


def test_run_does_not_import_viz():
    code = ("import sys; from proxy import cli, app; cli.build_parser('run'); "
            "print(sorted(m for m in sys.modules if m.startswith('proxy.viz')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_viz_loads_the_kubernetes_client_only_when_asked(tmp_path):
    code = ("import sys; from proxy.viz import command; code = command.main(sys.argv[1:]); "
            "print(sorted(m for m in sys.modules if m.startswith(('proxy.discovery.k8s', 'proxy.viz.kube'))), code)")
    plain = subprocess.run([sys.executable, "-c", code, "stat", "--proxy", "127.0.0.1:1", "--interval", "10ms",
                            "--timeout", "500ms"], capture_output=True, text=True, timeout=60)
    assert plain.stdout.splitlines()[-1] == "[] 69", plain.stderr
    asked = subprocess.run([sys.executable, "-c", code, "stat", "--kubeconfig", str(tmp_path / "none")],
                           capture_output=True, text=True, timeout=60)
    assert asked.stdout.splitlines()[-1] == ("['proxy.discovery.k8s_client', 'proxy.discovery.k8s_wire', "
                                             "'proxy.viz.kube'] 64"), asked.stderr
    assert "cannot read the kubeconfig" in asked.stderr


def test_viz_is_a_delegated_subcommand():
    assert cli.DELEGATED["viz"][0] == "proxy.viz.command"
    help_text = command.build_parser().format_help()
    for name in ("stat", "routes", "edges", "tap", "top"):
        assert name in help_text


def test_help_says_how_the_window_is_sampled(capsys):
    with pytest.raises(SystemExit):
        command.main(["stat", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "scraped twice, --interval apart (at most the -t window)" in text
    assert "Linkerd viz's queries run over the whole -t window" in text


@pytest.mark.parametrize("argv, message", [
    (["stat", "widgets", "--proxy", "127.0.0.1:1"], "unknown resource type 'widgets'"),
    (["stat", "--proxy", "x:y"], "HOST:PORT"),
    (["stat", "--endpoints", "/nonexistent/endpoints.yaml"], "cannot read the endpoints file"),
    (["stat", "--prometheus", "http://127.0.0.1:1", "--proxy", "127.0.0.1:1"], "do not apply"),
])
def test_bad_arguments_exit_64(argv, message, capsys):
    assert command.main(argv) == command.EX_USAGE
    assert message in capsys.readouterr().err


def test_durations():
    assert (command.duration("1m"), command.duration("30s"), command.duration("500ms")) == (60.0, 30.0, 0.5)
    assert command.duration("2.5") == 2.5  # a bare number is seconds, as tap's --timeout always took
    with pytest.raises(Exception, match="duration"):
        command.duration("soon")


def test_prometheus_not_answering_exits_69(capsys):
    assert command.main(["stat", "--prometheus", "http://127.0.0.1:1", "--timeout", "1s"]) == command.EX_UNAVAILABLE
    assert "did not answer" in capsys.readouterr().err


def test_endpoints_file_gives_proxies_and_workload_labels(tmp_path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(
        "services:\n"
        "  api.shop.svc.cluster.local:80:\n"
        "    endpoints:\n"
        "      - {address: 10.0.0.5:8080, proxy: 10.0.0.5:4143,\n"
        "         labels: {namespace: shop, deployment: api, pod: api-1}}\n"
        "      - {address: 10.0.0.6:8080, proxy: 10.0.0.6:4143, labels: {meshproxy.io/admin-port: '9990', job: m}}\n"
        "      - {address: 10.0.0.7:8080}\n"  # not meshed: no proxy to scrape
        "  api2.shop.svc.cluster.local:80:\n"
        "    endpoints:\n"
        "      - {address: 10.0.0.5:8081, proxy: 10.0.0.5:4143}\n"  # the same proxy again
    )
    found = targets.from_endpoints_file(str(path))
    assert found == [
        targets.Target("10.0.0.5", 4191, (("deployment", "api"), ("namespace", "shop"), ("pod", "api-1"))),
        targets.Target("10.0.0.6", 9990, (("k8s_job", "m"),)),
    ]
    assert found[0].name() == "api-1 (10.0.0.5:4191)"
    path.write_text("services:\n  a:80:\n    endpoints:\n      - {address: 1.2.3.4:80, proxy: 1.2.3.4:4143, "
                    "labels: {meshproxy.io/admin-port: x}}\n")
    with pytest.raises(targets.TargetError, match="must be a port"):
        targets.from_endpoints_file(str(path))
    assert targets.parse_proxy("10.1.2.3") == targets.Target("10.1.2.3", 4191)
    assert targets.parse_proxy("[::1]:4191") == targets.Target("::1", 4191)
