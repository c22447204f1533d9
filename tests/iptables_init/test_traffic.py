"""Real connections through the rules: a "pod" namespace and a "peer" namespace joined by a veth pair.

In the pod: a stand-in outbound proxy on 4140 running as the proxy uid (it
reads SO_ORIGINAL_DST and connects there itself, so it loops unless its own
uid is exempt), a stand-in inbound proxy on 4143 reporting the original
destination, an app on 8081/8082 and an admin server on 4191. In the peer:
servers on 8080 and 9999 at 10.250.0.2, 10.250.0.3 and fd00:250::2. Each
connection's answer says who served it, so every expectation below is one
line: who connects, where, and who must answer.
"""

from __future__ import annotations

import subprocess

import pytest

from .support import BACKENDS, ENV, PYTHON, TOOL, needs_root, user_prefix

pytestmark = [needs_root, pytest.mark.timeout(60)]

PROXY_UID = 2345
POD4, POD6 = "10.250.0.1", "fd00:250::1"
PEER4, PEER4_SKIPPED, PEER6 = "10.250.0.2", "10.250.0.3", "fd00:250::2"
SETTINGS = ("--proxy-uid", str(PROXY_UID), "--ipv6", "--skip-outbound-ports", "9000-9999",
            "--skip-inbound-ports", "8082", "--skip-subnets", f"{PEER4_SKIPPED}/32")

ROOT, PROXY, PEER = "app (root)", "proxy uid", "peer"
REDIRECTED = {
    # outbound: from the pod
    (ROOT, PEER4, 8080): f"proxy {PEER4} 8080 via peer {PEER4} 8080",
    (ROOT, PEER6, 8080): f"proxy {PEER6} 8080 via peer {PEER6} 8080",
    (PROXY, PEER4, 8080): f"peer {PEER4} 8080",  # the proxy's own connections go straight out
    (PROXY, PEER6, 8080): f"peer {PEER6} 8080",
    (ROOT, PEER4, 9999): f"peer {PEER4} 9999",  # skipped outbound port (9000-9999)
    (ROOT, PEER6, 9999): f"peer {PEER6} 9999",
    (ROOT, PEER4_SKIPPED, 8080): f"peer {PEER4_SKIPPED} 8080",  # skipped subnet
    (ROOT, "127.0.0.1", 8081): "app 127.0.0.1 8081",  # loopback
    (ROOT, "::1", 8081): "app ::1 8081",
    (ROOT, POD4, 8081): f"app {POD4} 8081",  # the pod's own address goes over lo
    # inbound: from the peer
    (PEER, POD4, 8081): f"inbound {POD4} 8081",
    (PEER, POD6, 8081): f"inbound {POD6} 8081",
    (PEER, POD4, 8082): f"app {POD4} 8082",  # skipped inbound port
    (PEER, POD4, 4191): f"admin {POD4} 4191",  # the admin port: probes must reach it
    (PEER, POD6, 4191): f"admin {POD6} 4191",
    (PEER, POD4, 8081, PEER4_SKIPPED): f"app {POD4} 8081",  # from a skipped source subnet
}


class Pod:
    def __init__(self, make_netns, public_dir):
        self.pod, self.peer = make_netns(), make_netns()
        self.script = str(public_dir / "endpoints.py")
        self.servers: list[subprocess.Popen] = []
        self.pod.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.peer.name)
        for ns, addrs in ((self.pod, (f"{POD4}/24", f"{POD6}/64")),
                          (self.peer, (f"{PEER4}/24", f"{PEER4_SKIPPED}/24", f"{PEER6}/64"))):
            for addr in addrs:
                ns.run("ip", "addr", "add", addr, "dev", "eth0", *(("nodad",) if ":" in addr else ()))
            ns.run("ip", "link", "set", "eth0", "up")

    def serve(self, ns, uid, *specs):
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *user_prefix(uid), PYTHON, self.script, "serve",
                                 *specs], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
        self.servers.append(proc)
        assert proc.stdout.readline().strip() == "ready"

    def start(self):
        self.serve(self.pod, PROXY_UID, "4140=forward:proxy")
        self.serve(self.pod, None, "4143=orig:inbound", "8081=here:app", "8082=here:app", "4191=here:admin")
        self.serve(self.peer, None, "8080=here:peer", "9999=here:peer")

    def stop(self):
        for proc in self.servers:
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def answers(self, cases):
        """Connect for every case (grouped per client) and return {case: first line answered}."""
        got = {}
        for who, ns, uid in ((ROOT, self.pod, None), (PROXY, self.pod, PROXY_UID), (PEER, self.peer, None)):
            mine = [case for case in cases if case[0] == who]
            if not mine:
                continue
            specs = [",".join(map(str, case[1:])) for case in mine]
            out = ns.run(*user_prefix(uid), PYTHON, self.script, "connect", *specs, timeout=30).stdout
            got.update(zip(mine, out.splitlines()))
        return got


@pytest.fixture
def pod(make_netns, public_dir):
    world = Pod(make_netns, public_dir)
    try:
        yield world
    finally:
        world.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_traffic_goes_where_the_rules_say(pod, backend):
    applied = pod.pod.run(PYTHON, str(TOOL), *SETTINGS, "--backend", backend)
    assert "verified" in applied.stderr
    pod.start()
    got = pod.answers(list(REDIRECTED))
    wrong = {case: (got.get(case), want) for case, want in REDIRECTED.items() if got.get(case) != want}
    assert not wrong, "\n".join(f"{case}: got {g!r}, want {w!r}" for case, (g, w) in wrong.items())

    # After --cleanup nothing is intercepted any more.
    pod.pod.run(PYTHON, str(TOOL), "--cleanup", "--backend", backend)
    after = pod.answers([(ROOT, PEER4, 8080), (ROOT, PEER6, 8080), (PEER, POD4, 8081)])
    assert list(after.values()) == [f"peer {PEER4} 8080", f"peer {PEER6} 8080", f"app {POD4} 8081"]
