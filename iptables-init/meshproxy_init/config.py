"""Every setting of meshproxy-init: flag, environment name, default and parser, in one table.

A flag wins over its environment variable, which wins over the default; an
empty environment value counts as unset (templates often render empty
strings). Every value is parsed and cross-checked here, so a bad one exits 64
before any command runs, with a message naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from . import __version__
from .errors import ConfigError

# ---- environment names (the only place they are spelled) -------------------
DRY_RUN = "MESHPROXY_INIT_DRY_RUN"
CLEANUP = "MESHPROXY_INIT_CLEANUP"
PROXY_UID = "MESHPROXY_INIT_PROXY_UID"
INBOUND_PORT = "MESHPROXY_INIT_INBOUND_PORT"
OUTBOUND_PORT = "MESHPROXY_INIT_OUTBOUND_PORT"
ADMIN_PORT = "MESHPROXY_INIT_ADMIN_PORT"
TAP_PORT = "MESHPROXY_INIT_TAP_PORT"
SKIP_INBOUND_PORTS = "MESHPROXY_INIT_SKIP_INBOUND_PORTS"
SKIP_OUTBOUND_PORTS = "MESHPROXY_INIT_SKIP_OUTBOUND_PORTS"
SKIP_SUBNETS = "MESHPROXY_INIT_SKIP_SUBNETS"
IPV6 = "MESHPROXY_INIT_IPV6"
BACKEND = "MESHPROXY_INIT_BACKEND"
INBOUND_CHAIN = "MESHPROXY_INIT_INBOUND_CHAIN"
OUTBOUND_CHAIN = "MESHPROXY_INIT_OUTBOUND_CHAIN"

BACKENDS = ("auto", "nft", "legacy")

# iptables keeps chain names in 29 bytes with the terminating NUL.
MAX_CHAIN_NAME = 28
# Names iptables would read as a built-in chain or a target, not as our chain.
RESERVED_CHAIN_NAMES = frozenset(
    "PREROUTING INPUT FORWARD OUTPUT POSTROUTING ACCEPT DROP QUEUE RETURN "
    "REDIRECT DNAT SNAT MASQUERADE REJECT LOG MARK CONNMARK TPROXY".split()
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PortRange(NamedTuple):
    """One skipped port or an inclusive range of them."""

    first: int
    last: int

    def multiport(self) -> str:
        """The range as ``-m multiport --dports`` spells it: ``22`` or ``8000:8100``."""
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"

    @property
    def weight(self) -> int:
        """How many of multiport's 15 port slots this item uses (a range takes two)."""
        return 1 if self.first == self.last else 2


class Config(NamedTuple):
    """The parsed settings; the rule builder reads nothing else."""

    dry_run: bool = False
    cleanup: bool = False
    proxy_uid: int = 2102
    inbound_port: int = 4143
    outbound_port: int = 4140
    admin_port: int = 4191
    tap_port: int = 4190
    skip_inbound_ports: tuple[PortRange, ...] = ()
    skip_outbound_ports: tuple[PortRange, ...] = ()
    skip_subnets: tuple[Network, ...] = ()
    ipv6: bool = False
    backend: str = "auto"
    inbound_chain: str = "MESHPROXY_INBOUND"
    outbound_chain: str = "MESHPROXY_OUTBOUND"


# ---- parsers: text -> value, ValueError with a reason ---------------------------


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


