"""The fairness and soak scenarios' parts and the --baseline plumbing, without running a benchmark."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import hpack
import pytest

from benchmarks import run
from benchmarks.lib import compare, fairload, h2peer, meshpair
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.servers import fastpath_status, meshproxy_argv, render
from benchmarks.scenarios import SCENARIOS, fairness, http1, soak

REPO = Path(__file__).resolve().parents[2]


def test_the_new_scenarios_are_registered_and_documented():
    assert SCENARIOS["fairness"] is fairness and SCENARIOS["soak"] is soak
    readme = (REPO / "benchmarks" / "README.md").read_text()
    for text in ("## Scenario `fairness`", "## Scenario `soak`", "### `--baseline DIR`"):
        assert text in readme


# ---------------------------------------------------------------------------
# --baseline


def test_baseline_must_be_a_checkout(tmp_path):
    with pytest.raises(SystemExit):
        run.parse_args(["--baseline", str(tmp_path)])
    with pytest.raises(SystemExit):
        run.parse_args(["--baseline", str(REPO)])  # this checkout itself
    (tmp_path / "proxy").mkdir()
    (tmp_path / "proxy" / "__init__.py").write_text("")
    args = run.parse_args(["--baseline", str(tmp_path), "--variants", f"meshproxy,{http1.BASELINE}"])
    assert args.baseline == tmp_path.resolve()


def test_the_baseline_variant_needs_a_baseline():
    with pytest.raises(SystemExit):
        run.parse_args(["--variants", f"meshproxy,{http1.BASELINE}"])


def test_meshproxy_runs_from_the_checkout_it_is_given():
    # Not the installed console script, which imports the tree the venv was installed from.
    assert meshproxy_argv(REPO)[:3] == [sys.executable, "-m", "proxy"]
    status = fastpath_status(REPO, {"PATH": "/usr/bin:/bin"})
    assert status.get("proxy") == str(REPO / "proxy" / "__init__.py"), status


def _contender(name: str, values: list[float], key: str = "rps") -> Contender:
    return Contender(name, rounds=[Sample(i + 1, True, metrics={key: v}) for i, v in enumerate(values)])


def test_the_table_gains_a_baseline_column_for_meshproxy_only():
    contenders = [_contender("haproxy", [100.0]), _contender("meshproxy", [90.0, 96.0, 93.0]),
                  _contender(compare.BASELINE, [100.0, 100.0, 100.0])]
    table, data = compare.table("t", contenders, ("req/s", "rps", ",.0f"), [], [])
    column = table.headers.index("/ baseline")
    assert [row[column] for row in table.rows] == ["-", "0.93x", "-"]
    assert data["meshproxy"]["ratios"]["vs_baseline"] == "0.93x"
    plain, _ = compare.table("t", contenders[:2], ("req/s", "rps", ",.0f"), [], [])
    assert "/ baseline" not in plain.headers


@pytest.mark.parametrize(("mine", "higher", "word"), [(96.0, True, "met"), (94.0, True, "NOT met"),
                                                      (104.0, False, "met"), (106.0, False, "NOT met")])
def test_the_baseline_note_applies_the_five_percent_bar(mine, higher, word):
    contenders = [_contender("meshproxy", [mine]), _contender(compare.BASELINE, [100.0])]
    note = compare.baseline_note(contenders, "rps", higher_is_better=higher)
    assert note is not None and note.endswith(f": {word}")
    assert compare.baseline_note(contenders[:1], "rps") is None


def test_the_http1_ratio_table_compares_throughput_and_latency_with_the_baseline():
    def summary(rps: float, p50: float, p99: float) -> dict:
        return {"ok": True, "rps_median": rps, "p50_ms_median": p50, "p99_ms_median": p99}

    table, data = http1._ratio_table({"meshproxy": summary(96.0, 1.0, 2.0),
                                      http1.BASELINE: summary(100.0, 1.0, 1.0)})
    assert data["meshproxy / meshproxy-baseline"] == 0.96
    assert data["p99 latency: meshproxy / meshproxy-baseline"] == 2.0
    verdicts = {row[0]: row[2] for row in table.rows}
    assert verdicts["meshproxy / meshproxy-baseline"].startswith("met")
    assert verdicts["p99 latency: meshproxy / meshproxy-baseline"].startswith("NOT met")


# ---------------------------------------------------------------------------
# the clients' parts


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert h2peer.percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert h2peer.percentiles([]) == {}
    assert h2peer.percentiles([7.0])["p99"] == 7.0


def test_the_reset_request_block_is_a_valid_header_block():
    block = h2peer._request_block("fair.mesh:80", "/")
    headers = hpack.Decoder().decode(block)
    assert headers == [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "fair.mesh:80")]
    # No dynamic table entry: the same bytes decode the same way on any stream.
    decoder = hpack.Decoder()
    assert decoder.decode(block) == decoder.decode(block) == headers


class ResetCounter:
    """A raw HTTP/2 server that answers PINGs, counts RST_STREAMs and sends GOAWAY after ``limit`` per
    connection, dropping what follows: the shape of a proxy's rapid-reset protection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf, resets = b"", 0
        conn.sendall(h2peer._frame(0x4, 0, 0))
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                if buf.startswith(h2peer.PREFACE):
                    buf = buf[len(h2peer.PREFACE):]
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    ftype, flags, payload = buf[3], buf[4], buf[9:9 + length]
                    buf = buf[9 + length:]
                    if ftype == 0x3:
                        resets += 1
                        self.counted += 1
                        if resets >= self.limit:
                            conn.sendall(h2peer._frame(0x7, 0, 0, struct.pack(">II", 0, 11)))
                            return
                    elif ftype == 0x6 and not flags & 1:
                        conn.sendall(h2peer._frame(0x6, 1, 0, payload))

    def close(self) -> None:
        self.sock.close()


