"""The meshhop and handshake scenarios' pure parts: their rendered configs (checked by
haproxy -c and nginx -t themselves when installed), meshproxy's endpoints file,
the verdicts, and the table touch-ups."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.lib import bound, meshtls
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.report import Table
from benchmarks.lib.servers import render
from benchmarks.scenarios import SCENARIOS, handshake, meshhop

pytestmark = pytest.mark.timeout(60)


def _values(certs: meshtls.MeshCerts, run_dir: Path, name: str) -> dict:
    client, server = certs[meshtls.CLIENT_ID], certs[meshtls.SERVER_ID]
    return {
        "run_dir": run_dir, "name": name, "port": 21140, "peer_port": 21143, "upstream_port": 21150,
        "ca_file": certs.ca, "server_id": meshtls.SERVER_ID,
        "client_pem": client.pem, "client_chain": client.chain, "client_key": client.key,
        "server_pem": server.pem, "server_chain": server.chain, "server_key": server.key,
    }


HAPROXY = {
    "haproxy-meshhop-client.cfg.tmpl": [
        f"ssl crt {{client_pem}} ca-file {{ca_file}} verify required sni str({meshtls.SERVER_ID})"
        f" verifyhost {meshtls.SERVER_ID} ssl-min-ver TLSv1.3", "http-reuse always", "nbthread 1",
        "server b 127.0.0.1:21143 "],
    "haproxy-meshhop-server.cfg.tmpl": [
        "bind 127.0.0.1:21140 ssl crt {server_pem} ca-file {ca_file} verify required ssl-min-ver TLSv1.3",
        "server nginx 127.0.0.1:21150"],
    "haproxy-handshake.cfg.tmpl": [
        "tune.ssl.cachesize 0",
        "ssl crt {server_pem} ca-file {ca_file} verify optional ssl-min-ver TLSv1.3 no-tls-tickets"],
}
NGINX = {
    "nginx-meshhop-client.conf.tmpl": [
        "proxy_pass https://mesh_peer;", "proxy_ssl_certificate {client_chain};",
        "proxy_ssl_certificate_key {client_key};", "proxy_ssl_trusted_certificate {ca_file};",
        "proxy_ssl_verify on;", f"proxy_ssl_name {meshtls.SERVER_ID};", "proxy_ssl_server_name on;",
        "proxy_ssl_session_reuse on;", "proxy_ssl_protocols TLSv1.3;", "keepalive 1024;"],
    "nginx-meshhop-server.conf.tmpl": [
        "listen 127.0.0.1:21140 ssl", "ssl_verify_client on;", "ssl_client_certificate {ca_file};",
        "ssl_protocols TLSv1.3;", "server 127.0.0.1:21150;"],
    "nginx-handshake.conf.tmpl": [
        "ssl_session_cache off;", "ssl_session_tickets off;", "ssl_verify_client optional;",
        "ssl_protocols TLSv1.3;", "ssl_certificate {server_chain};"],
}


def _rendered(template: str, expected: list[str], certs, tmp_path, filename: str):
    """The rendered config, checked for leftover placeholders and the lines it must hold."""
    values = _values(certs, tmp_path, "t")
    conf = render(template, tmp_path / filename, **values)
    text = conf.read_text()
    assert "{{" not in text
    for line in expected:
        assert line.format(**values) in text
    return conf


@pytest.mark.parametrize("template", sorted(HAPROXY))
def test_haproxy_configs(template, certs, tmp_path):
    conf = _rendered(template, HAPROXY[template], certs, tmp_path, "haproxy.cfg")
    if shutil.which("haproxy"):
        done = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("template", sorted(NGINX))
def test_nginx_configs(template, certs, tmp_path):
    conf = _rendered(template, NGINX[template], certs, tmp_path, "nginx.conf")
    if shutil.which("nginx"):
        (tmp_path / "nginx-tmp").mkdir()
        done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "err.log"), "-c", str(conf)],
                              capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("tls", [True, False])
def test_meshproxy_reads_the_endpoints_file(tls, tmp_path):
    from proxy.discovery.filespec import parse_document

    out = render("endpoints-meshhop.yaml.tmpl", tmp_path / "endpoints.yaml",
                 **meshhop.endpoints_values(8080, 4143, tls))
    services = parse_document(out.read_text())
    assert list(services) == [meshhop.SERVICE]
    (endpoint,) = services[meshhop.SERVICE].snapshot.endpoints
    assert endpoint.address == ("127.0.0.1", 8080)
    assert endpoint.proxy == ("127.0.0.1", 4143)
    assert endpoint.identity == (meshtls.SERVER_ID if tls else None)


def test_both_scenarios_are_registered():
    assert SCENARIOS["meshhop"] is meshhop and SCENARIOS["handshake"] is handshake


@pytest.mark.parametrize(("value", "word"), [(1.0, "meets"), (1.3, "meets"), (0.99, "progress"),
                                             (0.5, "progress"), (0.49, "not done")])
def test_meshhop_verdict(value, word):
    assert word in meshhop.verdict(value)


def _contender(name: str, proxy_busy: float, load_busy: float, own: float) -> Contender:
    servers = [] if name == "direct" else [object()]
    sample = Sample(1, True, metrics={"proxy_cpu_busy": proxy_busy, "load_cpu_busy": load_busy, "proxy_own_cpu": own})
    return Contender(name, servers=servers, rounds=[sample])  # type: ignore[list-item]


def test_load_bound_and_shared_rows_are_flagged():
    contenders = [_contender("direct", 5, 100, 0), _contender("haproxy", 70, 99, 68),
                  _contender("meshproxy", 98, 99, 95), _contender("nginx", 60, 80, 58),
                  _contender("meshproxy-plain", 100, 70, 71)]
    table = Table("t", ["variant", "status"], [[c.name, "ok"] for c in contenders])
    table.rows[3][1] = "FAILED"
    data: dict = {}
    bound.mark(table, contenders, data)
    assert [row[1] for row in table.rows] == [
        "ok", "ok, load-bound", "ok", "FAILED", "ok, proxy CPU shared (29% other work)"]
    assert data == {"haproxy": {"load_bound": True}, "meshproxy-plain": {"proxy_cpu_other_work": 29.0}}
    assert table.notes == [bound.NOTE]


def test_window_reads_the_cpus_and_the_processes_own_time():
    import os

    from benchmarks.lib.servers import Placement

    cpus = sorted(os.sched_getaffinity(0))
    with bound.Window([os.getpid()], Placement(str(cpus[-1]), str(cpus[0]))) as window:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
    assert set(window.metrics) == {"proxy_cpu_busy", "load_cpu_busy", "proxy_own_cpu"}
    assert window.metrics["proxy_own_cpu"] > 20


def test_handshake_table_loses_the_direct_column():
    table = Table("t", ["variant", "hs", "/ haproxy", "/ direct", "status"],
                  [["haproxy", "1", "-", "-", "ok"], ["meshproxy", "1", "0.9x", "-", "ok"]],
                  notes=["/ haproxy, / direct: ...", "other"], numeric={"hs", "/ haproxy", "/ direct"})
    handshake._drop_column(table, "/ direct")
    assert table.headers == ["variant", "hs", "/ haproxy", "status"]
    assert table.rows[1] == ["meshproxy", "1", "0.9x", "ok"]
    assert "/ direct" not in table.numeric and table.notes[1] == "other"
    assert "/ direct" not in table.notes[0]


def test_cpu_cost_per_operation_and_its_ratio():
    assert bound.cost({"proxy_own_cpu": 50.0}, 1000.0) == {bound.COST_KEY: 500.0}
    assert bound.cost({"proxy_own_cpu": 50.0}, 0.0) == {} and bound.cost({}, 10.0) == {}
    cheap = Contender("meshproxy", rounds=[Sample(1, True, metrics={bound.COST_KEY: 400.0})])
    dear = Contender("haproxy", rounds=[Sample(1, True, metrics={bound.COST_KEY: 600.0})])
    assert bound.cost_ratio(cheap, dear) == 1.5
    assert bound.cost_ratio(cheap, None) is None
    dear.rounds.append(Sample(2, False, "boom"))
    assert bound.cost_ratio(cheap, dear) is None, "a FAILED side has no ratio"
