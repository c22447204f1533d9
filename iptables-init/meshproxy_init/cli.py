"""The meshproxy-init command: settings -> rule plans -> (print | check, apply, verify | clean up).

stdout carries the iptables-restore text (what a dry run would apply, or what
was applied), one section per family; stderr carries what happened and why.
Exit statuses: 0 done, 1 iptables refused, 64 bad setting, 69 something
missing, 77 not privileged (errors.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from . import backend, restore, system
from . import config as settings
from .errors import InitError
from .rules import Plan, build_plan, build_plans

TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}


def log(err: TextIO, message: str) -> None:
    print(f"meshproxy-init: {message}", file=err, flush=True)


def section(header: str, text: str) -> str:
    return f"# {header}\n{text}"


def dry_run(config: settings.Config, plans: Sequence[Plan]) -> str:
    if config.cleanup:
        intro = ("# meshproxy-init dry run of --cleanup: nothing was changed. This assumes the rules a previous run "
                 "with these settings left; the real cleanup reads the table and deletes only what is there.")
        texts = [(p, restore.cleanup_text(p, restore.applied_state(p)) or "") for p in plans]
    else:
        intro = "# meshproxy-init dry run: nothing was changed."
        texts = [(p, restore.apply_text(p)) for p in plans]
    body = [section(f"{p.family} nat table, for {TOOL[p.family]}-restore --noflush", text) for p, text in texts]
    return "\n".join([intro, *body])


def execute(config: settings.Config, plans: Sequence[Plan], runner: system.Runner,
            out: TextIO, err: TextIO) -> int:
    system.require_capabilities(["NET_ADMIN"], "iptables needs to change the nat table")
    facts = system.gather_facts(settings.families(config), runner)
    chosen, reason = backend.choose(config.backend, facts)
    log(err, f"using iptables-{chosen}: {reason}")
    if chosen == "legacy":
        system.require_capabilities(["NET_RAW"], "iptables-legacy needs for its raw socket")

    # Everything is read and checked for every family before anything changes.
    work: list[tuple[Plan, system.Iptables, restore.NatState]] = []
    for plan in plans:
        table = system.Iptables(chosen, plan.family, runner)
        state = table.save()
        if not config.cleanup:
            table.probe(config)
        work.append((plan, table, state))
    if config.cleanup and not config.ipv6:
        work += _ipv6_leftovers(config, chosen, runner, err)

    for index, (plan, table, state) in enumerate(work):
        if config.cleanup:
            text = restore.cleanup_text(plan, state)
            if text is None:
                log(err, f"{plan.family}: nothing to clean up (no {' or '.join(plan.chains)} chain, no jump to them)")
                continue
        else:
            text = restore.apply_text(plan, state)
        try:
            table.restore(text)
        except InitError as error:
            done = [p.family for p, _, _ in work[:index]]
            if done and not config.cleanup:
                raise InitError(f"{error} ({' and '.join(done)} already applied: undo it with meshproxy-init "
                                "--cleanup and the same settings)", error.exit_code) from None
            raise
        out.write(section(f"{plan.family} nat table, applied with {table.bins.restore} --noflush", text))
        out.flush()
        if config.cleanup:
            log(err, f"{plan.family}: removed {', '.join(plan.chains)} and the jumps to them")
            continue
        problems = restore.differences(plan, table.save())
        for problem in problems:
            log(err, f"warning: {plan.family}: after applying, {problem} (did something else change the nat table?)")
        if not problems:
            log(err, f"{plan.family}: {len(plan.rules)} rules in {', '.join(plan.chains)}, jumped to from "
                     f"{' and '.join(j.chain for j in plan.jumps)}; verified with {table.bins.save}")
    return 0


def _ipv6_leftovers(config: settings.Config, chosen: str, runner: system.Runner, err: TextIO):
    """--cleanup without --ipv6 still removes IPv6 chains left by a run with --ipv6, when it can see them."""
    table = system.Iptables(chosen, "ipv6", runner)
    try:
        state = table.save()
    except InitError:
        return []  # no ip6tables or no IPv6 here: nothing of ours can be there
    plan = build_plan(config, "ipv6")
    if restore.cleanup_text(plan, state) is None:
        return []
    log(err, "ipv6: found chains of a run with --ipv6; removing them too")
    return [(plan, table, state)]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         runner: system.Runner = system.run, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        config = settings.load(sys.argv[1:] if argv is None else argv, os.environ if environ is None else environ)
        for net in settings.ignored_subnets(config):
            log(err, f"warning: skip subnet {net} is IPv6 but --ipv6 is off: ignored (add --ipv6 to program ip6tables)")
        plans = build_plans(config)
        if config.dry_run:
            out.write(dry_run(config, plans))
            return 0
        return execute(config, plans, runner, out, err)
    except InitError as error:
        log(err, f"error: {error}")
        return error.exit_code
    except KeyboardInterrupt:
        log(err, "interrupted")
        return 130

