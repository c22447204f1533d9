"""Per-logger filtering in proxy/telemetry/logging.py: thresholds precomputed per name, changed at runtime."""

from __future__ import annotations

import json

import pytest
import structlog

from proxy.telemetry import logging as plog


@pytest.fixture
def configured():
    before = plog.current_level()
    plog.configure("json", "warn,proxy.outbound=debug")
    yield
    # Leave structlog as the rest of the suite expects it (its defaults, level info).
    plog.set_level(before)
    structlog.reset_defaults()


def _events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_each_logger_follows_its_target(configured, capsys):
    outbound = structlog.get_logger("proxy.outbound")
    balance = structlog.get_logger("proxy.outbound.balance")
    admin = structlog.get_logger("proxy.admin")
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
    admin = structlog.get_logger("proxy.admin")
    admin.info("before")
    plog.set_level("error,proxy.admin=info")
    assert plog.current_level() == "error,proxy.admin=info"
    admin.info("after")
    structlog.get_logger("proxy.outbound").warning("silenced")
    assert [e["event"] for e in _events(capsys)] == ["after"]


def test_off_silences_everything(configured, capsys):
    plog.set_level("off")
    structlog.get_logger("proxy.admin").error("nothing")
    structlog.get_logger("proxy.outbound").critical("nothing either")
    assert _events(capsys) == []


def test_invalid_change_keeps_the_directives_in_force(configured):
    with pytest.raises(ValueError, match="loud"):
        plog.set_level("info,proxy.admin=loud")
    assert plog.current_level() == "warn,proxy.outbound=debug"
