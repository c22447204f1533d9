"""benchmarks/lib/tlsload.py: building the handshake tool, reading its JSON, and short real runs.

The real runs go against Python's ssl module on loopback (``tls_server`` in
conftest.py): the tool must do full handshakes only (never resume) unless
asked to, send the SNI it is given, and count a wrong status, a server that is
not TLS and a closed port as errors, which fail the run. Resuming is checked
against ``openssl s_server`` (which issues one ticket per handshake).
"""

from __future__ import annotations

import json
import shutil
import ssl
from pathlib import Path

import pytest

from benchmarks.lib import meshtls, tlsload
from benchmarks.lib.procs import free_port

pytestmark = pytest.mark.timeout(60)

needs_cc = pytest.mark.skipif(tlsload.compiler() is None, reason="no C compiler")


def _out(**changes) -> str:
    raw = {"connections": 20, "seconds": 2.001, "handshakes": 2000, "per_second": 999.5,
           "errors": {"connect": 0, "tls": 0, "io": 0, "status": 0}}
    raw.update(changes)
    return json.dumps(raw) + "\n"


# ---- parsing -------------------------------------------------------------------------


def test_parse_a_clean_run():
    res = tlsload.parse(_out(), ["handshake", "-p", "1"])
    assert res.ok and res.failure == ""
    assert (res.connections, res.handshakes, res.per_second, res.seconds) == (20, 2000, 999.5, 2.001)
    assert res.errors == {"connect": 0, "tls": 0, "io": 0, "status": 0}
    assert res.to_json()["command"] == ["handshake", "-p", "1"]
    assert res.to_json()["per_second"] == 999.5


@pytest.mark.parametrize("kind", tlsload.ERROR_KINDS)
def test_any_error_fails_the_run_and_is_named(kind):
    errors = {k: 0 for k in tlsload.ERROR_KINDS} | {kind: 3}
    res = tlsload.parse(_out(errors=errors))
    assert not res.ok
    assert res.failure == f"errors: {kind} 3"


def test_no_handshake_is_a_failure():
    res = tlsload.parse(_out(handshakes=0, per_second=0.0))
    assert not res.ok and res.failure == "no handshake completed"


def test_missing_error_kinds_count_as_zero():
    res = tlsload.parse(_out(errors={"tls": 0}))
    assert res.ok and res.errors == {"connect": 0, "tls": 0, "io": 0, "status": 0}


@pytest.mark.parametrize("text", ["", "\n", "not json", "[1, 2]", '{"connections": 1}',
                                  json.dumps({"connections": 1, "seconds": 1, "handshakes": 1,
                                              "per_second": 1, "errors": []})])
def test_output_that_is_not_the_tools_object_is_rejected(text):
    with pytest.raises(ValueError):
        tlsload.parse(text)


def test_command_line():
    params = tlsload.HandshakeParams(7, 1.5, sni="api.x", host="h", client_cert=Path("/c.pem"))
    argv = tlsload.command(Path("/bin/hs"), "127.0.0.1", 443, params, pin=["taskset", "-c", "0"])
    assert argv == ["taskset", "-c", "0", "/bin/hs", "-a", "127.0.0.1", "-p", "443", "-c", "7", "-d", "1.5",
                    "-H", "h", "-s", "api.x", "-cert", "/c.pem"]
    bare = tlsload.command(Path("/bin/hs"), "127.0.0.1", 443, tlsload.HandshakeParams(1, 2.0))
    assert "-s" not in bare and "-cert" not in bare and "-r" not in bare
    assert tlsload.command(Path("/bin/hs"), "h", 1, tlsload.HandshakeParams(1, 2.0, resume=True))[-2:] == ["-r", "1"]
    assert params.describe()["client_certificate"] == "yes"


# ---- building ------------------------------------------------------------------------


@needs_cc
def test_build_reuses_the_binary_and_rebuilds_an_edited_source(tmp_path):
    source = tmp_path / "handshake.c"
    shutil.copy(tlsload.SOURCE, source)
    out = tmp_path / "build"
    first = tlsload.build(source, out)
    assert first.exists() and first.stat().st_mode & 0o111
    assert tlsload.build(source, out) == first
    source.write_text(source.read_text() + "\n/* edited */\n")
    second = tlsload.build(source, out)
    assert second != first and second.exists()
    assert not first.exists(), "the stale binary is removed"
    assert [p.name for p in out.iterdir()] == [second.name], "no temporary files left"