def test_rapid_resets_counts_only_what_the_server_read_and_reconnects_after_goaway():
    server = ResetCounter(limit=250)
    try:
        result = h2peer.rapid_resets(("127.0.0.1", server.port), "x", 1000, limit_s=20)
    finally:
        server.close()
    assert result.resets == 1000
    assert result.connections >= 4 and 11 in result.goaways
    assert server.counted >= 1000  # every reset counted by the client was read by the server


def test_the_probe_window_selects_requests_started_during_the_attack():
    samples = [[1.0, 5.0, "ok"], [2.0, 2000.0, "timed out"], [3.0, 7.0, "ok"], [9.0, 1.0, "ok"]]
    latencies, ok, failed = fairness._window(samples, 1.5, 3.5)
    assert (latencies, ok, failed) == ([2000.0, 7.0], 1, 1)


def test_fairload_prints_one_json_line_per_role(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.lib.fairload", "probe", "127.0.0.1:1", "x",
                           "--duration=0.3", "--rate=20", "--timeout=0.2"], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith(fairload.MARKER)]
    assert len(line) == 1
    out = json.loads(line[0][len(fairload.MARKER):])
    assert out["role"] == "probe" and out["requests"] >= 1 and out["succeeded"] == 0
    assert out["failed"] == out["requests"]


@pytest.mark.parametrize("tls", [True, False])
def test_the_pair_endpoints_file_is_what_meshproxy_reads(tls):
    from proxy.discovery.filespec import parse_document

    services = [meshpair.Service("h1.soak:80", 8080, "http1"), meshpair.Service("h2.soak:80", 8081, "h2")]
    text = meshpair.endpoints_yaml(services, 4143, "api.default.serviceaccount.identity.cluster.local" if tls else None)
    parsed = parse_document(text)
    assert sorted(parsed) == ["h1.soak:80", "h2.soak:80"]
    (endpoint,) = parsed["h2.soak:80"].snapshot.endpoints
    assert endpoint.address == ("127.0.0.1", 8081) and endpoint.proxy == ("127.0.0.1", 4143)
    assert endpoint.protocol == "h2"
    assert (endpoint.identity is not None) == tls


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is installed by the README's test command")
def test_the_bulk_backend_config_is_valid_nginx(tmp_path):
    (tmp_path / "nginx-tmp").mkdir()
    large = tmp_path / "large.bin"
    large.write_bytes(b"")
    conf = render("nginx-bulk-backend.conf.tmpl", tmp_path / "b.conf", run_dir=tmp_path, port=1, port2=2,
                  name="b", body=http1.BODY, large_file=large, large_mib=0)
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"), "-c", str(conf)],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
