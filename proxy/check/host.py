"""Checks of this network namespace: the iptables tools, the rules
meshproxy-init installs, and the proxy's listening sockets."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

from proxy.check.results import Result, fail, ok
from proxy.config import Config, HostPort

SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
PATH = f"{os.environ.get('PATH', '')}:{SBIN}"
INIT_HINT = "run iptables-init/meshproxy-init in this network namespace (the pod's init step), as root"
# iptables-save of each backend; the first that shows our chains wins.
SAVE_TOOLS = ("iptables-save", "iptables-nft-save", "iptables-legacy-save")


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=PATH)


def iptables_present() -> Result:
    title = "iptables"
    path = _which("iptables")
    if path is None:
        return fail("iptables", title, "iptables not found",
                    "install iptables (Debian: apt-get install iptables); interception needs it")
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        return fail("iptables", title, f"{path} does not run: {err}", "reinstall iptables")
    return ok("iptables", title, f"{version or 'present'} ({path})")


def _redirect_port(rules: list[str], chain: str) -> int | None:
    for rule in rules:
        if rule.startswith(f"-A {chain} ") and "-j REDIRECT" in rule:
            match = re.search(r"--to-ports (\d+)", rule)
            if match:
                return int(match[1])
    return None


def iptables_rules(cfg: Config, inbound_chain: str, outbound_chain: str) -> Result:
    """The chains exist, are jumped to, and redirect to the ports the proxy listens on."""
    check, title = "iptables-rules", "iptables rules"
    tools = [path for path in map(_which, SAVE_TOOLS) if path]
    if not tools:
        return fail(check, title, "no iptables-save found", "install iptables")
    denied = False
    for tool in tools:
        try:
            run = subprocess.run([tool, "-t", "nat"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if run.returncode != 0:
            denied = denied or "ermission denied" in run.stderr or "must be root" in run.stderr
            continue
        rules = [line for line in run.stdout.splitlines() if line.startswith("-A ")]
        chains = {line[1:].split()[0] for line in run.stdout.splitlines() if line.startswith(":")}
        if inbound_chain not in chains and outbound_chain not in chains:
            continue
        problems = []
        for chain, hook in ((inbound_chain, "PREROUTING"), (outbound_chain, "OUTPUT")):
            if chain not in chains:
                problems.append(f"chain {chain} is missing")
            elif not any(r.startswith(f"-A {hook} ") and r.endswith(f"-j {chain}") for r in rules):
                problems.append(f"nothing in {hook} jumps to {chain}")
        ports = {inbound_chain: cfg.inbound_listen.port, outbound_chain: cfg.outbound_listen.port}
        for chain, port in ports.items():
            got = _redirect_port(rules, chain)
            if chain in chains and got != port:
                problems.append(f"{chain} redirects to {got if got is not None else 'nothing'}, "
                                f"the proxy listens on {port}")
        if problems:
            return fail(check, title, "; ".join(problems),
                        f"run meshproxy-init again with --inbound-port {cfg.inbound_listen.port} "
                        f"--outbound-port {cfg.outbound_listen.port} (it replaces its own rules)")
        return ok(check, title, f"{inbound_chain} -> {ports[inbound_chain]}, {outbound_chain} -> "
                                f"{ports[outbound_chain]} (read with {Path(tool).name})")
    if denied or os.geteuid() != 0:
        return fail(check, title, "cannot read the nat table", "run meshproxy check as root (reading iptables needs "
                    "CAP_NET_ADMIN), or pass --no-iptables when the proxy runs without interception")
    return fail(check, title, f"no {inbound_chain}/{outbound_chain} chains in this network namespace's nat table",
                INIT_HINT + "; or pass --no-iptables when the proxy runs without interception")


# ---- listening sockets ---------------------------------------------------------

_LISTEN = "0A"


def listening() -> set[tuple[str, int]] | None:
    """(address, port) of every TCP listener in this network namespace, from
    /proc/net/tcp{,6}; None when /proc does not say."""
    found: set[tuple[str, int]] = set()
    seen_any = False
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        seen_any = True
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _LISTEN:
                continue
            host_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(host_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((str(ipaddress.ip_address(raw)), int(port_hex, 16)))
    return found if seen_any else None


def _covers(listener: tuple[str, int], want: HostPort) -> bool:
    host, port = listener
    if port != want.port:
        return False
    if host in ("0.0.0.0", "::"):
        return True
    try:
        wanted = ipaddress.ip_address(want.host)
    except ValueError:
        return True  # a name: any listener on the port will do
    bound = ipaddress.ip_address(host)
    bound = getattr(bound, "ipv4_mapped", None) or bound  # an IPv6 socket on ::ffff:a.b.c.d serves a.b.c.d
    return bound == wanted


def port_bound(name: str, address: HostPort, sockets: set[tuple[str, int]] | None) -> Result:
    check, title = f"port-{name}", f"{name} listener"
    if sockets is None:
        return fail(check, title, "cannot read /proc/net/tcp", "run on Linux with /proc mounted")
    if any(_covers(listener, address) for listener in sockets):
        return ok(check, title, f"{address} is listening")
    return fail(check, title, f"nothing listens on {address}",
                "start the proxy (meshproxy run) with the same MESHPROXY_* settings, in this network namespace")
