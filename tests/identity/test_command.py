"""``meshproxy identity serve`` as a real process, and its start-up checks (exit codes)."""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop
from cryptography import x509

from helpers.clients import clean_env
from helpers.ports import free_port
from proxy import cli
from proxy.identity import ca, client, command, server
from proxy.identity.tokens import TokenFile

from .support import DAY, TD, WEB, authorities, metric

REPO = Path(__file__).resolve().parents[2]


def _issuer_dir(tmp_path: Path, **kwargs) -> Path:
    root, issuer = authorities(**kwargs)
    out = tmp_path / "issuer"
    ca.write_authorities(out, root, issuer)
    (tmp_path / "tokens").write_text(f"web-token {WEB.name}\n")
    return out


def _serve_argv(tmp_path: Path, issuer_dir: Path, port: int) -> list[str]:
    return ["identity", "serve", "--issuer", str(issuer_dir), "--listen", f"127.0.0.1:{port}",
            "--tokens", str(tmp_path / "tokens")]


def _wait_for(proc: subprocess.Popen, needle: str, timeout: float = 10.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not logged; got {lines}")


def test_serve_process_end_to_end(tmp_path):
    issuer_dir = _issuer_dir(tmp_path)
    port = free_port()
    argv = [sys.executable, "-m", "proxy", *_serve_argv(tmp_path, issuer_dir, port),
            "--leaf-lifetime", "1h", "--log-format", "json"]
    proc = subprocess.Popen(argv, cwd=REPO, env=clean_env(), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        _wait_for(proc, "identity issuer serving")
        anchors = (issuer_dir / "ca.crt").read_text()
        url = f"https://127.0.0.1:{port}"

        async def main():
            got = await client.request_certificate(url, "web-token", ca.new_key(), WEB.name, TD, anchors, 5)
            with pytest.raises(client.CertifyError):
                await client.request_certificate(url, "bad", ca.new_key(), WEB.name, TD, anchors, 5)
            from proxy.identity import httpio

            _, _, raw = await httpio.request(url + "/metrics", "GET", b"", None, client.client_ssl_context(anchors), 5)
            return got, raw.decode()

        (_, _, not_after), text = uvloop.run(main())
        assert dt.timedelta(minutes=59) < not_after - ca.utcnow() <= dt.timedelta(hours=1)
        assert metric(text, "identity_issued_total") == 1
        assert metric(text, 'identity_refused_total{reason="unauthenticated"}') == 1
        issued = _wait_for(proc, '"identity issued"')[-1]
        assert f'"identity": "{WEB.name}"' in issued and '"level": "info"' in issued
        refused = _wait_for(proc, '"identity refused"')[-1]
        assert '"reason": "unauthenticated"' in refused
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kwargs, state", [
    pytest.param(dict(issuer_life=dt.timedelta(hours=1), now=ca.utcnow() - 2 * DAY), "expired", id="expired"),
    pytest.param(dict(not_before=ca.utcnow() + DAY), "not yet valid", id="not-yet-valid"),
])
def test_issuer_outside_its_validity_exits_69(tmp_path, capsys, kwargs, state):
    issuer_dir = _issuer_dir(tmp_path, **kwargs)
    assert cli.main(_serve_argv(tmp_path, issuer_dir, free_port())) == 69
    err = capsys.readouterr().err
    assert f"issuer certificate {issuer_dir / 'issuer.crt'} is {state}" in err


def test_unusable_arguments_exit_64(tmp_path, capsys):
    issuer_dir = _issuer_dir(tmp_path)
    port = free_port()
    assert cli.main(_serve_argv(tmp_path, tmp_path / "missing", port)) == 64
    assert "issuer.crt" in capsys.readouterr().err
    (tmp_path / "tokens").write_text("one-field\n")
    assert cli.main(_serve_argv(tmp_path, issuer_dir, port)) == 64
    assert "expected 'TOKEN IDENTITY'" in capsys.readouterr().err
    (tmp_path / "tokens").write_text(f"t {WEB.name}\n")
    assert cli.main([*_serve_argv(tmp_path, issuer_dir, port), "--leaf-lifetime", "0"]) == 64
    with pytest.raises(SystemExit):  # --tokens and --token-review exclude each other
        cli.main([*_serve_argv(tmp_path, issuer_dir, port), "--token-review"])


def test_listener_that_cannot_be_bound_exits_69(tmp_path):
    # A child process: serve configures logging for the process before binding.
    import socket

    issuer_dir = _issuer_dir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "proxy", *_serve_argv(tmp_path, issuer_dir, port)], cwd=REPO,
                              env=clean_env(), capture_output=True, text=True, timeout=20)
    assert done.returncode == 69
    assert "cannot listen" in done.stderr


def test_token_review_outside_a_cluster_needs_an_api_url(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    issuer_dir = _issuer_dir(tmp_path)
    argv = ["identity", "serve", "--issuer", str(issuer_dir), "--listen", "127.0.0.1:0", "--token-review"]
    assert cli.main(argv) == 64
    assert "--k8s-api" in capsys.readouterr().err


def test_given_serving_certificate_is_used(tmp_path):
    root, issuer = authorities()
    key = ca.new_key()
    leaf = ca.sign_leaf(issuer, key.public_key(), "identity.example", [x509.DNSName("identity.example")], DAY)
    (tmp_path / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(issuer.cert))
    (tmp_path / "tls.key").write_bytes(ca.key_pem(key))
    (tmp_path / "tokens").write_text(f"web-token {WEB.name}\n")
    args = argparse.Namespace(tls_cert=str(tmp_path / "tls.crt"), tls_key=str(tmp_path / "tls.key"), server_name=[])
    ctx = command._serving_context(args, issuer, "127.0.0.1")

    async def main():
        service = server.IssuerService(issuer, TokenFile(tmp_path / "tokens", TD), TD, DAY)
        srv = await server.start(service, "127.0.0.1", 0, ctx)
        port = srv.sockets[0].getsockname()[1]
        try:
            anchors = ca.cert_pem(root.cert).decode()
            # The certificate names identity.example, not 127.0.0.1.
            with pytest.raises(client.CertifyError) as info:
                await client.request_certificate(f"https://127.0.0.1:{port}", "web-token", ca.new_key(), WEB.name, TD,
                                                 anchors, 5)
            assert info.value.code == "unavailable" and "mismatch" in info.value.message
        finally:
            srv.close()

    uvloop.run(main())
