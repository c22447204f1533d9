"""Rendered proxy configurations that the scenarios start: every placeholder filled, and accepted by nginx itself."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmarks.lib.servers import render


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is installed by the README's test command")
def test_nginx_grpc_config_is_valid(tmp_path):
    conf = render("nginx-grpc.conf.tmpl", tmp_path / "nginx.conf", run_dir=tmp_path, port=1, name="grpc-nginx",
                  upstream_port=2)
    text = conf.read_text()
    assert "{{" not in text and "grpc_pass grpc://grpc_backend;" in text
    (tmp_path / "nginx-tmp").mkdir()
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "err.log"), "-c", str(conf)],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
