"""TLS session resumption on the meshed hop: the client's bounded cache of
tickets from peer proxies, and what a resumed handshake must still prove.

A resumed TLS 1.3 handshake (a ticket from an earlier connection to the same
peer) skips signing and verifying certificates on both sides but keeps the
ephemeral key exchange, so each connection stays forward-secret. OpenSSL does
not verify anything about the peer again on resumption (not even the name a
client expects: a session is resumed whatever SNI it is offered under), so:

* a session is offered only where it was made: the cache key is (peer
  address, expected identity, ALPN), and a new certificate or new trust
  anchors come with a new ``MeshTls`` and an empty cache (the peer's new
  server context likewise comes with new ticket keys);
* after a resumed handshake, the certificate the session was established
  with (OpenSSL keeps it in the session) is checked again: the client's must
  name the expected identity and both must still be valid, or the
  connection fails like a full handshake that found the same.

One ticket is reused for many connections to the same peer until half its
lifetime has passed: reading a session out of OpenSSL costs a
serialization round trip (hundreds of microseconds with OpenSSL 3), more
than the resumption saves. Reuse only lets an observer link connections
that already share a peer address and SNI.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections import OrderedDict

# X509_V_ERR_* codes, as a full handshake that found the same would report them.
_CERT_HAS_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
# Distinct peer certificates whose names are remembered (decoding one costs ~15 us).
_FACTS_MEMO = 256


class SessionCache:
    """The session to offer per (peer address, expected identity, ALPN); least recently used past ``limit`` go."""

    __slots__ = ("limit", "_entries")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # key -> (session, expires at, renew after), unix times
        self._entries: OrderedDict[tuple, tuple[ssl.SSLSession, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple, now: float) -> tuple[ssl.SSLSession, float, float] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple, session: ssl.SSLSession, expires: float, now: float) -> None:
        self._entries[key] = (session, expires, now + (expires - now) / 2)
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def discard(self, key: tuple) -> None:
        self._entries.pop(key, None)


class ClientResumption:
    """One outbound connection's part: the session it offers, the check if the
    peer resumed it, and whether to keep the ticket the peer sends next."""

    __slots__ = ("cache", "key", "expected", "offered", "want")

    def __init__(self, cache: SessionCache, peer: tuple, expected: str, alpn: str) -> None:
        self.cache = cache
        self.key = (peer[0], peer[1], expected, alpn)
        self.expected = expected
        self.offered = cache.get(self.key, time.time())
        self.want = False  # keep the next ticket (set once the handshake is done)

    @property
    def session(self) -> ssl.SSLSession | None:
        return None if self.offered is None else self.offered[0]

    def handshaken(self, sslobj: ssl.SSLObject) -> ssl.SSLError | None:
        """Called once the handshake is done: None, or why the resumed session must not be used."""
        now = time.time()
        if sslobj.session_reused:
            err = check_peer(sslobj, self.expected, now)
            if err is not None:
                self.cache.discard(self.key)
                return err
            # The ticket in use goes on serving until half its life is gone.
            self.want = self.offered is None or self.offered[2] <= now
        else:
            self.want = True
        return None

    def keep(self, sslobj: ssl.SSLObject) -> bool:
        """Cache the session once the peer's ticket arrived (True): it comes after the handshake.
        Never raises (it runs inside the transport's data callback): a connection already shut is given up."""
        try:
            session = sslobj.session
            if session is None or not session.has_ticket or (self.offered is not None and session == self.offered[0]):
                return False
            facts = _facts(sslobj.getpeercert(True) or b"")
        except (ValueError, ssl.SSLError):
            return True
        lifetime = min(session.timeout, session.ticket_lifetime_hint or session.timeout)
        self.cache.put(self.key, session, min(session.time + lifetime, facts[1]), time.time())
        return True


class ServerResumption:
    """The inbound side: a resumed client's certificate (from the ticket) must still be valid."""

    __slots__ = ()
    session = None
    want = False

    def handshaken(self, sslobj: ssl.SSLObject) -> ssl.SSLError | None:
        if not sslobj.session_reused:
            return None
        return check_peer(sslobj, None, time.time())

    def keep(self, sslobj: ssl.SSLObject) -> bool:
        return True


SERVER = ServerResumption()


def check_peer(sslobj: ssl.SSLObject, expected: str | None, now: float) -> ssl.SSLError | None:
    """What the full handshake verified that still may not hold on resumption: the
    certificate's validity and (client side, ``expected``) the identity it names."""
    der = sslobj.getpeercert(True)
    if der is None:
        if expected is None:
            return None  # a client without a certificate: authorization policy judges it
        return _verify_error(_HOSTNAME_MISMATCH, "resumed session has no peer certificate")
    names, not_after = _facts(der)
    if not_after <= now:
        return _verify_error(_CERT_HAS_EXPIRED, "certificate has expired")
    if expected is not None and expected.lower() not in names:
        return _verify_error(_HOSTNAME_MISMATCH, f"Hostname mismatch, certificate is not valid for '{expected}'.")
    return None


@functools.lru_cache(maxsize=_FACTS_MEMO)
def _facts(der: bytes) -> tuple[frozenset[str], float]:
    """A certificate's DNS names (lowercase) and expiry (unix time); decoding is a pure function of its bytes."""
    if not der:
        return frozenset(), 0.0
    # Here, not at the top: transport/tls.py (and so this module) is loaded by every proxy, and
    # cryptography costs one without an identity about 10 MiB; with one, the identity loaded it already.
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = frozenset(n.lower() for n in sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = frozenset()
    return names, cert.not_valid_after_utc.timestamp()


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    err.verify_code = code
    err.verify_message = message
    return err
