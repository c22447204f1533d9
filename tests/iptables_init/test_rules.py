"""meshproxy_init.rules: the rule list as data, one Plan per family, rendered as iptables-save prints it."""

from __future__ import annotations

from meshproxy_init.config import Config, PortRange, load
from meshproxy_init.rules import MULTIPORT_LIMIT, Rule, build_plan, build_plans, multiport_groups

DEFAULT_IPV4 = [
    '-A MESHPROXY_INBOUND -p tcp -m multiport --dports 4143,4140,4191,4190 '
    '-m comment --comment "meshproxy-init/skip-proxy-ports" -j RETURN',
    '-A MESHPROXY_INBOUND -p tcp -m comment --comment "meshproxy-init/redirect-inbound" -j REDIRECT --to-ports 4143',
    '-A MESHPROXY_OUTBOUND -m owner --uid-owner 2102 -m comment --comment "meshproxy-init/skip-proxy-uid" -j RETURN',
    '-A MESHPROXY_OUTBOUND -o lo -m comment --comment "meshproxy-init/skip-loopback-interface" -j RETURN',
    '-A MESHPROXY_OUTBOUND -d 127.0.0.0/8 -m comment --comment "meshproxy-init/skip-loopback-destination" -j RETURN',
    '-A MESHPROXY_OUTBOUND -p tcp -m comment --comment "meshproxy-init/redirect-outbound" -j REDIRECT --to-ports 4140',
    '-A PREROUTING -p tcp -m comment --comment "meshproxy-init/inbound" -j MESHPROXY_INBOUND',
    '-A OUTPUT -p tcp -m comment --comment "meshproxy-init/outbound" -j MESHPROXY_OUTBOUND',
]


def chain_lines(plan, chain):
    return [line for line in plan.lines() if line.startswith(f"-A {chain} ")]


def test_the_default_ipv4_plan():
    plan = build_plan(Config(), "ipv4")
    assert plan.chains == ("MESHPROXY_INBOUND", "MESHPROXY_OUTBOUND")
    assert plan.lines() == DEFAULT_IPV4
    assert [p.family for p in build_plans(Config())] == ["ipv4"]
    assert [p.family for p in build_plans(Config(ipv6=True))] == ["ipv4", "ipv6"]


def test_ipv6_has_the_same_rules_with_v6_loopback():
    v4, v6 = build_plans(Config(ipv6=True))
    assert [line.replace("127.0.0.0/8", "::1/128") for line in v4.lines()] == v6.lines()


def test_the_proxy_uid_returns_first_and_the_redirects_come_last():
    plan = build_plan(load(["--proxy-uid", "999", "--skip-outbound-ports", "443"], {}), "ipv4")
    outbound = chain_lines(plan, "MESHPROXY_OUTBOUND")
    assert "--uid-owner 999" in outbound[0] and outbound[0].endswith("-j RETURN")
    assert outbound[-1].endswith("-j REDIRECT --to-ports 4140")
    inbound = chain_lines(plan, "MESHPROXY_INBOUND")
    assert inbound[-1].endswith("-j REDIRECT --to-ports 4143")
    assert all(line.endswith("-j RETURN") for line in outbound[:-1] + inbound[:-1])


def test_skip_lists_land_in_their_own_chain():
    cfg = load(["--skip-inbound-ports", "22,8000-8100", "--skip-outbound-ports", "5432-5433,443",
                "--skip-subnets", "10.96.0.0/12,fd00::/8", "--ipv6"], {})
    v4, v6 = build_plans(cfg)
    inbound, outbound = chain_lines(v4, "MESHPROXY_INBOUND"), chain_lines(v4, "MESHPROXY_OUTBOUND")
    assert ('-A MESHPROXY_INBOUND -p tcp -m multiport --dports 22,8000:8100 -m comment '
            '--comment "meshproxy-init/skip-inbound-ports" -j RETURN') in inbound
    assert ('-A MESHPROXY_INBOUND -s 10.96.0.0/12 -m comment --comment "meshproxy-init/skip-inbound-subnet" '
            '-j RETURN') in inbound
    assert ('-A MESHPROXY_OUTBOUND -p tcp -m multiport --dports 5432:5433,443 -m comment '
            '--comment "meshproxy-init/skip-outbound-ports" -j RETURN') in outbound
    assert ('-A MESHPROXY_OUTBOUND -d 10.96.0.0/12 -m comment --comment "meshproxy-init/skip-outbound-subnet" '
            '-j RETURN') in outbound
    assert not any("5432" in line for line in inbound) and not any("8000" in line for line in outbound)
    assert not any("fd00" in line for line in v4.lines()) and not any("10.96" in line for line in v6.lines())
    assert any("-s fd00::/8" in line for line in v6.lines()) and any("-d fd00::/8" in line for line in v6.lines())


def test_multiport_lists_are_split_at_fifteen_slots():
    singles = [PortRange(p, p) for p in range(1, 17)]
    assert [g.count(",") + 1 for g in multiport_groups(singles)] == [15, 1]
    ranges = [PortRange(p, p + 1) for p in range(100, 120, 2)]  # ten ranges, two slots each
    groups = list(multiport_groups(ranges))
    assert [g.count(",") + 1 for g in groups] == [7, 3]
    assert groups[0].startswith("100:101,102:103")
    assert list(multiport_groups([])) == []
    plan = build_plan(Config(skip_outbound_ports=tuple(singles)), "ipv4")
    assert len([line for line in plan.lines() if "skip-outbound-ports" in line]) == 2
    assert MULTIPORT_LIMIT == 15


def test_proxy_ports_are_always_skipped_inbound_even_when_moved():
    plan = build_plan(load(["--inbound-port", "15006", "--outbound-port", "15001", "--admin-port", "15021"], {}),
                      "ipv4")
    assert "--dports 15006,15001,15021" in chain_lines(plan, "MESHPROXY_INBOUND")[0]
    assert plan.lines()[-3].endswith("-j REDIRECT --to-ports 15001")


def test_custom_chain_names_are_used_everywhere():
    plan = build_plan(load(["--inbound-chain", "IN_X", "--outbound-chain", "OUT_X"], {}), "ipv4")
    assert plan.chains == ("IN_X", "OUT_X")
    assert [j.line().split()[-1] for j in plan.jumps] == ["IN_X", "OUT_X"]
    assert all(line.split()[1] in ("IN_X", "OUT_X", "PREROUTING", "OUTPUT") for line in plan.lines())
    assert not any("MESHPROXY_" in line.replace("meshproxy-init/", "") for line in plan.lines())


def test_a_rule_renders_delete_form_from_the_same_spec():
    rule = Rule("OUTPUT", "X", protocol="tcp", comment="outbound")
    assert rule.line("-D") == '-D OUTPUT -p tcp -m comment --comment "meshproxy-init/outbound" -j X'
