"""``meshproxy viz top`` in a real terminal (tmux): the live full-screen table, redrawn as requests come,
and ``q`` or Ctrl-C leaving the terminal as it was (primary screen, cursor shown) with exit status 0."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.clients import clean_env
from helpers.meshproxy import REPO

pytestmark = pytest.mark.timeout(90)


class Terminal:
    """A tmux server of the test's own running one command in a 120x30 pane; the shell around it writes
    the command's exit status to ``status`` and keeps the pane (and its terminal state) for a while."""

    def __init__(self, command: list[str], status: Path) -> None:
        self.socket = f"meshproxy-top-{os.getpid()}-{time.monotonic_ns()}"
        self.status = status
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in clean_env(TERM="xterm-256color").items()
                       if k in ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "PYTHONPATH"))
        line = (f"cd {shlex.quote(str(REPO))} && env {env} {shlex.join(command)}; "
                f"echo $? > {shlex.quote(str(status))}; sleep 60")
        self.tmux("new-session", "-d", "-s", "top", "-x", "120", "-y", "30", line)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def info(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", "top", fmt).strip()

    def wait_screen(self, needle: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never shown; the screen:\n{text}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status.exists() and self.status.read_text().strip():
                return int(self.status.read_text())
            time.sleep(0.1)
        raise AssertionError(f"still running; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def _get(mp, upstream, path: str) -> None:
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "10", "-H", f"Host: {upstream.hostport}",
                    f"http://{mp.outbound_hostport}{path}"], check=True, capture_output=True, timeout=30,
                   env=clean_env())


@pytest.mark.parametrize("key", ["q", "C-c"])
def test_live_table_and_a_clean_quit(make_proxy, fresh_upstream, key, tmp_path):
    mp = make_proxy()
    term = Terminal([sys.executable, "-m", "proxy", "viz", "top", "--tap", mp.tap_hostport, "--refresh", "0.2"],
                    tmp_path / "status")
    try:
        term.wait_screen("No requests yet.")
        assert term.info("#{alternate_on}") == "1" and term.info("#{cursor_flag}") == "0"
        for _ in range(3):
            _get(mp, fresh_upstream, "/bytes/7")
        screen = term.wait_screen("/bytes/7")
        header = screen.splitlines()[0].split()
        assert header == ["Source", "Destination", "Method", "Path", "Count", "Best", "Worst", "Last", "Success",
                          "Rate"], screen
        _get(mp, fresh_upstream, "/status/503")
        screen = term.wait_screen("/status/503")  # redrawn in place as requests come
        rows = {line.split()[3]: line.split() for line in screen.splitlines()[1:] if len(line.split()) > 4}
        assert rows["/bytes/7"][4] == "3" and rows["/bytes/7"][-1] == "100.00%", screen
        assert rows["/status/503"][-1] == "0.00%", screen
        term.tmux("send-keys", "-t", "top", key)
        assert term.wait_exit() == 0
        # The terminal as it was: the primary screen (the table is gone with the alternate one), a cursor.
        assert term.info("#{alternate_on}") == "0" and term.info("#{cursor_flag}") == "1"
        assert "/bytes/7" not in term.screen()
    finally:
        term.close()
