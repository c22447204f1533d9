"""The session cache and the checks on a resumed handshake (proxy/transport/sessions.py),
with real OpenSSL handshakes between in-memory TLS objects built by proxy/transport/tls.py."""

from __future__ import annotations

import datetime as dt
import ssl
import time

import pytest
from cryptography import x509

from proxy import config
from proxy.identity import ca
from proxy.transport import sessions, tls

TD = "cluster.local"
API = f"api.default.serviceaccount.identity.{TD}"
WEB = f"web.default.serviceaccount.identity.{TD}"
OTHER = f"other.default.serviceaccount.identity.{TD}"


@pytest.fixture(scope="module")
def authority():
    root = ca.create_root(TD, dt.timedelta(days=10))
    return root, ca.create_issuer(root, TD, dt.timedelta(days=5))


def _mesh(authority, name: str, lifetime=dt.timedelta(hours=1), cache: int = 8) -> tls.MeshTls:
    root, issuer = authority
    key = ca.new_key()
    leaf = ca.sign_leaf(issuer, key.public_key(), name, [x509.DNSName(name)], lifetime)
    return tls.build(name, ca.cert_pem(leaf) + ca.cert_pem(issuer.cert), ca.key_pem(key), ca.cert_pem(root.cert),
                     cache)


def _handshake(client: tls.MeshTls, server: tls.MeshTls, expected: str, resume=None):
    """A full exchange between two in-memory TLS objects, as far as the client reading the
    server's ticket: (client, server, the client check's error or None, the server check's)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.client_transport.wrap_bio(c_in, c_out, server_hostname=expected,
                                         session=None if resume is None else resume.session)
    s = server.server.wrap_bio(s_in, s_out, server_side=True)
    done = {c: False, s: False}
    for _ in range(6):
        for obj in (c, s):
            try:
                if done[obj]:
                    obj.read(1)
                else:
                    obj.do_handshake()
                    done[obj] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert all(done.values())
    client_err = resume.handshaken(c) if resume is not None else None
    return c, s, client_err, sessions.SERVER.handshaken(s)


def test_a_later_connection_resumes_and_both_ends_still_know_the_peer(authority):
    web, api = _mesh(authority, WEB), _mesh(authority, API)
    first = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), API, tls.TRANSPORT_ALPN)
    c, _, err, _ = _handshake(web, api, API, first)
    assert not c.session_reused and err is None and first.want
    assert first.keep(c) and len(web.sessions) == 1
    again = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), API, tls.TRANSPORT_ALPN)
    assert again.session is not None
    c, s, err, server_err = _handshake(web, api, API, again)
    assert c.session_reused and s.session_reused and err is None and server_err is None
    assert tls.peer_identity(c) == API and tls.peer_identity(s) == WEB
    # The ticket in use is young: no new one is read out of OpenSSL for this connection.
    assert not again.want


def test_a_session_offered_under_another_identity_is_refused_although_openssl_resumes_it(authority):
    web, api = _mesh(authority, WEB), _mesh(authority, API)
    first = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), API, tls.TRANSPORT_ALPN)
    c, _, _, _ = _handshake(web, api, API, first)
    assert first.keep(c)
    # A cache gone wrong: the session made with "api" filed under "other".
    session, expires, _ = web.sessions.get(first.key, time.time())
    wrong_key = ("10.0.0.1", 4143, OTHER, tls.TRANSPORT_ALPN)
    web.sessions.put(wrong_key, session, expires, time.time())
    wrong = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), OTHER, tls.TRANSPORT_ALPN)
    c, _, err, _ = _handshake(web, api, OTHER, wrong)
    assert c.session_reused  # OpenSSL checks nothing about the name on resumption ...
    assert isinstance(err, ssl.SSLCertVerificationError)  # ... this module does
    assert err.verify_message == f"Hostname mismatch, certificate is not valid for '{OTHER}'."
    assert web.sessions.get(wrong_key, time.time()) is None


def test_a_full_handshake_under_the_wrong_name_fails_as_before(authority):
    web, api = _mesh(authority, WEB), _mesh(authority, API)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(web, api, OTHER, sessions.ClientResumption(web.sessions, ("10.0.0.1", 1), OTHER, "h2"))


def test_expired_certificates_are_refused_on_resumption_by_both_ends(authority):
    web = _mesh(authority, WEB, lifetime=dt.timedelta(seconds=2))
    api = _mesh(authority, API, lifetime=dt.timedelta(seconds=2))
    first = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), API, tls.TRANSPORT_ALPN)
    c, _, _, _ = _handshake(web, api, API, first)
    assert first.keep(c)
    session = c.session
    # The cache never offers a session past its certificate's end ...
    assert web.sessions.get(first.key, time.time() + 3) is None
    # ... and a resumed handshake that still presents one fails on both ends.
    time.sleep(2.2)  # validity has whole seconds: the last one still counts
    stale = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), API, tls.TRANSPORT_ALPN)
    stale.offered = (session, time.time() + 60, time.time() + 30)
    c, s, err, server_err = _handshake(web, api, API, stale)
    assert c.session_reused and s.session_reused
    assert err is not None and err.verify_message == "certificate has expired"
    assert server_err is not None and server_err.verify_message == "certificate has expired"


def test_the_cache_is_bounded_and_least_recently_used_go_first(authority):
    web, api = _mesh(authority, WEB, cache=2), _mesh(authority, API)
    first = sessions.ClientResumption(web.sessions, ("10.0.0.1", 1), API, tls.TRANSPORT_ALPN)
    c, _, _, _ = _handshake(web, api, API, first)
    assert first.keep(c)
    session = c.session
    now = time.time()
    cache = web.sessions
    for port in (1, 2):
        cache.put(("10.0.0.1", port, API, "h2"), session, now + 60, now)
    assert cache.get(("10.0.0.1", 1, API, "h2"), now) is not None  # now the most recently used
    cache.put(("10.0.0.1", 3, API, "h2"), session, now + 60, now)
    assert len(cache) == 2
    assert cache.get(("10.0.0.1", 2, API, "h2"), now) is None
    assert cache.get(("10.0.0.1", 1, API, "h2"), now) is not None
    # Half the lifetime gone: the next connection's ticket replaces this one.
    entry = cache.get(("10.0.0.1", 3, API, "h2"), now)
    assert entry is not None and entry[2] == pytest.approx(now + 30)
    assert cache.get(("10.0.0.1", 3, API, "h2"), now + 60) is None


def test_a_new_certificate_comes_with_new_ticket_keys_and_an_empty_cache(authority):
    web, api = _mesh(authority, WEB), _mesh(authority, API)
    first = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), API, tls.TRANSPORT_ALPN)
    c, _, _, _ = _handshake(web, api, API, first)
    assert first.keep(c)
    renewed_api = _mesh(authority, API)
    resumed = sessions.ClientResumption(web.sessions, ("10.0.0.1", 4143), API, tls.TRANSPORT_ALPN)
    c, _, err, _ = _handshake(web, renewed_api, API, resumed)
    assert not c.session_reused and err is None  # the old ticket cannot be opened: a full handshake
    assert len(_mesh(authority, WEB).sessions) == 0


def test_resumption_off_issues_no_ticket(authority):
    web, api = _mesh(authority, WEB, cache=0), _mesh(authority, API, cache=0)
    assert web.sessions is None and api.server.num_tickets == 0
    c, _, _, _ = _handshake(web, api, API)
    assert not c.session.has_ticket


@pytest.mark.parametrize("text", ["-1", "x", "1.5"])
def test_the_cache_setting_rejects_what_is_not_a_count(text):
    with pytest.raises(config.ConfigError, match=config.TLS_SESSION_CACHE):
        config.load({config.TLS_SESSION_CACHE: text})


def test_keeping_a_ticket_never_raises_into_the_transport(authority):
    class Shut:
        """An SSL object whose session can no longer be read (the connection is gone)."""

        @property
        def session(self):
            raise ssl.SSLError("connection is shut")

    web = _mesh(authority, WEB)
    resume = sessions.ClientResumption(web.sessions, ("10.0.0.1", 1), API, tls.H2_ALPN)
    assert resume.keep(Shut()) is True  # given up: no more tries on this connection
    assert len(web.sessions) == 0
