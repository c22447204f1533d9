"""structlog setup: plain or JSON lines on stderr, filtered per logger by Linkerd-style level directives.

Each ``structlog.get_logger("proxy.outbound")`` gets a wrapped logger that
carries its name and its threshold, computed from the directives
(``proxy.telemetry.loglevel``) when it is made and again whenever they
change (``set_level``, from ``PUT /proxy-log-level``). A call below the
threshold returns after one attribute read and one comparison, before
structlog builds an event dict, so debug calls on hot paths cost next to
nothing when debug is off.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from proxy.telemetry import loglevel

# Every line this process writes to stderr is written whole under this lock:
# the access log's writer thread takes it too, so lines never interleave.
OUTPUT_LOCK = threading.Lock()

_filter: list[loglevel.LogFilter] = [loglevel.parse("info")]  # one cell: the directives in force


class NamedLogger:
    """The logger under one structlog name: its precomputed threshold, and whole-line writes to stderr."""

    __slots__ = ("name", "threshold", "__weakref__")

    def __init__(self, name: str) -> None:
        self.name = name
        self.threshold = _filter[0].level_for(name)

    def msg(self, message: str) -> None:
        # One write per line (print() would make two), under the shared lock.
        with OUTPUT_LOCK:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


_loggers: weakref.WeakSet[NamedLogger] = weakref.WeakSet()


def _logger_factory(*args: Any) -> NamedLogger:
    logger = NamedLogger(args[0] if args and isinstance(args[0], str) else "")
    _loggers.add(logger)
    return logger


def _method(name: str, level: int) -> Callable[..., Any]:
    def method(self: structlog.BoundLoggerBase, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if level < self._logger.threshold:
            return None
        if args:
            event = event % args if event is not None else None
        return self._proxy_to_logger(name, event, **kw)

    method.__name__ = name
    return method


class FilteringLogger(structlog.BoundLoggerBase):
    """structlog's bound logger, dropping calls below the wrapped logger's threshold before any processing."""

    debug = _method("debug", loglevel.LEVELS["debug"])
    info = _method("info", loglevel.LEVELS["info"])
    msg = _method("info", loglevel.LEVELS["info"])
    warning = _method("warning", loglevel.LEVELS["warn"])
    warn = _method("warning", loglevel.LEVELS["warn"])
    error = _method("error", loglevel.LEVELS["error"])
    err = _method("error", loglevel.LEVELS["error"])
    critical = _method("critical", loglevel.CRITICAL)
    fatal = _method("critical", loglevel.CRITICAL)

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self.error(event, *args, **kw)


def _add_logger_name(logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    # The target, as Linkerd's lines name theirs: which directive a line answers to.
    event_dict["logger"] = getattr(logger, "name", "")
    return event_dict


def configure(fmt: str = "plain", level: str = "info") -> None:
    set_level(level)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            _add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=FilteringLogger,
        logger_factory=_logger_factory,
        cache_logger_on_first_use=True,
    )


def set_level(level: str) -> None:
    """Put new directives in force for every logger, existing ones included; raises ValueError when invalid."""
    new = loglevel.parse(level)
    _filter[0] = new
    for logger in list(_loggers):
        logger.threshold = new.level_for(logger.name)


def current_level() -> str:
    """The directives in force, normalized (``warn,proxy.outbound=debug``)."""
    return _filter[0].text
