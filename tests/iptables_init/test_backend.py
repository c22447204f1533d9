"""meshproxy_init.backend: choosing iptables-nft or iptables-legacy (pure), and gathering the facts (fake runner)."""

from __future__ import annotations

import pytest

from meshproxy_init import system
from meshproxy_init.backend import Facts, binaries, choose, system_default_from_version
from meshproxy_init.errors import EXIT_UNAVAILABLE, InitError


def facts(installed=("nft", "legacy"), nft=0, legacy=0, default="nft"):
    return Facts(tuple(installed), {"nft": nft, "legacy": legacy}, default)


@pytest.mark.parametrize("given, expected, why", [
    (facts(nft=0, legacy=5), "legacy", "already holds the most rules"),
    (facts(nft=7, legacy=0, default="legacy"), "nft", "already holds the most rules"),
    (facts(nft=9, legacy=3), "nft", "iptables-nft: 9 rules, iptables-legacy: 3 rules"),
    (facts(nft=1, legacy=2), "legacy", "iptables-nft: 1 rule,"),
    (facts(default="legacy"), "legacy", "no rules here yet and the system's iptables is iptables-legacy"),
    (facts(default="nft"), "nft", "no rules here yet"),
    (facts(nft=4, legacy=4, default="legacy"), "legacy", "both hold as many rules"),
    (facts(default=None), "nft", "unknown"),
    (facts(installed=("legacy",), nft=50), "legacy", "only iptables-legacy is installed"),
    (Facts(("nft", "legacy"), {"nft": None, "legacy": 0}, "nft"), "legacy", "iptables-nft could not list its tables"),
    (Facts(("nft", "legacy"), {"nft": None, "legacy": None}, "legacy"), "legacy", "no rules here yet"),
])
def test_auto_prefers_the_backend_with_rules_then_the_systems(given, expected, why):
    chosen, reason = choose("auto", given)
    assert chosen == expected
    assert reason.startswith("auto") and why in reason


def test_a_requested_backend_is_used_as_is_but_must_be_installed():
    assert choose("legacy", facts(nft=10)) == ("legacy", "requested with --backend")
    with pytest.raises(InitError) as caught:
        choose("legacy", facts(installed=("nft",)))
    assert caught.value.exit_code == EXIT_UNAVAILABLE
    assert "apt-get install iptables" in str(caught.value) and "--backend nft" in str(caught.value)
    with pytest.raises(InitError, match="no iptables found"):
        choose("auto", facts(installed=()))


def test_system_default_comes_from_iptables_version():
    assert system_default_from_version("iptables v1.8.9 (nf_tables)\n") == "nft"
    assert system_default_from_version("iptables v1.8.9 (legacy)\n") == "legacy"
    assert system_default_from_version("iptables v1.6.1\n") is None


def test_binary_names_per_backend_and_family():
    assert binaries("nft", "ipv4") == ("iptables-nft", "iptables-nft-save", "iptables-nft-restore")
    assert binaries("legacy", "ipv6") == ("ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore")


def test_gather_facts_counts_rules_in_every_table_of_each_family(monkeypatch):
    monkeypatch.setattr(system, "which", lambda name: f"/sbin/{name}")
    outputs = {
        "iptables-nft-save": system.Result(0, "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"
                                              "*nat\n-A OUTPUT -j X\nCOMMIT\n", ""),
        "ip6tables-nft-save": system.Result(0, "*nat\n-A OUTPUT -j X\nCOMMIT\n", ""),
        "iptables-legacy-save": system.Result(0, "", ""),
        "ip6tables-legacy-save": system.Result(1, "", "ip6tables-legacy-save: Permission denied"),
        "iptables": system.Result(0, "iptables v1.8.9 (legacy)\n", ""),
    }
    calls = []

    def runner(argv, stdin):
        calls.append(argv)
        return outputs[argv[0].rsplit("/", 1)[1]]

    got = system.gather_facts(["ipv4", "ipv6"], runner)
    assert got == Facts(("nft", "legacy"), {"nft": 3, "legacy": None}, "legacy")
    assert ["/sbin/iptables", "-V"] in calls
    # Listing all tables (no -t) never instantiates a legacy table that is not there.
    assert all(len(argv) == 1 for argv in calls if argv[0].endswith("-save"))
    assert system.gather_facts(["ipv4"], runner).rule_counts == {"nft": 2, "legacy": 0}
