"""Which iptables to drive: iptables-nft or iptables-legacy, and the binary names for each family.

The two backends program different kernel subsystems that both see every
packet, so rules split between them are hard to read and to reason about.
``auto`` therefore goes with the one that already holds rules in this network
namespace (more rules wins), and when neither does, with the one the
system's ``iptables`` is (``iptables -V`` says ``nf_tables`` or ``legacy``).
The choice is a pure function of those facts; gathering them is ``system``'s job.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import EXIT_UNAVAILABLE, InitError

BACKENDS = ("nft", "legacy")


class Binaries(NamedTuple):
    """The three commands used for one backend and family."""

    iptables: str
    save: str
    restore: str


def binaries(backend: str, family: str) -> Binaries:
    base = "ip6tables" if family == "ipv6" else "iptables"
    return Binaries(f"{base}-{backend}", f"{base}-{backend}-save", f"{base}-{backend}-restore")


class Facts(NamedTuple):
    """What auto-detection looks at."""

    installed: tuple[str, ...]  # backends whose commands are all on PATH
    rule_counts: dict[str, int | None]  # backend -> rules it shows here (None: could not read)
    system_default: str | None  # the backend `iptables` is, if it could be told


def system_default_from_version(version_output: str) -> str | None:
    """``iptables v1.8.9 (nf_tables)`` -> "nft"; ``... (legacy)`` -> "legacy"."""
    if "nf_tables" in version_output:
        return "nft"
    if "legacy" in version_output:
        return "legacy"
    return None


def _install_hint(backend: str) -> str:
    other = "legacy" if backend == "nft" else "nft"
    return (f"install the iptables package (Debian: apt-get install iptables, which has both backends; "
            f"Alpine: apk add iptables{'-legacy' if backend == 'legacy' else ''}) or choose --backend {other}")


def choose(requested: str, facts: Facts) -> tuple[str, str]:
    """The backend to use and a one-line reason, or InitError when none can be used."""
    if requested in BACKENDS:
        if requested not in facts.installed:
            raise InitError(f"--backend {requested}: iptables-{requested} is not installed: {_install_hint(requested)}",
                            EXIT_UNAVAILABLE)
        return requested, "requested with --backend"
    if not facts.installed:
        raise InitError("no iptables found (looked for iptables-nft and iptables-legacy with their -save and "
                        "-restore): install the iptables package (Debian: apt-get install iptables)", EXIT_UNAVAILABLE)
    if len(facts.installed) == 1:
        only = facts.installed[0]
        return only, f"auto, only iptables-{only} is installed"
    # A backend that cannot even list its tables here (no kernel support) is
    # out, unless none can (then the real commands will say why, e.g. privileges).
    readable = tuple(b for b in facts.installed if facts.rule_counts.get(b) is not None)
    if len(readable) == 1:
        unreadable = ", ".join(f"iptables-{b}" for b in facts.installed if b not in readable)
        return readable[0], f"auto, {unreadable} could not list its tables here"
    candidates = readable or facts.installed
    counts = {b: facts.rule_counts.get(b) or 0 for b in candidates}
    busiest = max(counts.values())
    with_most = [b for b in candidates if counts[b] == busiest and busiest > 0]
    summary = ", ".join(f"iptables-{b}: {counts[b]} rule{'' if counts[b] == 1 else 's'}" for b in candidates)
    if len(with_most) == 1:
        return with_most[0], f"auto, it already holds the most rules here ({summary})"
    why = "both hold as many rules here" if with_most else "no rules here yet"
    if facts.system_default in candidates:
        return facts.system_default, f"auto, {why} and the system's iptables is iptables-{facts.system_default}"
    return candidates[0], f"auto, {why} and the system's iptables is unknown, so the first of {', '.join(candidates)}"
