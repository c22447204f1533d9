"""meshproxy_init.cli: dry run without privileges, exit statuses and messages (fake runner, no system change)."""

from __future__ import annotations

import io

import pytest

from meshproxy_init import cli, system
from meshproxy_init.errors import EXIT_FAILURE, EXIT_NOPERM, EXIT_UNAVAILABLE, EXIT_USAGE
from meshproxy_init.system import Result

from .support import sections


def never(argv, stdin):
    raise AssertionError(f"a dry run must not run {argv}")


def run_main(argv, runner=never, environ=None):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, environ or {}, runner, out, err)
    return code, out.getvalue(), err.getvalue()


def test_dry_run_prints_restore_text_per_family_and_runs_nothing():
    code, out, err = run_main(["--dry-run", "--ipv6"])
    assert code == 0 and err == ""
    assert out.startswith("# meshproxy-init dry run: nothing was changed.")
    got = sections(out)
    assert set(got) == {"ipv4", "ipv6"}
    for text in got.values():
        lines = text.splitlines()
        assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert "# ipv4 nat table, for iptables-restore --noflush" in out
    assert "# ipv6 nat table, for ip6tables-restore --noflush" in out


def test_dry_run_of_cleanup_shows_the_deletes():
    code, out, _ = run_main(["--dry-run", "--cleanup"], environ={"MESHPROXY_INIT_OUTBOUND_CHAIN": "OUT_X"})
    assert code == 0
    assert sections(out)["ipv4"].splitlines() == [
        "*nat",
        '-D PREROUTING -p tcp -m comment --comment "meshproxy-init/inbound" -j MESHPROXY_INBOUND',
        '-D OUTPUT -p tcp -m comment --comment "meshproxy-init/outbound" -j OUT_X',
        "-F MESHPROXY_INBOUND", "-F OUT_X", "-X MESHPROXY_INBOUND", "-X OUT_X", "COMMIT"]


def test_ipv6_subnets_without_ipv6_are_reported_not_dropped_silently():
    code, out, err = run_main(["--dry-run", "--skip-subnets", "10.0.0.0/8,fd00::/8"])
    assert code == 0 and "fd00" not in out
    assert "skip subnet fd00::/8 is IPv6 but --ipv6 is off" in err


def test_bad_settings_exit_64_with_the_message_on_stderr():
    code, out, err = run_main(["--skip-inbound-ports", "x"])
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("meshproxy-init: error: --skip-inbound-ports='x'")


@pytest.fixture
def privileged(monkeypatch):
    monkeypatch.setattr(system, "which", lambda name: f"/sbin/{name}")
    monkeypatch.setattr(system, "missing_capabilities", lambda needed, status_text=None: [])


class Scripted:
    """Answers by command name; records restore input."""

    def __init__(self, **answers: Result):
        self.answers = answers
        self.restored = []

    def __call__(self, argv, stdin):
        name = argv[0].rsplit("/", 1)[1]
        if name.endswith("-restore"):
            self.restored.append(stdin)
        return self.answers.get(name.replace("-", "_"), Result(0, "", ""))


EMPTY_NAT = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
             "COMMIT\n")


def test_a_refused_restore_exits_1_and_says_nothing_changed(privileged):
    runner = Scripted(iptables=Result(0, "iptables v1.8.9 (nf_tables)", ""),
                      iptables_nft_save=Result(0, EMPTY_NAT, ""),
                      iptables_nft=Result(1, "", "iptables: Bad rule (does a matching rule exist in that chain?).\n"),
                      iptables_nft_restore=Result(4, "", "iptables-nft-restore: line 7 failed\n"))
    code, out, err = run_main([], runner)
    assert code == EXIT_FAILURE and out == ""
    assert "line 7 failed" in err and "Nothing was changed" in err
    assert runner.restored and runner.restored[0].startswith("*nat\n")


def test_an_ipv6_failure_after_ipv4_is_applied_says_how_to_undo(privileged):
    runner = Scripted(iptables=Result(0, "iptables v1.8.9 (nf_tables)", ""),
                      iptables_nft_save=Result(0, EMPTY_NAT, ""), ip6tables_nft_save=Result(0, EMPTY_NAT, ""),
                      iptables_nft=Result(1, "", "Bad rule"), ip6tables_nft=Result(1, "", "Bad rule"),
                      ip6tables_nft_restore=Result(2, "", "ip6tables-nft-restore: line 2 failed\n"))
    code, _, err = run_main(["--ipv6"], runner)
    assert code == EXIT_FAILURE and "ipv4 already applied" in err and "--cleanup" in err


def test_missing_owner_module_is_found_before_anything_changes(privileged):
    runner = Scripted(iptables=Result(0, "iptables v1.8.9 (legacy)", ""),
                      iptables_legacy_save=Result(0, EMPTY_NAT, ""),
                      iptables_legacy=Result(2, "", "iptables v1.8.9 (legacy): "
                                                    "Couldn't load match `owner':No such file or directory\n"))
    code, _, err = run_main([], runner)
    assert code == EXIT_UNAVAILABLE and "xt_owner" in err
    assert runner.restored == []


def test_without_net_admin_nothing_is_run(monkeypatch):
    monkeypatch.setattr(system, "missing_capabilities", lambda needed, status_text=None: list(needed))
    code, _, err = run_main([], never)
    assert code == EXIT_NOPERM and "lacks CAP_NET_ADMIN" in err and "NET_RAW" in err