def test_build_errors_say_what_is_missing(tmp_path, monkeypatch):
    broken = tmp_path / "broken.c"
    broken.write_text("#include <openssl/not_a_header.h>\nint main(void) { return 0; }\n")
    if tlsload.compiler() is not None:
        with pytest.raises(tlsload.BuildError, match="libssl-dev"):
            tlsload.build(broken, tmp_path / "build")
    monkeypatch.setattr(tlsload, "compiler", lambda: None)
    with pytest.raises(tlsload.BuildError, match="build-essential"):
        tlsload.build(broken, tmp_path / "build")
    res = tlsload.run("127.0.0.1", 1, tlsload.HandshakeParams(1, 0.2))
    assert not res.ok and "no C compiler" in res.failure


def test_the_build_directory_is_ignored_by_git():
    ignore = (tlsload.SOURCE.parent / ".gitignore").read_text().split()
    assert "build/" in ignore


# ---- short real runs -----------------------------------------------------------------


@needs_cc
def test_full_handshakes_against_a_python_tls_server(tls_server):
    server = tls_server()
    res = tlsload.run("127.0.0.1", server.port, tlsload.HandshakeParams(4, 1.0, sni=meshtls.SERVER_ID))
    assert res.ok, res.failure
    assert res.handshakes > 0 and res.per_second > 0
    assert res.errors == {"connect": 0, "tls": 0, "io": 0, "status": 0}
    assert server.handshakes >= res.handshakes
    assert server.resumed == 0, "every handshake is a full one"
    assert set(server.server_names) == {meshtls.SERVER_ID}


@needs_cc
def test_resume_offers_the_first_ticket_on_every_later_connection(certs):
    """Against OpenSSL's own server (one ticket per handshake, as meshproxy's inbound issues)."""
    import socket
    import subprocess
    import time

    leaf = certs[meshtls.SERVER_ID]
    port = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(leaf.chain),
                               "-key", str(leaf.key), "-www", "-tls1_3", "-num_tickets", "1", "-naccept", "100000"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not listen"
                time.sleep(0.05)
        res = tlsload.run("127.0.0.1", port, tlsload.HandshakeParams(4, 1.0, sni=meshtls.SERVER_ID, resume=True))
        assert res.ok, res.failure
        # Only the connections that started before the first ticket came back shake hands in full.
        assert res.resumed >= res.handshakes - 8 > 0
        full = tlsload.run("127.0.0.1", port, tlsload.HandshakeParams(4, 0.5, sni=meshtls.SERVER_ID))
        assert full.ok and full.resumed == 0
    finally:
        server.kill()
        server.wait(5)


@needs_cc
def test_a_client_certificate_can_be_presented(tls_server, certs):
    server = tls_server()
    server.ctx.verify_mode = ssl.CERT_REQUIRED
    server.ctx.load_verify_locations(str(certs.ca))
    params = tlsload.HandshakeParams(2, 0.5, sni=meshtls.SERVER_ID, client_cert=certs[meshtls.CLIENT_ID].pem)
    res = tlsload.run("127.0.0.1", server.port, params)
    assert res.ok, res.failure


@needs_cc
def test_an_error_status_fails_the_run(tls_server):
    server = tls_server(reply=b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    res = tlsload.run("127.0.0.1", server.port, tlsload.HandshakeParams(2, 0.5))
    assert not res.ok
    assert res.errors["status"] > 0 and "status" in res.failure


@needs_cc
def test_a_server_without_tls_fails_the_run(tls_server):
    server = tls_server(tls=False)
    res = tlsload.run("127.0.0.1", server.port, tlsload.HandshakeParams(2, 0.5))
    assert not res.ok
    assert res.errors["tls"] > 0 and res.handshakes == 0


@needs_cc
def test_a_closed_port_fails_the_run():
    res = tlsload.run("127.0.0.1", free_port(), tlsload.HandshakeParams(2, 0.3))
    assert not res.ok
    assert res.errors["connect"] > 0
