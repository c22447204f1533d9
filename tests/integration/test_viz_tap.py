"""``meshproxy viz tap`` against real proxies: Linkerd's lines for live requests, filters, the --max-rps
bound, several proxies merged, and a proxy that cannot be tapped reported with exit status 69."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers.clients import clean_env
from helpers.meshproxy import REPO
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(90)

LINE = re.compile(r"^(req|rsp|end) id=\d+:\d+ proxy=(in|out) src=\S+ dst=\S* tls=\S* ")


class Tap:
    """``meshproxy viz tap ARGS`` running; its lines collected as they come."""

    def __init__(self, *args: str, preexec=None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy", "viz", "tap", *args], cwd=REPO,
                                     env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        return list(self.lines)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        self.reader.join(5)
        return self.proc.returncode, err


def _get(mp, upstream, path: str, method: str = "GET") -> None:
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "10", "-X", method, "-H",
                    f"Host: {upstream.hostport}", f"http://{mp.outbound_hostport}{path}"], check=True,
                   capture_output=True, timeout=30, env=clean_env())


def _wait_open(mp, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while mp.metrics().get("tap_sessions_open") < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mp.metrics().get("tap_sessions_open") >= count


def test_lines_for_each_request_and_filters(make_proxy, fresh_upstream):
    mp = make_proxy()
    every = Tap("--tap", mp.tap_hostport)
    books = Tap("--tap", mp.tap_hostport, "--path", "/books", "--method", "POST", "-o", "wide")
    try:
        _wait_open(mp, 2)
        _get(mp, fresh_upstream, "/bytes/10")
        _get(mp, fresh_upstream, "/books/1", "POST")
        lines = every.wait_for(6)
        assert len(lines) == 6 and all(LINE.match(line) for line in lines), lines
        assert lines[0].startswith("req ") and ":method=GET" in lines[0] and ":path=/bytes/10" in lines[0]
        assert ":status=200 latency=" in lines[1] and "response-length=10B" in lines[2]
        wide = books.wait_for(3)
        assert len(wide) == 3 and ":path=/books/1" in wide[0] and ":method=POST" in wide[0]
    finally:
        code, err = every.stop()
        books.stop()
    assert code == 0, err
    assert "Traceback" not in err and "never retrieved" not in err, err  # Ctrl-C ends it quietly


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _sigint_blocked() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@pytest.mark.parametrize("inherited", [_sigint_ignored, _sigint_blocked], ids=["ignored", "blocked"])
def test_sigint_ends_it_even_when_its_parent_ignored_or_blocked_sigint(make_proxy, inherited):
    # A script's background job (or a harness) starts it with SIGINT ignored or blocked; SIGINT is still how it ends.
    mp = make_proxy()
    tap = Tap("--tap", mp.tap_hostport, preexec=inherited)
    _wait_open(mp, 1)
    code, err = tap.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def test_max_rps_bounds_what_is_reported(make_proxy, fresh_upstream):
    mp = make_proxy()
    tap = Tap("--tap", mp.tap_hostport, "--max-rps", "5")
    try:
        _wait_open(mp)
        started = time.monotonic()
        for _ in range(40):
            _get(mp, fresh_upstream, "/bytes/1")
        elapsed = time.monotonic() - started
        time.sleep(0.3)
        reqs = [line for line in tap.lines if line.startswith("req ")]
        # At most 5 a second (the first second's share at once), never all 40 of a quick burst.
        assert 1 <= len(reqs) <= 5 * (int(elapsed) + 2), (len(reqs), elapsed)
        assert len(reqs) < 40 or elapsed > 7
    finally:
        tap.stop()


def test_json_output_and_two_proxies_merged(make_proxy, fresh_upstream):
    a, b = make_proxy(), make_proxy()
    tap = Tap("--tap", a.tap_hostport, "--tap", b.tap_hostport, "-o", "json")
    try:
        _wait_open(a)
        _wait_open(b)
        _get(a, fresh_upstream, "/bytes/3")
        _get(b, fresh_upstream, "/bytes/4")
        lines = tap.wait_for(6)
    finally:
        tap.stop()
    import json

    docs = [json.loads(line) for line in lines]
    sizes = sorted(d["responseBytes"] for d in docs if d["event"] == "response_end")
    assert sizes == [3, 4]


def test_an_unreachable_proxy_is_reported_and_exits_69():
    tap = Tap("--tap", f"127.0.0.1:{free_port()}", "--timeout", "2")
    code, err = tap.stop() if tap.proc.wait(20) is not None else (None, "")
    assert code == 69 and "cannot connect" in err


def test_top_counts_requests_by_path_with_latency_and_success(make_proxy, fresh_upstream):
    mp = make_proxy()
    done = {}

    def top() -> None:
        done["out"] = subprocess.run([sys.executable, "-m", "proxy", "viz", "top", "--tap", mp.tap_hostport,
                                      "--duration", "4"], cwd=REPO, env=clean_env(), capture_output=True,
                                     text=True, timeout=30)

    runner = threading.Thread(target=top)
    runner.start()
    _wait_open(mp)
    for _ in range(3):
        _get(mp, fresh_upstream, "/bytes/5")
    _get(mp, fresh_upstream, "/status/503")
    runner.join(30)
    out = done["out"]
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split() == ["Source", "Destination", "Method", "Path", "Count", "Best", "Worst", "Last",
                                "Success", "Rate"]
    rows = {line.split()[3]: line.split() for line in lines[1:]}
    assert rows["/bytes/5"][:5] == ["127.0.0.1", "127.0.0.1", "GET", "/bytes/5", "3"]
    assert rows["/bytes/5"][-1] == "100.00%" and rows["/status/503"][-1] == "0.00%"


PROXY_ID = "web.default.serviceaccount.identity.cluster.local"
TAP_ID = "tap.linkerd-viz.serviceaccount.identity.cluster.local"
OTHER_ID = "intruder.default.serviceaccount.identity.cluster.local"


def _identity_dir(tmp_path, certs, name):
    directory = tmp_path / name.split(".")[0]
    directory.mkdir()
    (directory / "tls.crt").write_bytes(certs[name].chain.read_bytes())
    (directory / "tls.key").write_bytes(certs[name].key.read_bytes())
    (directory / "ca.crt").write_bytes(certs.ca.read_bytes())
    return directory


def test_tap_over_mutual_tls_as_the_tap_identity(make_proxy, fresh_upstream, tmp_path):
    from benchmarks.lib import meshtls

    certs = meshtls.make(tmp_path / "certs", (PROXY_ID, TAP_ID, OTHER_ID))
    mp = make_proxy({"MESHPROXY_IDENTITY_NAME": PROXY_ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(certs.ca),
                     "MESHPROXY_IDENTITY_CERT_FILE": str(certs[PROXY_ID].chain),
                     "MESHPROXY_IDENTITY_KEY_FILE": str(certs[PROXY_ID].key), "MESHPROXY_TAP_IDENTITY": TAP_ID})
    allowed = Tap("--tap", f"{mp.tap_hostport}={PROXY_ID}", "--identity-dir", str(_identity_dir(tmp_path, certs,
                                                                                              TAP_ID)))
    refused = Tap("--tap", f"{mp.tap_hostport}={PROXY_ID}", "--identity-dir", str(_identity_dir(tmp_path, certs,
                                                                                              OTHER_ID)))
    try:
        _wait_open(mp)
        _get(mp, fresh_upstream, "/bytes/7")
        lines = allowed.wait_for(3)
        assert len(lines) == 3 and "response-length=7B" in lines[2]
        assert refused.proc.wait(20) == 69
    finally:
        allowed.stop()
        code, err = refused.stop()
    assert "UNAUTHENTICATED" in err or "Unauthorized peer" in err, err
