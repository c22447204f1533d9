"""The proxy's loggers: plain or JSON lines on stderr, filtered per logger by Linkerd-style level directives.

``get_logger("proxy.outbound")`` gives a logger that carries its name and its
threshold, computed from the directives (``proxy.telemetry.loglevel``) when
it is made and again whenever they change (``set_level``, from ``PUT
/proxy-log-level``). A call below the threshold returns after one attribute
read and one comparison, so debug calls on hot paths cost next to nothing
when debug is off.

The lines are those structlog wrote for this project (its ConsoleRenderer
without colours, or its JSONRenderer, after the logger name, level, ISO UTC
timestamp and formatted exception were added), rendered here instead:
structlog and what it imports (pickle, uuid, platform, datetime, json and
more) cost an idle proxy about 2 MiB of its resident memory.
tests/telemetry/test_logging.py checks the lines against structlog's.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from proxy.telemetry import loglevel

# Every line this process writes to stderr is written whole under this lock:
# the access log's writer thread takes it too, so lines never interleave.
OUTPUT_LOCK = threading.Lock()

_filter: list[loglevel.LogFilter] = [loglevel.parse("info")]  # one cell: the directives in force

EVENT_WIDTH = 30  # the event column's width in plain lines
LEVEL_WIDTH = 9  # the level column's: the longest level name structlog knew ("exception")
_QUOTED = frozenset(" \t=\r\n\"'")  # a plain value holding one of these is written as its repr
_DEBUG, _INFO, _WARN, _ERROR = (loglevel.LEVELS[n] for n in ("debug", "info", "warn", "error"))


def _timestamp() -> str:
    """Now as ISO 8601 in UTC, as ``datetime.now(timezone.utc).isoformat()`` spells it, with ``Z``."""
    ns = time.time_ns()
    seconds, micros = divmod(ns // 1000, 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{micros:06d}Z" if micros else f"{stamp}Z"


def _exc_info(value: Any) -> tuple | None:
    """An ``exc_info=`` argument as an exception triple, or None (nothing to format)."""
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value
    if value:
        current = sys.exc_info()
        return None if current == (None, None, None) else current
    return None


def _format_exception(info: tuple) -> str:
    import traceback

    text = "".join(traceback.format_exception(info[0], info[1], info[2]))
    return text[:-1] if text.endswith("\n") else text


def _plain_value(value: object) -> str:
    if isinstance(value, str):
        return repr(value) if _QUOTED.intersection(value) else value
    return repr(value)


def render_plain(entry: dict) -> str:
    """``timestamp [level    ] event (padded) [logger] key=value...`` (keys sorted), then any exception."""
    entry = dict(entry)
    stack = entry.pop("stack", None)
    exc = entry.pop("exception", None)
    columns = []
    if "timestamp" in entry:
        columns.append(str(entry.pop("timestamp")))
    if "level" in entry:
        columns.append(f"[{str(entry.pop('level')).ljust(LEVEL_WIDTH)}]")
    if "event" in entry:
        columns.append(str(entry.pop("event")).ljust(EVENT_WIDTH))
    for key in ("logger", "logger_name"):
        if key in entry:
            columns.append(f"[{entry.pop(key)}]")
    columns.extend(f"{key}={_plain_value(entry[key])}" for key in sorted(entry))
    line = " ".join(c for c in columns if c).rstrip(" ")
    if stack is not None:
        line += "\n" + str(stack)
        if exc is not None:
            line += "\n\n" + "=" * 79 + "\n"
    if exc is not None:
        line += "\n" + str(exc)
    return line


def _json_default(value: object) -> object:
    try:
        return value.__structlog__()  # type: ignore[attr-defined]
    except AttributeError:
        return repr(value)


def render_json(entry: dict) -> str:
    """One JSON object per line, keys in the order the entry has them (the call's, then ours)."""
    import json  # only when JSON lines were asked for

    return json.dumps(entry, default=_json_default)


_render: list[Callable[[dict], str]] = [render_plain]  # one cell: the format in force
_captures: list[list[dict]] = []  # capture() blocks in force, innermost last


def _method(name: str, level: int) -> Callable[..., None]:
    """A logging method that returns at once below the logger's threshold."""

    def method(self: Logger, event: str | None = None, *args: Any, **kw: Any) -> None:
        if level >= self.threshold:
            self._emit(name, event, args, kw)

    method.__name__ = name
    return method


class Logger:
    """A named logger with its precomputed threshold; each line is written whole to stderr."""

    __slots__ = ("name", "threshold", "__weakref__")

    def __init__(self, name: str) -> None:
        self.name = name
        self.threshold = _filter[0].level_for(name)

    def _emit(self, level: str, event: str | None, args: tuple, kw: dict[str, Any]) -> None:
        if args:
            event = event % args if event is not None else None
        entry = kw
        exc_info = entry.pop("exc_info", None)
        if event is not None:
            entry["event"] = event
        if _captures:
            entry["log_level"] = level
            _captures[-1].append(entry)
            return
        entry["logger"] = self.name
        entry["level"] = level
        entry["timestamp"] = _timestamp()
        info = _exc_info(exc_info)
        if info is not None:
            entry["exception"] = _format_exception(info)
        line = _render[0](entry)
        with OUTPUT_LOCK:  # one write per line (print() would make two)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    debug = _method("debug", _DEBUG)
    info = _method("info", _INFO)
    warning = _method("warning", _WARN)
    error = _method("error", _ERROR)
    critical = _method("critical", loglevel.CRITICAL)

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self.error(event, *args, **kw)

    msg = info
    warn = warning
    err = error
    fatal = critical


_loggers: weakref.WeakValueDictionary[str, Logger] = weakref.WeakValueDictionary()


def get_logger(name: str) -> Logger:
    """The logger called ``name`` (one per name, shared)."""
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = Logger(name)
    return logger


def configure(fmt: str = "plain", level: str = "info") -> None:
    set_level(level)
    _render[0] = render_json if fmt == "json" else render_plain


def set_level(level: str) -> None:
    """Put new directives in force for every logger, existing ones included; raises ValueError when invalid."""
    new = loglevel.parse(level)
    _filter[0] = new
    for logger in list(_loggers.values()):
        logger.threshold = new.level_for(logger.name)


def current_level() -> str:
    """The directives in force, normalized (``warn,proxy.outbound=debug``)."""
    return _filter[0].text


@contextmanager
def capture() -> Iterator[list[dict]]:
    """For tests: the lines logged (above their logger's threshold) inside the block, not written.

    Each is the call's fields plus ``event`` and ``log_level``, as structlog's ``capture_logs`` gave them."""
    lines: list[dict] = []
    _captures.append(lines)
    try:
        yield lines
    finally:
        _captures.remove(lines)
