"""Tests of proxy/errors.py: who caused what, and the status each maps to."""

import errno

from proxy import errors


def test_connect_errors_map_to_statuses():
    assert errors.connect_error(ConnectionRefusedError()).status == 502
    assert errors.connect_error(TimeoutError()).status == 504
    unreachable = errors.connect_error(OSError(errno.EHOSTUNREACH, "No route to host"))
    assert unreachable.status == 502 and "no route to host" in unreachable.reason
    already = errors.ResponseTimeout()
    assert errors.connect_error(already) is already


def test_client_errors_close_and_keep_their_reason():
    err = errors.ClientError("bare lf", status=400)
    assert err.closes and err.status == 400 and err.reason == "bare lf" and str(err) == "bare lf"
    assert errors.ClientError("too big", status=431).status == 431


def test_every_error_has_a_status_and_a_level():
    for cls in (errors.ClientError, errors.NoDestination, errors.LoopDetected, errors.ConnectRefused,
                errors.ConnectTimeout, errors.ResponseTimeout, errors.UpstreamReset, errors.BadResponse,
                errors.Draining):
        err = cls()
        assert 400 <= err.status <= 599
        assert err.level in ("info", "warning", "error")
        assert err.reason
