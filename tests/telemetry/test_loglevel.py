"""Log-level directives (proxy/telemetry/loglevel.py): Linkerd's spellings, targets, longest prefix, errors."""

from __future__ import annotations

import pytest

from proxy.telemetry.loglevel import LEVELS, parse

DEBUG, INFO, WARN, ERROR, OFF, TRACE = (LEVELS[n] for n in ("debug", "info", "warn", "error", "off", "trace"))


@pytest.mark.parametrize(("text", "level"), [
    ("trace", TRACE), ("debug", DEBUG), ("info", INFO), ("warn", WARN), ("warning", WARN),
    ("error", ERROR), ("off", OFF), ("WARN", WARN), ("Info", INFO), ("  debug  ", DEBUG),
])
def test_bare_level_is_the_default(text, level):
    flt = parse(text)
    assert flt.default == level
    assert flt.level_for("proxy.outbound") == level
    assert flt.text == text.strip().lower()


def test_target_applies_to_its_dotted_prefix_only():
    flt = parse("warn,proxy.outbound=debug")
    assert flt.level_for("proxy.outbound") == DEBUG
    assert flt.level_for("proxy.outbound.balance") == DEBUG
    assert flt.level_for("proxy.outboundx") == WARN  # a prefix of the name, not of a dotted component
    assert flt.level_for("proxy.inbound") == WARN
    assert flt.level_for("proxy") == WARN
    assert flt.text == "warn,proxy.outbound=debug"


def test_longest_matching_target_wins_whatever_the_order():
    for text in ("proxy=error,proxy.outbound=info,proxy.outbound.balance=debug",
                 "proxy.outbound.balance=debug,proxy.outbound=info,proxy=error"):
        flt = parse(text)
        assert flt.level_for("proxy.outbound.balance") == DEBUG
        assert flt.level_for("proxy.outbound") == INFO
        assert flt.level_for("proxy.admin") == ERROR
        assert flt.level_for("other") == INFO  # no bare level: info, the proxy's default


def test_normalized_spelling_keeps_targets_lowercases_levels():
    assert parse(" WARN , proxy.http = DEBUG ,").text == "warn,proxy.http=debug"
    assert parse("proxy.admin=Off").level_for("proxy.admin") == OFF


def test_last_bare_level_wins():
    assert parse("debug,error").default == ERROR


@pytest.mark.parametrize(("text", "named"), [
    ("loud", "'loud'"),
    ("warn,proxy.outbound=loud", "'loud'"),
    ("=debug", "''"),
    ("proxy outbound=debug", "'proxy outbound'"),
    ("proxy.=debug", "'proxy.'"),
    ("", "empty"),
    (" , ", "no directive"),
    ("critical", "'critical'"),  # not one of Linkerd's levels
])
def test_invalid_directives_name_what_is_wrong(text, named):
    with pytest.raises(ValueError) as info:
        parse(text)
    assert named in str(info.value), str(info.value)
