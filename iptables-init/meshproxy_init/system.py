"""The only code that touches the system: finding binaries, reading capabilities, running iptables.

Every failure is turned into an InitError whose message says what to do. The
cause is read from what iptables printed (permission, missing nat table,
missing match/target module, lock), because its exit statuses do not tell
them apart. Commands are run through a ``Runner`` so tests can stand in for
the system.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from .backend import BACKENDS, Binaries, Facts, binaries, system_default_from_version
from .config import Config
from .errors import EXIT_FAILURE, EXIT_NOPERM, EXIT_UNAVAILABLE, InitError
from .restore import NatState, parse_save

# Init containers usually have sbin on PATH; a shell started as a plain user may not.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
WAIT_SECONDS = "10"  # -w: wait this long for the xtables lock instead of failing at once
COMMAND_TIMEOUT = 60.0

CAPABILITIES = {"NET_ADMIN": 12, "NET_RAW": 13}  # linux/capability.h

DEPLOY_HINT = ("run it as root, or with the NET_ADMIN and NET_RAW capabilities, in the pod's network namespace "
               "(Kubernetes: securityContext.capabilities.add: [NET_ADMIN, NET_RAW] on the init container; "
               "docker-compose: cap_add: [NET_ADMIN, NET_RAW])")


class Result(NamedTuple):
    code: int
    out: str
    err: str


Runner = Callable[[Sequence[str], str | None], Result]


def run(argv: Sequence[str], stdin: str | None = None) -> Result:
    """Run a command to completion; a missing binary or a hang becomes a Result, not an exception."""
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        return Result(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]}: no answer within {COMMAND_TIMEOUT:.0f} s")
    return Result(proc.returncode, proc.stdout, proc.stderr)


def which(name: str, environ: dict[str, str] | None = None) -> str | None:
    """``shutil.which`` (absent from python3-minimal), with the sbin directories always searched."""
    path = (environ if environ is not None else os.environ).get("PATH", "")
    for directory in [*path.split(os.pathsep), *SBIN_DIRS]:
        if directory:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


# ---- privileges ------------------------------------------------------------------


def effective_capabilities(status_text: str) -> int | None:
    """The CapEff mask from /proc/self/status text, or None if it is not there."""
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)\s*$", status_text, re.MULTILINE)
    return int(match.group(1), 16) if match else None


def missing_capabilities(needed: Iterable[str], status_text: str | None = None) -> list[str]:
    if status_text is None:
        try:
            with open("/proc/self/status", encoding="ascii", errors="replace") as f:
                status_text = f.read()
        except OSError:
            return []  # cannot tell: let iptables itself answer
    mask = effective_capabilities(status_text)
    if mask is None:
        return []
    return [cap for cap in needed if not mask >> CAPABILITIES[cap] & 1]


def require_capabilities(needed: Sequence[str], why: str, status_text: str | None = None) -> None:
    missing = missing_capabilities(needed, status_text)
    if missing:
        caps = " and ".join(f"CAP_{cap}" for cap in missing)
        raise InitError(f"this process (uid {os.geteuid()}) lacks {caps}, which {why}: {DEPLOY_HINT}", EXIT_NOPERM)


# ---- what iptables said ----------------------------------------------------------


def classify(message: str) -> str:
    """permission | table | extension | lock | lockfile | other, from what an iptables command printed."""
    text = message.lower()
    if "xtables.lock" in text and "read-only" in text:
        return "lockfile"
    if "permission denied" in text or "operation not permitted" in text or "you must be root" in text:
        return "permission"
    if re.search(r"table [`'\"]?\w+['\"]? does not exist|can't initialize (ip6?tables|iptables) table|"
                 r"table does not exist", text):
        return "table"
    if re.search(r"couldn't load (match|target)|missing kernel module|no chain/target/match by that name|"
                 r"extension \S+ revision \d+ not supported|"
                 r"unknown option \"--(uid-owner|dports|to-ports|comment)\"", text):
        return "extension"
    if "xtables lock" in text:
        return "lock"
    return "other"


def first_line(message: str) -> str:
    for line in message.splitlines():
        if line.strip():
            return line.strip()
    return "no message"


def explain(command: str, result: Result, backend: str, family: str, changed_nothing: bool = False) -> InitError:
    """Turn a failed iptables command into an error that says what to do."""
    said = first_line(result.err or result.out)
    other = "legacy" if backend == "nft" else "nft"
    kind = classify(result.err + result.out)
    if kind == "permission":
        return InitError(f"{command} was refused ({said}): {DEPLOY_HINT}", EXIT_NOPERM)
    if kind == "table":
        module = {"nft": "nft_chain_nat", "legacy": "ip6table_nat" if family == "ipv6" else "iptable_nat"}[backend]
        return InitError(f"the {family} nat table is not available to iptables-{backend} ({said}): load NAT support "
                         f"on the node (modprobe {module}), or try --backend {other}", EXIT_UNAVAILABLE)
    if kind == "extension":
        return InitError(f"{command}: a match or target the rules use is missing ({said}): the rules need the owner, "
                         "multiport and comment matches and the REDIRECT target (kernel modules xt_owner, "
                         "xt_multiport, xt_comment, xt_REDIRECT, and nft_compat for the nft backend); load them on "
                         f"the node, or try --backend {other}", EXIT_UNAVAILABLE)
    if kind == "lockfile":
        return InitError(f"{command} cannot create its lock file ({said}): give it a writable /run (Kubernetes "
                         "with readOnlyRootFilesystem: an emptyDir volume mounted at /run)", EXIT_UNAVAILABLE)
    tail = " Nothing was changed: the rules are applied in one transaction." if changed_nothing else ""
    if kind == "lock":
        return InitError(f"{command}: another process held the xtables lock for {WAIT_SECONDS} s ({said}): "
                         f"run meshproxy-init again once it is done.{tail}", EXIT_FAILURE)
    return InitError(f"{command} failed with exit status {result.code}: {(result.err or result.out).strip() or said}. "
                     f"See the rules with meshproxy-init --dry-run and the same settings.{tail}", EXIT_FAILURE)


# ---- the iptables commands for one backend and family ----------------------------


class Iptables:
    """iptables-save / -C / iptables-restore for one backend and family."""

    def __init__(self, backend: str, family: str, runner: Runner = run) -> None:
        self.backend = backend
        self.family = family
        self.bins: Binaries = binaries(backend, family)
        self._run = runner

    def _path(self, name: str) -> str:
        path = which(name)
        if path is None:
            raise InitError(f"{name} is not installed: install the iptables package "
                            "(Debian: apt-get install iptables) or choose the other --backend", EXIT_UNAVAILABLE)
        return path

    def save(self) -> NatState:
        """The nat table now; fails (with advice) without privileges or without a nat table."""
        argv = [self._path(self.bins.save), "-t", "nat"]
        result = self._run(argv, None)
        if result.code != 0:
            raise explain(" ".join([self.bins.save, "-t", "nat"]), result, self.backend, self.family)
        return parse_save(result.out)

    def probe(self, config: Config) -> None:
        """A harmless ``-C`` (check) of a rule using every match and target we need.

        "Bad rule" (nft) or "No chain/target/match by that name" (legacy) just
        means no such rule exists, so the modules loaded; a missing module or
        table is reported instead. (Legacy prints the same words for a kernel
        module that is missing; then iptables-restore fails and says so.)
        """
        spec = ["-t", "nat", "-C", "OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", str(config.proxy_uid),
                "-m", "multiport", "--dports", str(config.outbound_port), "-m", "comment", "--comment",
                "meshproxy-init/probe", "-j", "REDIRECT", "--to-ports", str(config.outbound_port)]
        result = self._run([self._path(self.bins.iptables), "-w", WAIT_SECONDS, *spec], None)
        said = (result.err + result.out).lower()
        if result.code == 0 or (result.code == 1 and ("bad rule" in said or "no chain/target/match" in said)):
            return
        raise explain(f"{self.bins.iptables} -t nat -C OUTPUT (a check that changes nothing)", result,
                      self.backend, self.family)

    def restore(self, text: str) -> None:
        argv = [self._path(self.bins.restore), "-w", WAIT_SECONDS, "--noflush"]
        result = self._run(argv, text)
        if result.code != 0:
            raise explain(f"{self.bins.restore} --noflush", result, self.backend, self.family, changed_nothing=True)


# ---- facts for backend auto-detection --------------------------------------------


def count_rules(save_output: str) -> int:
    return sum(1 for line in save_output.splitlines() if line.startswith("-A "))


def gather_facts(families: Sequence[str], runner: Runner = run) -> Facts:
    """What backend.choose needs: installed backends, their rule counts here, what `iptables` is."""
    installed = tuple(b for b in BACKENDS
                      if all(which(name) for family in families for name in binaries(b, family)))
    counts: dict[str, int | None] = {}
    for backend in installed:
        total: int | None = 0
        for family in families:
            # All tables, no -t: listing does not instantiate a table that is not there.
            result = runner([which(binaries(backend, family).save) or binaries(backend, family).save], None)
            if result.code != 0:
                total = None
                break
            total = (total or 0) + count_rules(result.out)
        counts[backend] = total
    default = None
    iptables = which("iptables")
    if iptables:
        version = runner([iptables, "-V"], None)
        default = system_default_from_version(version.out + version.err)
    return Facts(installed, counts, default)
