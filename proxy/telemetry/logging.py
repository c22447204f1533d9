"""structlog setup: plain or JSON lines on stderr, with a level that can change at runtime."""

from __future__ import annotations

import sys
from typing import TypedDict

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _State(TypedDict):
    level: int
    name: str


_state: _State = {"level": LEVELS["info"], "name": "info"}


def _filter(_logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # A processor rather than a filtering wrapper class, so that a level change
    # reaches loggers that were already created and cached.
    if LEVELS.get(method_name, 20) < _state["level"]:
        raise structlog.DropEvent
    return event_dict


def configure(fmt: str = "plain", level: str = "info") -> None:
    set_level(level)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            _filter,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def set_level(level: str) -> None:
    level = level.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    _state["level"] = LEVELS[level]
    _state["name"] = level


def current_level() -> str:
    return _state["name"]
