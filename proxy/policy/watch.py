"""The policy file, loaded at start and re-read when it changes; one current PolicySet for both directions.

``PolicyWatch.poll`` is called from the app's once-a-second sweep: it
compares the file's (inode, size, mtime) with what was loaded last, parses a
changed file and, when valid, swaps the current PolicySet and tells every
subscriber. An invalid edit keeps the last good policy (logged, counted as
``policy_reload_total{result="invalid"}``). The file disappearing counts as
invalid too: removing a policy is done by emptying the file, not deleting it,
so a half-finished ConfigMap swap cannot drop every route at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from proxy.policy.model import PolicySet
from proxy.policy.parse import ParseError, parse
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.policy")

EMPTY = PolicySet({})

Subscriber = Callable[[PolicySet], None]


class PolicyFileError(ValueError):
    """The policy file cannot be read or is invalid (at start this stops the proxy)."""


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read(path: str, cluster_domain: str = "cluster.local") -> PolicySet:
    """Parse the file now; raises PolicyFileError naming the file and the problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise PolicyFileError(f"{path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise PolicyFileError(f"{path}: not UTF-8 text ({err.reason})") from None
    try:
        return parse(text, cluster_domain)
    except ParseError as err:
        raise PolicyFileError(f"{path}: {err}") from None


class PolicyWatch:
    """The current PolicySet of one file, and who wants to hear about a new one."""

    def __init__(self, path: str | None, cluster_domain: str = "cluster.local") -> None:
        self.path = path
        self.cluster_domain = cluster_domain
        self.current: PolicySet = EMPTY
        self.version = 0  # bumped on every applied change
        self.reload_ok = 0
        self.reload_invalid = 0
        self.subscribers: list[Subscriber] = []
        self._stamp: tuple[int, int, int] | None = None
        self._bad_stamp: tuple[int, int, int] | None = None

    def load(self) -> PolicySet:
        """First load (raises PolicyFileError); no path means an empty policy."""
        if self.path is None:
            return self.current
        stamp = _stamp(self.path)
        self.current = read(self.path, self.cluster_domain)
        self._stamp = stamp
        self.version += 1
        for warning in self.current.warnings:
            log.warning("policy warning", path=self.path, warning=warning)
        log.info("policy loaded", path=self.path, services=len(self.current.services))
        return self.current

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(policy_set)`` after every applied change (not for the current one)."""
        self.subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self.subscribers:
                self.subscribers.remove(callback)

        return unsubscribe

    def poll(self) -> bool:
        """Re-read the file if it changed; True when a new policy was applied."""
        if self.path is None:
            return False
        stamp = _stamp(self.path)
        if stamp == self._stamp or (stamp is not None and stamp == self._bad_stamp):
            return False
        if stamp is None:
            if self._bad_stamp is None and self._stamp is not None:
                self._reject("the file is gone")
            self._bad_stamp = None
            self._stamp = None
            return False
        try:
            new = read(self.path, self.cluster_domain)
        except Exception as err:  # PolicyFileError, or a parser bug: either way keep the last good one
            self._bad_stamp = stamp  # reported once per bad version of the file
            self._reject(str(err) if isinstance(err, PolicyFileError) else f"{self.path}: {err!r}")
            return False
        self._stamp, self._bad_stamp = stamp, None
        self.apply(new)
        return True

    def apply(self, new: PolicySet) -> None:
        """Make ``new`` current and tell the subscribers (one that raises is logged, the rest still run)."""
        self.current = new
        self.version += 1
        self.reload_ok += 1
        for warning in new.warnings:
            log.warning("policy warning", path=self.path, warning=warning)
        log.info("policy reloaded", path=self.path, services=len(new.services), version=self.version)
        for callback in tuple(self.subscribers):
            try:
                callback(new)
            except Exception:  # a subscriber's bug must not stop the others
                log.error("policy subscriber failed", exc_info=True)

    def _reject(self, why: str) -> None:
        self.reload_invalid += 1
        log.error("policy reload rejected: keeping the last good policy", path=self.path, error=why)

    def render(self, out: list[str]) -> None:
        out.append("# HELP policy_reload_total "
                   "Policy file reloads, by result (invalid: the last good policy was kept).")
        out.append("# TYPE policy_reload_total counter")
        out.append(f'policy_reload_total{{result="ok"}} {self.reload_ok}')
        out.append(f'policy_reload_total{{result="invalid"}} {self.reload_invalid}')
