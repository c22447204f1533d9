"""Log-level directives as Linkerd (tracing's EnvFilter) spells them: ``warn,proxy.outbound=debug``.

A directive string is comma-separated: a bare level sets the default, and
``target=level`` sets the level of the loggers whose dotted name starts with
``target`` (``proxy.outbound`` covers ``proxy.outbound.balance`` but not
``proxy.outboundx``); the longest matching target wins. Levels are ``trace``,
``debug``, ``info``, ``warn`` (or ``warning``), ``error`` and ``off``, in any
case. Pure parsing, no logging library: ``proxy.config`` validates
``MESHPROXY_LOG_LEVEL`` with it before anything starts.
"""

from __future__ import annotations

import re

from proxy.record import record

# Numbers as the stdlib's logging module has them; trace sits below debug
# (nothing logs at trace yet, so it shows what debug shows) and off above all.
LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "off": 100}
CRITICAL = 50  # not a directive level (Linkerd has none); the critical calls sit here

_TARGET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@record
class LogFilter:
    """A parsed directive string; ``text`` is its normalized spelling (what /proxy-log-level shows)."""

    text: str
    default: int
    targets: tuple[tuple[str, int], ...]  # (dotted prefix, level), longest prefix first

    def level_for(self, name: str) -> int:
        """The threshold of the logger called ``name``: its longest matching target's, else the default.

        Called once per logger and directive change, never per log call."""
        for prefix, level in self.targets:
            if name == prefix or name.startswith(prefix + "."):
                return level
        return self.default


def _level(word: str, part: str, text: str) -> int:
    level = LEVELS.get(word.lower())
    if level is None:
        raise ValueError(f"unknown log level {word!r} in {part!r} of {text!r} "
                         f"(levels: {', '.join(LEVELS)}; targets: name=level)")
    return level


def parse(text: str) -> LogFilter:
    """Parse a directive string; raises ValueError naming the part at fault."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty log level (e.g. info, or warn,proxy.outbound=debug)")
    default = LEVELS["info"]
    targets: dict[str, int] = {}
    normalized: list[str] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue  # tolerated, as EnvFilter does: "warn," is "warn"
        target, eq, word = part.partition("=")
        target, word = target.strip(), word.strip()
        if not eq:
            default = _level(target, part, text)
            normalized.append(target.lower())
            continue
        if not _TARGET.fullmatch(target) or target.endswith("."):
            raise ValueError(f"bad log target {target!r} in {part!r} of {text!r} (a dotted logger name, "
                             "e.g. proxy.outbound)")
        targets[target] = _level(word, part, text)
        normalized.append(f"{target}={word.lower()}")
    if not normalized:
        raise ValueError(f"no directive in {text!r}")
    ordered = tuple(sorted(targets.items(), key=lambda item: len(item[0]), reverse=True))
    return LogFilter(",".join(normalized), default, ordered)


def normalize(text: str) -> str:
    """The normalized spelling of a directive string (the parser for ``MESHPROXY_LOG_LEVEL``)."""
    return parse(text).text
