"""The one error type meshproxy-init raises: a message that says what to do, and the exit status it maps to."""

from __future__ import annotations

# sysexits.h names, so scripts can tell the causes apart.
EXIT_FAILURE = 1  # iptables refused the rules for a reason not listed below
EXIT_USAGE = 64  # a bad flag or environment value
EXIT_UNAVAILABLE = 69  # a binary, the nat table or a match/target module is missing
EXIT_NOPERM = 77  # not root / no CAP_NET_ADMIN (or CAP_NET_RAW for the legacy backend)


class InitError(Exception):
    """A failure the user can act on; ``str()`` is the whole message, advice included."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(InitError):
    """A bad flag or environment value: exit 64 before anything is read or changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
