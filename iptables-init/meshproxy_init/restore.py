"""From a Plan (and the nat table as iptables-save printed it) to iptables-restore input.

Applying is one ``iptables-restore --noflush`` transaction per family:
declaring a chain creates it, or empties it when it already exists, so a
second run refills the chains instead of appending twice, and a failure
anywhere leaves the table as it was. Jumps from the built-in chains already
in place are kept where they are (not re-added, so unrelated rules around
them do not move); stray or duplicate jumps to our chains are deleted.
Cleanup deletes every jump to our chains, then empties and deletes them:
nothing else in the table is touched. All of it is text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from .rules import TABLE, Plan


class NatState(NamedTuple):
    """The nat table as iptables-save printed it: chain names and ``-A`` lines, in order."""

    chains: tuple[str, ...]
    lines: tuple[str, ...]


_UNTOUCHED = NatState((), ())  # a table without our chains (and the dry run's view)


def parse_save(text: str) -> NatState:
    """Read the ``*nat`` section of iptables-save output (other tables and comments ignored)."""
    chains: list[str] = []
    lines: list[str] = []
    in_nat = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_nat = line == "*" + TABLE
        elif not in_nat or not line or line.startswith("#"):
            continue
        elif line.startswith(":"):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            lines.append(line)
        elif line == "COMMIT":
            in_nat = False
    return NatState(tuple(chains), tuple(lines))


_JUMP = re.compile(r"^-A (\S+) (?:.* )?-[jg] (\S+)$")


def target_of(line: str) -> tuple[str, str]:
    """``-A OUTPUT ... -j X`` -> ("OUTPUT", "X"); ("", "") when the rule ends with target options."""
    match = _JUMP.match(line)
    return (match.group(1), match.group(2)) if match else ("", "")


def jumps_to(state: NatState, chains: Sequence[str]) -> list[str]:
    """Rules outside our chains whose target is one of them."""
    found = []
    for line in state.lines:
        chain, target = target_of(line)
        if target in chains and chain not in chains:
            found.append(line)
    return found


def _delete(line: str) -> str:
    return "-D" + line[2:]  # "-A CHAIN spec" -> "-D CHAIN spec"


def apply_text(plan: Plan, state: NatState = _UNTOUCHED) -> str:
    """The iptables-restore --noflush input that makes the table hold exactly ``plan``.

    With the default (empty) state this is the dry run's text, and it is also
    what a first run on a table without our chains applies.
    """
    wanted = [jump.line() for jump in plan.jumps]
    kept: list[str] = []
    deletes: list[str] = []
    for line in jumps_to(state, plan.chains):
        if line in wanted and line not in kept:
            kept.append(line)
        else:
            deletes.append(_delete(line))
    out = ["*" + TABLE]
    out += [f":{chain} - [0:0]" for chain in plan.chains]
    out += deletes
    out += [rule.line() for rule in plan.rules]
    out += [line for line in wanted if line not in kept]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def cleanup_text(plan: Plan, state: NatState) -> str | None:
    """The iptables-restore --noflush input that removes our chains and every jump to them; None if none exist."""
    present = [chain for chain in plan.chains if chain in state.chains]
    refs = jumps_to(state, plan.chains)
    if not present and not refs:
        return None
    out = ["*" + TABLE]
    out += [_delete(line) for line in refs]
    out += [f"-F {chain}" for chain in present]  # all flushed before any is deleted
    out += [f"-X {chain}" for chain in present]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def applied_state(plan: Plan) -> NatState:
    """The nat table a first apply leaves on an empty table (what the cleanup dry run assumes)."""
    return NatState(("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", *plan.chains), tuple(plan.lines()))


def differences(plan: Plan, state: NatState) -> list[str]:
    """How the table differs from the plan, for our chains and jumps only; empty when it matches."""
    problems = []
    for chain in plan.chains:
        if chain not in state.chains:
            problems.append(f"chain {chain} is missing")
            continue
        want = [rule.line() for rule in plan.rules if rule.chain == chain]
        have = [line for line in state.lines if line.startswith(f"-A {chain} ")]
        if want != have:
            problems.append(f"chain {chain} holds {have} instead of {want}")
    refs = jumps_to(state, plan.chains)
    for jump in plan.jumps:
        count = refs.count(jump.line())
        if count != 1:
            problems.append(f"{jump.line()!r} is present {count} times instead of once")
    wanted = {jump.line() for jump in plan.jumps}
    problems += [f"unexpected jump {line!r}" for line in refs if line not in wanted]
    return problems
