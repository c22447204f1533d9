"""meshproxy-init against real iptables, each test in its own network namespace (root; both backends when installed).

The dry run's text is what gets applied, applying twice changes nothing,
cleanup gives back the table as it was (other rules and chains included),
auto-detection follows the rules already present, and an unprivileged run
exits 77 without touching anything.
"""

from __future__ import annotations

import subprocess

import pytest

from .support import BACKENDS, ENV, NOBODY, PYTHON, TOOL, needs_root, rule_lines, sections, user_prefix

pytestmark = [needs_root, pytest.mark.timeout(60)]

FAMILIES = ("ipv4", "ipv6")
SETTINGS = ("--ipv6", "--skip-inbound-ports", "22,8000-8100", "--skip-outbound-ports",
            "443,1-2,3-4,5-6,7-8,9-10,11-12,13-14,15",  # two multiport rules
            "--skip-subnets", "10.96.0.0/12,192.168.7.7,fd00:abcd::/32", "--proxy-uid", "1337")


def by_chain(lines):
    chains: dict[str, list[str]] = {}
    for line in lines:
        chains.setdefault(line.split()[1], []).append(line)
    return chains


def add_unrelated_rules(ns, backend):
    """Rules and a chain that are not ours, before and around where ours go."""
    for family in FAMILIES:
        ns.iptables(backend, "-t", "nat", "-N", "OTHER", family=family)
        ns.iptables(backend, "-t", "nat", "-A", "OTHER", "-p", "tcp", "--dport", "25", "-j", "RETURN", family=family)
        ns.iptables(backend, "-t", "nat", "-A", "PREROUTING", "-j", "OTHER", family=family)
        ns.iptables(backend, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN", family=family)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_dry_run_is_exactly_what_gets_applied(netns, backend):
    dry = netns.tool("--dry-run", *SETTINGS, "--backend", backend)
    assert dry.returncode == 0, dry.stderr
    applied = netns.apply(*SETTINGS, "--backend", backend)
    planned, done = sections(dry.stdout), sections(applied.stdout)
    assert set(planned) == set(FAMILIES)
    assert done == planned  # the text fed to iptables-restore, byte for byte
    for family in FAMILIES:
        saved = netns.save(backend, family)
        # iptables-save prints every rule as the dry run spelled it: same lines, same order per chain.
        assert by_chain(rule_lines(saved)) == by_chain(rule_lines(planned[family]))
        assert ":MESHPROXY_INBOUND - [0:0]" in saved and ":MESHPROXY_OUTBOUND - [0:0]" in saved
    assert "--dports 22,8000:8100" in planned["ipv4"] and "--dports 15 " in planned["ipv6"]
    assert "-s 192.168.7.7/32" in planned["ipv4"] and "-d fd00:abcd::/32" in planned["ipv6"]
    assert "fd00" not in planned["ipv4"] and "10.96" not in planned["ipv6"]
    assert "-d ::1/128" in planned["ipv6"] and "--uid-owner 1337" in planned["ipv6"]
    assert f"using iptables-{backend}" in applied.stderr and "verified" in applied.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_applying_twice_gives_the_same_table(netns, backend):
    add_unrelated_rules(netns, backend)
    netns.apply(*SETTINGS, "--backend", backend)
    # A rule appended after our jump must stay after it: re-runs keep the jump in place.
    netns.iptables(backend, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "123", "-j", "RETURN")
    first = {f: netns.save(backend, f) for f in FAMILIES}
    again = netns.apply(*SETTINGS, "--backend", backend)
    assert {f: netns.save(backend, f) for f in FAMILIES} == first
    # The re-run flushed and refilled the chains, and did not re-add the jumps.
    assert "-A PREROUTING" not in again.stdout and "-A OUTPUT" not in again.stdout
    assert again.stdout.count(":MESHPROXY_OUTBOUND - [0:0]") == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_settings_replace_the_old_rules(netns, backend):
    netns.apply("--skip-outbound-ports", "5432", "--backend", backend)
    netns.apply("--skip-outbound-ports", "6379", "--proxy-uid", "4242", "--backend", backend)
    saved = netns.save(backend)
    assert "6379" in saved and "5432" not in saved
    assert "--uid-owner 4242" in saved and "--uid-owner 2102" not in saved
    fresh = netns.tool("--dry-run", "--skip-outbound-ports", "6379", "--proxy-uid", "4242").stdout
    assert sorted(rule_lines(saved)) == sorted(rule_lines(sections(fresh)["ipv4"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_stray_and_duplicate_jumps_are_removed(netns, backend):
    netns.apply("--backend", backend)
    netns.iptables(backend, "-t", "nat", "-A", "OUTPUT", "-j", "MESHPROXY_OUTBOUND")
    netns.iptables(backend, "-t", "nat", "-I", "PREROUTING", "1", "-p", "tcp", "-m", "comment", "--comment",
                   "meshproxy-init/inbound", "-j", "MESHPROXY_INBOUND")
    netns.apply("--backend", backend)
    dry = sections(netns.tool("--dry-run").stdout)["ipv4"]
    assert by_chain(rule_lines(netns.save(backend))) == by_chain(rule_lines(dry))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cleanup_gives_back_the_table_as_it_was(netns, backend):
    add_unrelated_rules(netns, backend)
    before = {f: netns.save(backend, f) for f in FAMILIES}
    netns.apply(*SETTINGS, "--backend", backend)
    assert all(netns.save(backend, f) != before[f] for f in FAMILIES)
    done = netns.tool("--cleanup", "--backend", backend, "--ipv6")
    assert done.returncode == 0, done.stderr
    assert {f: netns.save(backend, f) for f in FAMILIES} == before
    again = netns.tool("--cleanup", "--backend", backend, "--ipv6")
    assert again.returncode == 0 and "nothing to clean up" in again.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_cleanup_without_ipv6_still_finds_the_ipv6_chains(netns, backend):
    before = {f: netns.save(backend, f) for f in FAMILIES}
    netns.apply("--ipv6", "--backend", backend)
    done = netns.tool("--cleanup", "--backend", backend)
    assert done.returncode == 0, done.stderr
    assert {f: netns.save(backend, f) for f in FAMILIES} == before


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both iptables-nft and iptables-legacy; "
                    "test_backend.py covers the choice with unit tests")
@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_goes_with_the_backend_that_already_has_rules(netns, backend):
    netns.iptables(backend, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "RETURN")
    applied = netns.apply()
    assert f"using iptables-{backend}: auto, it already holds the most rules" in applied.stderr
    assert "MESHPROXY_OUTBOUND" in netns.save(backend)
    other = next(b for b in BACKENDS if b != backend)
    assert "MESHPROXY" not in netns.save(other)
    # The next run (cleanup included) sticks to it.
    assert f"using iptables-{backend}" in netns.apply("--cleanup").stderr


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both backends")
def test_auto_on_an_empty_namespace_follows_the_systems_iptables(netns):
    version = netns.run("iptables", "-V").stdout
    expected = "nft" if "nf_tables" in version else "legacy"
    applied = netns.apply()
    assert f"using iptables-{expected}: auto, no rules here yet" in applied.stderr


def test_without_privileges_it_exits_77_and_changes_nothing(netns, public_dir):
    before = netns.save(BACKENDS[0])
    for args in ((), ("--cleanup",), ("--backend", BACKENDS[0], "--ipv6")):
        proc = netns.tool(*args, prefix=tuple(user_prefix(NOBODY)), tool=public_dir / "iptables-init" / TOOL.name)
        assert proc.returncode == 77, proc.stderr
        assert "lacks CAP_NET_ADMIN" in proc.stderr and "capabilities.add: [NET_ADMIN, NET_RAW]" in proc.stderr
        assert proc.stdout == ""
    assert netns.save(BACKENDS[0]) == before


@pytest.mark.skipif("legacy" not in BACKENDS, reason="iptables-legacy is not installed")
def test_legacy_without_net_raw_exits_77(netns):
    proc = netns.tool("--backend", "legacy",
                      prefix=("setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"))
    assert proc.returncode == 77 and "lacks CAP_NET_RAW" in proc.stderr, proc.stderr
    assert "MESHPROXY" not in netns.save("legacy")


def test_the_dry_run_needs_no_privileges_nor_a_namespace(public_dir):
    proc = subprocess.run([*user_prefix(NOBODY), PYTHON, "-I", "-S", str(public_dir / "iptables-init" / TOOL.name),
                           "--dry-run", "--ipv6"], capture_output=True, text=True, env=ENV, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert set(sections(proc.stdout)) == set(FAMILIES)
