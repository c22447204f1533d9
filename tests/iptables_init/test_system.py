"""meshproxy_init.system: capabilities, reading iptables' errors, and the commands it runs (fake runner)."""

from __future__ import annotations

import pytest

from meshproxy_init import system
from meshproxy_init.config import Config
from meshproxy_init.errors import EXIT_FAILURE, EXIT_NOPERM, EXIT_UNAVAILABLE, InitError
from meshproxy_init.system import Iptables, Result, classify, which

# What iptables 1.8.9 really printed, captured in a network namespace.
MESSAGES = {
    "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: "
    "Permission denied (you must be root)": "permission",
    "iptables-save v1.8.9 (legacy): Cannot initialize: Permission denied (you must be root)": "permission",
    "Fatal: can't open lock file /run/xtables.lock: Permission denied": "permission",
    "iptables v1.8.9 (legacy): can't initialize iptables table `nat': "
    "Permission denied (you must be root)": "permission",
    "iptables v1.8.9 (legacy): can't initialize iptables table `natx': "
    "Table does not exist (do you need to insmod?)": "table",
    "iptables v1.8.9 (nf_tables): table 'natx' does not exist\n"
    "Perhaps iptables or your kernel needs to be upgraded.": "table",
    "iptables v1.8.9 (nf_tables): Couldn't load match `nosuch':No such file or directory": "extension",
    "iptables v1.8.9 (legacy): Couldn't load target `NOSUCHT':No such file or directory": "extension",
    "iptables: No chain/target/match by that name.": "extension",
    "Extension owner revision 0 not supported, missing kernel module?": "extension",
    "Another app is currently holding the xtables lock. Stopped waiting after 10s.": "lock",
    "Fatal: can't open lock file /run/xtables.lock: Read-only file system": "lockfile",
    "iptables-restore: line 4 failed": "other",
}


@pytest.mark.parametrize("message, kind", MESSAGES.items())
def test_classify_reads_the_cause_from_iptables_words(message, kind):
    assert classify(message) == kind


def test_capabilities_from_proc_status():
    status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000003000\n"
    assert system.effective_capabilities(status) == 0x3000
    assert system.missing_capabilities(["NET_ADMIN", "NET_RAW"], status) == []
    assert system.missing_capabilities(["NET_ADMIN", "NET_RAW"], "CapEff:\t0000000000001000\n") == ["NET_RAW"]
    assert system.missing_capabilities(["NET_ADMIN"], "no such line") == []
    with pytest.raises(InitError) as caught:
        system.require_capabilities(["NET_ADMIN"], "iptables needs it", "CapEff:\t0000000000000000\n")
    assert caught.value.exit_code == EXIT_NOPERM
    assert "CAP_NET_ADMIN" in str(caught.value) and "capabilities.add: [NET_ADMIN, NET_RAW]" in str(caught.value)


def test_which_also_searches_sbin(tmp_path):
    assert which("definitely-not-a-command-here", {"PATH": str(tmp_path)}) is None
    tool = tmp_path / "x-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert which("x-tool", {"PATH": str(tmp_path)}) == str(tool)


class FakeRunner:
    def __init__(self, *results: Result):
        self.results = list(results)
        self.calls = []

    def __call__(self, argv, stdin):
        self.calls.append((argv, stdin))
        return self.results.pop(0)


@pytest.fixture(autouse=True)
def _binaries_everywhere(monkeypatch):
    monkeypatch.setattr(system, "which", lambda name: f"/sbin/{name}")


@pytest.mark.parametrize("result", [
    Result(1, "", "iptables: Bad rule (does a matching rule exist in that chain?).\n"),
    Result(1, "", "iptables: No chain/target/match by that name.\n"),
    Result(0, "", ""),
])
def test_probe_accepts_a_rule_that_is_merely_absent(result):
    runner = FakeRunner(result)
    Iptables("nft", "ipv4", runner).probe(Config(proxy_uid=1234))
    argv = runner.calls[0][0]
    assert argv[:3] == ["/sbin/iptables-nft", "-w", "10"] and "-C" in argv
    assert ["--uid-owner", "1234"] == argv[argv.index("--uid-owner"):argv.index("--uid-owner") + 2]
    assert "REDIRECT" in argv and "multiport" in argv and "comment" in argv


@pytest.mark.parametrize("stderr, code, words", [
    ("iptables v1.8.9 (nf_tables): Couldn't load match `owner':No such file or directory", EXIT_UNAVAILABLE,
     ["xt_owner", "--backend legacy", "owner"]),
    ("ip6tables v1.8.9 (nf_tables): table 'nat' does not exist", EXIT_UNAVAILABLE,
     ["ipv6 nat table", "modprobe nft_chain_nat", "--backend legacy"]),
    ("iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
     EXIT_NOPERM, ["NET_ADMIN", "root"]),
])
def test_probe_failures_say_what_to_do(stderr, code, words):
    family = "ipv6" if stderr.startswith("ip6") else "ipv4"
    with pytest.raises(InitError) as caught:
        Iptables("nft", family, FakeRunner(Result(2, "", stderr))).probe(Config())
    assert caught.value.exit_code == code
    for word in words:
        assert word in str(caught.value)


def test_a_read_only_run_directory_is_named_as_the_fix():
    err = "Fatal: can't open lock file /run/xtables.lock: Read-only file system"
    with pytest.raises(InitError) as caught:
        Iptables("legacy", "ipv4", FakeRunner(Result(4, "", err))).restore("*nat\nCOMMIT\n")
    assert caught.value.exit_code == EXIT_UNAVAILABLE and "emptyDir volume mounted at /run" in str(caught.value)


def test_legacy_missing_nat_table_names_its_module():
    err = ("iptables-save v1.8.9 (legacy): can't initialize iptables table `nat': "
           "Table does not exist (do you need to insmod?)")
    with pytest.raises(InitError) as caught:
        Iptables("legacy", "ipv4", FakeRunner(Result(1, "", err))).save()
    assert "modprobe iptable_nat" in str(caught.value) and "--backend nft" in str(caught.value)


def test_restore_feeds_the_text_atomically_and_says_nothing_changed_on_failure():
    runner = FakeRunner(Result(0, "", ""), Result(1, "", "iptables-restore: line 3 failed\n"))
    table = Iptables("legacy", "ipv6", runner)
    table.restore("*nat\nCOMMIT\n")
    assert runner.calls[0] == (["/sbin/ip6tables-legacy-restore", "-w", "10", "--noflush"], "*nat\nCOMMIT\n")
    with pytest.raises(InitError) as caught:
        table.restore("*nat\nbad\nCOMMIT\n")
    assert caught.value.exit_code == EXIT_FAILURE
    assert "line 3 failed" in str(caught.value) and "Nothing was changed" in str(caught.value)


def test_a_missing_binary_is_reported_with_the_package_to_install(monkeypatch):
    monkeypatch.setattr(system, "which", lambda name: None)
    with pytest.raises(InitError) as caught:
        Iptables("legacy", "ipv4", FakeRunner()).save()
    assert caught.value.exit_code == EXIT_UNAVAILABLE and "apt-get install iptables" in str(caught.value)


def test_run_turns_a_missing_command_into_a_result():
    assert system.run(["/nonexistent/meshproxy-init-test"]).code == 127
    assert system.run(["sh", "-c", "cat; echo err >&2; exit 3"], "in").__eq__(Result(3, "in", "err\n"))
