"""Checks of the running proxy through its own ports: the admin server's
/ready, the certificate it holds (from /metrics), and the certificate its
inbound listener presents over TLS."""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import ssl
import time
from typing import cast

from proxy.check.results import Result, fail, ok, skip
from proxy.config import Config, HostPort
from proxy.telemetry.scrape import parse_prometheus

CERT_EXPIRY_METRIC = "identity_cert_expiration_timestamp_seconds"
SOON = 3600.0  # a certificate with less than this left is reported as failing (renewal is stuck)


def reachable(address: HostPort) -> HostPort:
    """Where to connect for a listen address: a wildcard means this host."""
    if address.host in ("0.0.0.0", ""):
        return HostPort("127.0.0.1", address.port)
    if address.host == "::":
        return HostPort("::1", address.port)
    return address


def admin_get(admin: HostPort, path: str, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(admin.host, admin.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def admin_ready(admin: HostPort, timeout: float) -> Result:
    check, title = "admin-ready", "admin /ready"
    try:
        status, body = admin_get(admin, "/ready", timeout)
    except (OSError, http.client.HTTPException) as err:
        return fail(check, title, f"no answer from http://{admin}/ready: {err}",
                    "is the proxy running? give its admin address with --admin ADDR")
    if status != 200:
        return fail(check, title,
                    f"http://{admin}/ready answered {status} {body[:80].decode('utf-8', 'replace').strip()}",
                    "the proxy is starting (waiting for its certificate?) or draining; see its log")
    return ok(check, title, f"http://{admin}/ready answered 200")


def left(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.0f}m"


def _expiry_result(check: str, title: str, subject: str, not_after: float, now: float) -> Result:
    when = dt.datetime.fromtimestamp(not_after, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not_after <= now:
        return fail(check, title, f"{subject} expired at {when}",
                    "the proxy could not renew it: check the issuer line and the proxy's log")
    if not_after - now < SOON:
        return fail(check, title, f"{subject} expires in {left(not_after - now)} ({when})",
                    "renewal should have happened by now: check the issuer line and the proxy's log")
    return ok(check, title, f"{subject} valid, expires in {left(not_after - now)} ({when})")


def certificate(cfg: Config, admin: HostPort, timeout: float) -> Result:
    check, title = "certificate", "certificate"
    name = cfg.identity.name
    if name is None:
        return skip(check, title, "no identity configured (MESHPROXY_IDENTITY_NAME unset): connections are plaintext")
    try:
        status, body = admin_get(admin, "/metrics", timeout)
    except (OSError, http.client.HTTPException) as err:
        return fail(check, title, f"cannot read http://{admin}/metrics: {err}", "is the proxy running?")
    values = [v for n, _, v in parse_prometheus(body.decode("utf-8", "replace")) if n == CERT_EXPIRY_METRIC]
    if status != 200 or not values:
        return fail(check, title, f"the proxy reports no {CERT_EXPIRY_METRIC}: it holds no certificate for {name}",
                    "see the proxy's log for identity errors, and the issuer line below")
    return _expiry_result(check, title, f"certificate of {name}", min(values), time.time())


def inbound_tls(cfg: Config, timeout: float) -> Result:
    """A TLS handshake with the inbound listener, as a meshed peer would start
    one (SNI = the proxy's identity), verified against the trust anchors."""
    check, title = "inbound-tls", "inbound TLS"
    name, anchors = cfg.identity.name, cfg.identity.trust_anchors
    if name is None or anchors is None:
        return skip(check, title, "no identity configured")
    target = reachable(cfg.inbound_listen)
    try:
        ctx = ssl.create_default_context(cafile=anchors)
    except (OSError, ssl.SSLError) as err:
        return fail(check, title, f"cannot read the trust anchors {anchors}: {err}",
                    f"{'MESHPROXY_IDENTITY_TRUST_ANCHORS'} must name a readable PEM file")
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as tls:
                cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as err:
        return fail(check, title, f"{target} presented a certificate that does not verify: {err.verify_message}",
                    "the proxy's certificate is not from these trust anchors, or not for its identity")
    except (OSError, ssl.SSLError) as err:
        return fail(check, title, f"no TLS handshake with {target}: {err}",
                    "the inbound listener does not terminate mesh TLS for its identity; see the proxy's log")
    not_after = ssl.cert_time_to_seconds(cast(str, cert["notAfter"])) if "notAfter" in cert else 0.0
    return _expiry_result(check, title, f"{target} presents {name},", not_after, time.time())
