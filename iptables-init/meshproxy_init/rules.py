"""The rules meshproxy-init installs, as data: a Plan per address family, built from the Config alone.

Nothing here reads the system or runs a command, so the dry run, the apply
and the tests all see the same list. A Rule renders itself exactly as
``iptables-save`` prints it (option order, quoting, CIDR form), which is what
lets the tool verify what it applied and the tests compare text for text.

Why each rule exists (README.md has the longer story):

* inbound chain, jumped to from PREROUTING (connections arriving from outside
  the pod): leave the proxy's own ports alone (admin port for probes; the
  inbound port needs no redirect; the outbound listener must never be reached
  from outside through the inbound path), leave the skipped ports and source
  subnets alone, redirect the rest of TCP to the inbound port;
* outbound chain, jumped to from OUTPUT (connections made inside the pod):
  return for the proxy's uid first (else its upstream connections would loop
  back into it), for everything routed over ``lo`` (loopback addresses and the
  pod's own IPs), for loopback destinations whatever the route, for the
  skipped ports and subnets; redirect the rest of TCP to the outbound port.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from .config import Config, PortRange, families, subnets_for

# multiport takes at most 15 ports per rule, a range counting as two.
MULTIPORT_LIMIT = 15
COMMENT_PREFIX = "meshproxy-init/"
LOOPBACK = {"ipv4": "127.0.0.0/8", "ipv6": "::1/128"}
TABLE = "nat"


class Rule(NamedTuple):
    """One ``-A chain ...`` line; empty fields are left out. Fields are in iptables-save's order."""

    chain: str
    jump: str
    source: str = ""
    destination: str = ""
    out_interface: str = ""
    protocol: str = ""
    uid_owner: int | None = None
    dports: str = ""  # multiport list: 22,8000:8100
    comment: str = ""
    to_ports: int | None = None

    def spec(self) -> list[str]:
        """The arguments after ``-A chain`` (or ``-D chain``), in iptables-save's order."""
        args: list[str] = []
        if self.source:
            args += ["-s", self.source]
        if self.destination:
            args += ["-d", self.destination]
        if self.out_interface:
            args += ["-o", self.out_interface]
        if self.protocol:
            args += ["-p", self.protocol]
        if self.uid_owner is not None:
            args += ["-m", "owner", "--uid-owner", str(self.uid_owner)]
        if self.dports:
            args += ["-m", "multiport", "--dports", self.dports]
        if self.comment:
            args += ["-m", "comment", "--comment", f'"{COMMENT_PREFIX}{self.comment}"']
        args += ["-j", self.jump]
        if self.to_ports is not None:
            args += ["--to-ports", str(self.to_ports)]
        return args

    def line(self, op: str = "-A") -> str:
        return " ".join([op, self.chain, *self.spec()])


class Plan(NamedTuple):
    """Everything meshproxy-init owns in one family's nat table."""

    family: str  # "ipv4" or "ipv6"
    chains: tuple[str, ...]  # the chains it creates, in creation order
    rules: tuple[Rule, ...]  # the rules inside those chains
    jumps: tuple[Rule, ...]  # the rules in built-in chains that jump to them

    def lines(self) -> list[str]:
        """Every rule this plan owns, as iptables-save prints it."""
        return [rule.line() for rule in (*self.rules, *self.jumps)]


def multiport_groups(ranges: Iterable[PortRange]) -> Iterator[str]:
    """Split ports into ``--dports`` lists that fit multiport's 15 slots."""
    group: list[str] = []
    used = 0
    for rng in ranges:
        if used + rng.weight > MULTIPORT_LIMIT:
            yield ",".join(group)
            group, used = [], 0
        group.append(rng.multiport())
        used += rng.weight
    if group:
        yield ",".join(group)


def proxy_ports(config: Config) -> tuple[PortRange, ...]:
    ports = (config.inbound_port, config.outbound_port, config.admin_port, config.tap_port)
    return tuple(PortRange(p, p) for p in ports)


def inbound_rules(config: Config, family: str) -> list[Rule]:
    chain = config.inbound_chain
    rules = [Rule(chain, "RETURN", protocol="tcp", dports=dports, comment="skip-proxy-ports")
             for dports in multiport_groups(proxy_ports(config))]
    rules += [Rule(chain, "RETURN", protocol="tcp", dports=dports, comment="skip-inbound-ports")
              for dports in multiport_groups(config.skip_inbound_ports)]
    rules += [Rule(chain, "RETURN", source=str(net), comment="skip-inbound-subnet")
              for net in subnets_for(config, family)]
    rules.append(Rule(chain, "REDIRECT", protocol="tcp", comment="redirect-inbound",
                      to_ports=config.inbound_port))
    return rules


def outbound_rules(config: Config, family: str) -> list[Rule]:
    chain = config.outbound_chain
    rules = [
        Rule(chain, "RETURN", uid_owner=config.proxy_uid, comment="skip-proxy-uid"),
        Rule(chain, "RETURN", out_interface="lo", comment="skip-loopback-interface"),
        Rule(chain, "RETURN", destination=LOOPBACK[family], comment="skip-loopback-destination"),
    ]
    rules += [Rule(chain, "RETURN", protocol="tcp", dports=dports, comment="skip-outbound-ports")
              for dports in multiport_groups(config.skip_outbound_ports)]
    rules += [Rule(chain, "RETURN", destination=str(net), comment="skip-outbound-subnet")
              for net in subnets_for(config, family)]
    rules.append(Rule(chain, "REDIRECT", protocol="tcp", comment="redirect-outbound",
                      to_ports=config.outbound_port))
    return rules


def build_plan(config: Config, family: str) -> Plan:
    return Plan(
        family=family,
        chains=(config.inbound_chain, config.outbound_chain),
        rules=tuple(inbound_rules(config, family) + outbound_rules(config, family)),
        jumps=(
            # Only TCP is ever redirected, so other protocols (DNS over UDP)
            # never enter the chains at all.
            Rule("PREROUTING", config.inbound_chain, protocol="tcp", comment="inbound"),
            Rule("OUTPUT", config.outbound_chain, protocol="tcp", comment="outbound"),
        ),
    )


def build_plans(config: Config) -> tuple[Plan, ...]:
    """One Plan per family to program: IPv4 always, IPv6 with --ipv6."""
    return tuple(build_plan(config, family) for family in families(config))