def parse_port(text: str) -> int:
    try:
        port = int(text.strip(), 10)
    except ValueError:
        raise ValueError("expected a port number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise ValueError("expected a port number from 1 to 65535")
    return port


def parse_uid(text: str) -> int:
    try:
        uid = int(text.strip(), 10)
    except ValueError:
        raise ValueError("expected a numeric uid (the proxy container's runAsUser)") from None
    if uid == 0:
        raise ValueError("uid 0 would exempt every root process in the pod from the redirect; "
                         "run the proxy as its own uid")
    if not 0 < uid < 2**32 - 1:
        raise ValueError("expected a uid from 1 to 4294967294")
    return uid


def parse_port_ranges(text: str) -> tuple[PortRange, ...]:
    """``22,8000-8100`` -> two ranges; duplicates dropped, order kept. ``a:b`` is accepted too."""
    ranges = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        first, sep, last = item.replace(":", "-").partition("-")
        try:
            lo = parse_port(first)
            hi = parse_port(last) if sep else lo
        except ValueError:
            raise ValueError(f"{item!r} is not a port or a range like 8000-8100") from None
        if lo > hi:
            raise ValueError(f"{item!r} is a range whose first port is above its last; write {hi}-{lo}")
        rng = PortRange(lo, hi)
        if rng not in ranges:
            ranges.append(rng)
    return tuple(ranges)


def parse_subnets(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (IPv4 or IPv6); host bits are cleared as iptables would."""
    nets = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not a CIDR like 10.0.0.0/8 or fd00::/8") from None
        if net not in nets:
            nets.append(net)
    return tuple(nets)


def parse_backend(text: str) -> str:
    value = text.strip().lower()
    if value not in BACKENDS:
        raise ValueError("expected auto, nft or legacy")
    return value


_CHAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def parse_chain(text: str) -> str:
    name = text.strip()
    if not _CHAIN_NAME.match(name) or len(name) > MAX_CHAIN_NAME:
        raise ValueError(f"expected up to {MAX_CHAIN_NAME} letters, digits, '_', '-' or '.'")
    if name.upper() in RESERVED_CHAIN_NAMES:
        raise ValueError(f"{name} is a built-in chain or target name")
    return name


# ---- the table -------------------------------------------------------------------


class Setting(NamedTuple):
    field: str  # Config field; the flag is --field-with-dashes
    env: str
    default: str
    parse: Callable[[str], object]
    help: str
    metavar: str = ""  # empty for on/off switches

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("dry_run", DRY_RUN, "false", parse_bool,
            "print the rules (iptables-restore text) and change nothing; needs no privileges"),
    Setting("cleanup", CLEANUP, "false", parse_bool,
            "remove what meshproxy-init added (its chains and the jumps to them) instead of adding it"),
    Setting("proxy_uid", PROXY_UID, "2102", parse_uid,
            "uid the proxy runs as; its own connections are never redirected", "UID"),
    Setting("inbound_port", INBOUND_PORT, "4143", parse_port, "proxy's inbound listener port", "PORT"),
    Setting("outbound_port", OUTBOUND_PORT, "4140", parse_port, "proxy's outbound listener port", "PORT"),
    Setting("admin_port", ADMIN_PORT, "4191", parse_port,
            "proxy's admin port; never redirected inbound, so probes reach it", "PORT"),
    Setting("tap_port", TAP_PORT, "4190", parse_port,
            "proxy's tap server port; never redirected inbound, so tap clients reach it", "PORT"),
    Setting("skip_inbound_ports", SKIP_INBOUND_PORTS, "", parse_port_ranges,
            "inbound destination ports not redirected, e.g. 22,8000-8100", "PORTS"),
    Setting("skip_outbound_ports", SKIP_OUTBOUND_PORTS, "", parse_port_ranges,
            "outbound destination ports not redirected, e.g. 443,5432-5433", "PORTS"),
    Setting("skip_subnets", SKIP_SUBNETS, "", parse_subnets,
            "CIDRs not redirected: as outbound destinations and as inbound sources", "CIDRS"),
    Setting("ipv6", IPV6, "false", parse_bool, "program ip6tables with the same rules too"),
    Setting("backend", BACKEND, "auto", parse_backend,
            "iptables-nft, iptables-legacy, or auto: the one that already has rules, else the system's iptables",
            "{auto,nft,legacy}"),
    Setting("inbound_chain", INBOUND_CHAIN, "MESHPROXY_INBOUND", parse_chain,
            "nat chain jumped to from PREROUTING", "CHAIN"),
    Setting("outbound_chain", OUTBOUND_CHAIN, "MESHPROXY_OUTBOUND", parse_chain,
            "nat chain jumped to from OUTPUT", "CHAIN"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit 2; bad usage is 64 here
        raise ConfigError(f"{message} (see meshproxy-init --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="meshproxy-init",
        description="Redirect a pod's TCP traffic through the meshproxy sidecar (nat table, iptables).",
        epilog="Every flag can also be set by the environment variable shown; the flag wins.",
    )
    for s in SETTINGS:
        help_text = f"{s.help} [env {s.env}; default {s.default or 'none'}]"
        if not s.metavar:
            parser.add_argument(s.flag, dest=s.field, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(s.flag, dest=s.field, default=None, metavar=s.metavar, help=help_text)
    parser.add_argument("--version", action="version", version=f"meshproxy-init {__version__}")
    return parser


def load(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Flags, then environment, then defaults -> a checked Config (ConfigError otherwise)."""
    args = build_parser().parse_args(list(argv))
    values = {}
    for s in SETTINGS:
        given = getattr(args, s.field)
        if isinstance(given, bool):
            values[s.field] = given
            continue
        if given is not None:
            text, source = given, s.flag
        elif environ.get(s.env, "").strip():
            text, source = environ[s.env], s.env
        else:
            text, source = s.default, f"the default of {s.flag}"
        try:
            values[s.field] = s.parse(text)
        except ValueError as err:
            raise ConfigError(f"{source}={text!r}: {err} (flag {s.flag}, environment {s.env})") from None
    return check(Config(**values))


def check(config: Config) -> Config:
    """Cross-field checks: settings that are fine alone but loop or clash together."""
    ports = {"--inbound-port": config.inbound_port, "--outbound-port": config.outbound_port,
             "--admin-port": config.admin_port, "--tap-port": config.tap_port}
    seen: dict = {}
    for flag, port in ports.items():
        if port in seen:
            raise ConfigError(f"{seen[port]} and {flag} are both {port}: the proxy's listeners need distinct ports")
        seen[port] = flag
    if config.inbound_chain == config.outbound_chain:
        raise ConfigError(f"--inbound-chain and --outbound-chain are both {config.inbound_chain}: "
                          "give them distinct names")
    return config


def families(config: Config) -> tuple[str, ...]:
    return ("ipv4", "ipv6") if config.ipv6 else ("ipv4",)


def subnets_for(config: Config, family: str) -> tuple[Network, ...]:
    version = 6 if family == "ipv6" else 4
    return tuple(net for net in config.skip_subnets if net.version == version)


def ignored_subnets(config: Config) -> tuple[Network, ...]:
    """IPv6 CIDRs given without --ipv6: no table to put them in (the CLI warns)."""
    return () if config.ipv6 else tuple(net for net in config.skip_subnets if net.version == 6)

