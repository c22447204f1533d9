"""proxy/telemetry/logging.py: per-logger thresholds, changed at runtime; lines as structlog rendered them."""

from __future__ import annotations

import json
import re

import pytest

from proxy.telemetry import logging as plog


@pytest.fixture
def configured():
    before = plog.current_level()
    plog.configure("json", "warn,proxy.outbound=debug")
    yield
    plog.configure("plain", before)


def _events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_each_logger_follows_its_target(configured, capsys):
    outbound = plog.get_logger("proxy.outbound")
    balance = plog.get_logger("proxy.outbound.balance")
    admin = plog.get_logger("proxy.admin")
    outbound.debug("o-debug")
    balance.debug("b-debug")
    admin.info("a-info")
    admin.warning("a-warning")
    events = _events(capsys)
    assert [(e["logger"], e["event"], e["level"]) for e in events] == [
        ("proxy.outbound", "o-debug", "debug"),
        ("proxy.outbound.balance", "b-debug", "debug"),
        ("proxy.admin", "a-warning", "warning"),
    ]


def test_a_change_reaches_loggers_already_made(configured, capsys):
    admin = plog.get_logger("proxy.admin")
    admin.info("before")
    plog.set_level("error,proxy.admin=info")
    assert plog.current_level() == "error,proxy.admin=info"
    admin.info("after")
    plog.get_logger("proxy.outbound").warning("silenced")
    assert [e["event"] for e in _events(capsys)] == ["after"]


def test_off_silences_everything(configured, capsys):
    plog.set_level("off")
    plog.get_logger("proxy.admin").error("nothing")
    plog.get_logger("proxy.outbound").critical("nothing either")
    assert _events(capsys) == []


def test_invalid_change_keeps_the_directives_in_force(configured):
    with pytest.raises(ValueError, match="loud"):
        plog.set_level("info,proxy.admin=loud")
    assert plog.current_level() == "warn,proxy.outbound=debug"


def _structlog_lines(fmt: str, calls) -> list[str]:
    """What structlog's chain (as this project configured it until it rendered lines itself) wrote."""
    import structlog
    out: list[str] = []

    def add_logger_name(logger, _name, event_dict):
        event_dict["logger"] = "proxy.x"
        return event_dict

    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    chain = [add_logger_name, structlog.processors.add_log_level, structlog.processors.format_exc_info, renderer]
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=chain, wrapper_class=structlog.BoundLoggerBase)
    names = {"warn": "warning", "exception": "error"}
    for method, args, kw in calls:
        kw = dict(kw)
        if method == "exception":
            kw.setdefault("exc_info", True)
        event, *rest = args or (None,)
        if rest:  # the old bound logger's %-formatting, before structlog saw the event
            event = event % tuple(rest)
        try:
            raise ValueError("inner")
        except ValueError:
            out.append(log._proxy_to_logger(names.get(method, method), event, **kw))
    return out


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(line for line in text.split("\n") if line)

    def flush(self) -> None:
        pass


CALLS = [
    ("info", ("meshproxy ready",), {"identity": None, "version": "0.1", "compiled": True, "admin": "127.0.0.1:1",
                                    "n": 3, "f": 1.5, "b": b"x", "l": [1, "a"], "s": "a b", "e": "", "q": "x='y'"}),
    ("warning", ("short",), {}),
    ("debug", ("with %s args", "fmt"), {}),
    ("exception", ("boom",), {"x": 1}),
    ("error", ("an error passed in",), {"exc_info": KeyError("k")}),
    ("info", ("an event name longer than the thirty characters of its column",), {"k": "v"}),
    ("info", (), {"k": 1}),
    ("warn", ("warn is warning",), {"z": 1, "a": 2}),
]


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_lines_match_structlog(fmt, monkeypatch):
    """Same lines as structlog's processors and renderers made, the timestamp aside (each stamps its own now)."""
    expected = _structlog_lines(fmt, CALLS)
    plog.configure(fmt, "debug")
    out = _Lines()
    monkeypatch.setattr(plog.sys, "stderr", out)
    monkeypatch.setattr(plog, "_timestamp", lambda: "T")
    log = plog.get_logger("proxy.x")
    try:
        for method, args, kw in CALLS:
            try:
                raise ValueError("inner")
            except ValueError:
                getattr(log, method)(*args, **kw)
    finally:
        plog.configure("plain", "info")
    got = "\n".join(out.lines)
    if fmt == "json":
        got = got.replace(', "timestamp": "T"', "")
    else:
        got = got.replace("T [", "[")
    # The tracebacks differ only in where each raised (its line and function).
    where = re.compile(r"line [0-9]+, in [a-z_]+")
    assert where.sub("", got).split("\n") == where.sub("", "\n".join(expected)).split("\n")


def test_timestamp_is_iso_utc():
    stamp = plog._timestamp()
    assert len(stamp) in (20, 27) and stamp.endswith("Z") and stamp[10] == "T", stamp


def test_capture_collects_instead_of_writing(capsys):
    log = plog.get_logger("proxy.captured")
    with plog.capture() as lines:
        log.error("bad thing", file="/x")
        log.debug("below the threshold")
    assert lines == [{"file": "/x", "event": "bad thing", "log_level": "error"}]
    assert capsys.readouterr().err == ""
