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


def test_policy_refusals_answer_grpc_calls_trailers_only():
    from proxy.http.render import h2_error

    grpc_request = [(b":method", b"POST"), (b"content-type", b"application/grpc+proto")]
    fields, body = h2_error(errors.RateLimited("total rate limit exceeded: 5rps"), grpc_request)
    assert body == b""
    assert fields == [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"8"),
                      (b"grpc-message", b"total rate limit exceeded: 5rps"),
                      (b"l5d-proxy-error", b"total rate limit exceeded: 5rps")]
    fields, _ = h2_error(errors.EgressDenied("tra\u00efc 100%"), grpc_request)
    assert (b"grpc-status", b"7") in fields and (b"grpc-message", b"tra%C3%AFc 100%25") in fields
    # Plain HTTP/2: the HTTP status and a one-line body.
    fields, body = h2_error(errors.RateLimited(), [(b"content-type", b"text/plain")])
    assert fields[0] == (b":status", b"429") and body == b"too many requests\n"
    fields, body = h2_error(errors.LoadShed(), [(b":method", b"GET")])
    assert fields[0] == (b":status", b"503") and body


# Linkerd's codes for the errors it synthesizes (linkerd2-proxy's SyntheticHttpResponse constructors).
GRPC_CODES = {
    errors.ConnectRefused: 14, errors.ConnectFailed: 14, errors.UpstreamReset: 14, errors.BadResponse: 14,
    errors.PeerTlsFailed: 14, errors.LoadShed: 14, errors.NoEndpoints: 14, errors.Draining: 14,
    errors.IdentityError: 14,
    errors.ConnectTimeout: 4, errors.ResponseTimeout: 4, errors.RouteTimeout: 4,
    errors.Unauthorized: 7, errors.EgressDenied: 7, errors.OwnAddress: 7,
    errors.RateLimited: 8, errors.NoDestination: 5, errors.LoopDetected: 10, errors.ClientError: 13,
}


def test_every_error_answers_a_grpc_call_with_linkerds_code():
    from proxy.http.render import h2_error

    grpc_request = [(b"content-type", b"application/grpc")]
    for cls, code in GRPC_CODES.items():
        err = cls()
        fields, body = h2_error(err, grpc_request)
        assert body == b"" and fields[:2] == [(b":status", b"200"), (b"content-type", b"application/grpc")]
        assert (b"grpc-status", str(code).encode()) in fields, cls
        assert (b"l5d-proxy-error", err.reason.encode()) in fields
    redirect = errors.RouteRedirect("http://elsewhere/", 301)
    fields, _ = h2_error(redirect, grpc_request)
    assert (b"grpc-status", b"5") in fields and not any(name == b"l5d-proxy-error" for name, _ in fields)
