"""Mesh TLS between proxies as a protocol over the TCP transport, with half-close (compiled).

The event loop's own TLS transports cannot half-close: a client that
finishes sending (``shutdown(SHUT_WR)``) and waits for the server's answer,
relayed as opaque bytes across a mutually authenticated hop, would see the
whole connection torn down. TLS 1.3 can: ``close_notify`` ends one direction
only (RFC 8446 6.1). ``TlsLayer`` runs ``ssl.SSLObject`` over memory BIOs on
a plain TCP transport and gives the protocol above it a ``TlsTransport``
whose ``write_eof`` sends ``close_notify`` and keeps reading, and which
reports the peer's ``close_notify`` as ``eof_received`` without closing.

Reads are decrypted straight into the buffer of a protocol that offers one
(``get_buffer``/``buffer_updated``, as the HTTP/2 relays do), so a busy
meshed connection allocates nothing per read.

Per record, it calls the C object under ``ssl.SSLObject`` (whose ``read`` and
``write`` are Python wrappers: a frame each, 3 per request and proxy), and
stops decrypting when no ciphertext is left instead of letting OpenSSL
raise ``SSLWantReadError`` (an exception built, formatted and caught per
read). Together about 9,000 instructions per request and proxy (callgrind).
"""

import ssl

_READ_SIZE = 256 * 1024
_WANT_READ = ssl.SSLWantReadError
_ZERO_RETURN = ssl.SSLZeroReturnError
# Reads after the handshake that may carry the peer's session ticket; a peer
# that issues none (resumption off there) is not asked about forever.
_TICKET_TRIES = 4


class TlsLayer:
    """The protocol on the TCP transport: handshake, decryption, and what the transport above asks for."""

    def __init__(self, loop, context, server_side, server_hostname, app, handshake_timeout, on_handshake,
                 resume=None):
        self.loop = loop
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        # ``resume`` (proxy/transport/sessions.py): the session to offer, and what a resumed one must prove.
        self.resume = resume
        self.ticket_tries = 0
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                       server_hostname=server_hostname,
                                       session=None if resume is None else resume.session)
        # CPython's SSLObject keeps its C object as ``_sslobj``; without one (another Python), the wrapper.
        self.cssl = getattr(self.sslobj, "_sslobj", self.sslobj)
        self.app = app
        self.raw = None
        self.transport = None  # the TlsTransport, once the handshake is done
        self.on_handshake = on_handshake  # called once: None, or the handshake's error
        self.timeout = handshake_timeout
        self.timer = None
        self.handshaking = True
        self.eof_in = False  # the peer's close_notify (or FIN) arrived
        self.eof_out = False  # our close_notify went out
        self.lost = False
        self.buffered = hasattr(app, "get_buffer")
        self.paused = False  # the app asked not to read (backpressure)

    # -- the TCP transport's protocol ----------------------------------------------
    def connection_made(self, transport):
        self.raw = transport
        if self.timeout > 0:
            self.timer = self.loop.call_later(self.timeout, self._handshake_timed_out)
        self._handshake()

    def data_received(self, data):
        self.incoming.write(data)
        if self.handshaking:
            self._handshake()
        else:
            self._read()
            if self.ticket_tries > 0:
                self._keep_ticket()

    def eof_received(self):
        if self.handshaking:
            self._fail(ConnectionResetError("connection closed during the TLS handshake"))
            return False
        self._read()  # what is still buffered, close_notify included
        if not self.eof_in and not self.lost:
            self._peer_done()  # FIN without close_notify: the peer sends nothing more either way
        raw = self.raw
        return raw is not None and not raw.is_closing()  # our direction may go on

    def connection_lost(self, exc):
        self.lost = True
        self._cancel_timer()
        if self.handshaking:
            self._fail(exc or ConnectionResetError("connection lost during the TLS handshake"))
            return
        app = self.app
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self):
        if self.transport is not None:
            self.app.pause_writing()

    def resume_writing(self):
        if self.transport is not None:
            self.app.resume_writing()

    # -- handshake --------------------------------------------------------------------
    def _handshake(self):
        try:
            self.cssl.do_handshake()
        except _WANT_READ:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as err:
            self._flush()  # the alert, so the peer learns why
            self._fail(err)
            return
        self._flush()
        resume = self.resume
        if resume is not None:
            refused = resume.handshaken(self.sslobj)
            if refused is not None:
                self._fail(refused)
                return
            if resume.want:
                self.ticket_tries = _TICKET_TRIES
        self.handshaking = False
        self._cancel_timer()
        self.transport = TlsTransport(self)
        callback, self.on_handshake = self.on_handshake, None
        self.app.connection_made(self.transport)
        if callback is not None:
            callback(None)
        if not self.lost:
            self._read()  # application data that came with the handshake's last flight

    def _handshake_timed_out(self):
        self.timer = None
        if self.handshaking:
            self._fail(TimeoutError("TLS handshake timed out"))

    def _fail(self, err):
        self._cancel_timer()
        self.handshaking = False
        self.app = None  # it never saw the connection
        callback, self.on_handshake = self.on_handshake, None
        if self.raw is not None and not self.raw.is_closing():
            self.raw.abort()
        if callback is not None:
            callback(err)

    def _keep_ticket(self):
        self.ticket_tries -= 1
        if self.lost or self.resume.keep(self.sslobj):
            self.ticket_tries = 0

    def _cancel_timer(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- reading ------------------------------------------------------------------------
    def _read(self):
        """Decrypt and deliver what the incoming buffer holds, while the app reads."""
        sslobj = self.cssl
        incoming = self.incoming
        n = 0
        while not self.lost and self.app is not None and not self.paused:
            app = self.app
            if incoming.pending == 0 and sslobj.pending() == 0:
                # Nothing left to decrypt: SSL_read would only say "want read", as an exception.
                if self.outgoing.pending:
                    self._flush()  # a KeyUpdate or session message may want an answer
                return
            try:
                if self.buffered:
                    buf = app.get_buffer(_READ_SIZE)
                    n = sslobj.read(len(buf), buf)
                    if n == 0:
                        break  # close_notify
                    app.buffer_updated(n)
                else:
                    # No more plaintext can come out than the ciphertext in hand: a read sized to it,
                    # not to _READ_SIZE, keeps the bytes object off mmap (mmap, mremap and munmap per
                    # read: three system calls on every short request over TLS).
                    data = sslobj.read(min(_READ_SIZE, incoming.pending + sslobj.pending()))
                    if not data:
                        break  # close_notify
                    app.data_received(data)
                continue
            except _WANT_READ:
                self._flush()  # a KeyUpdate or session message may want an answer
                return
            except _ZERO_RETURN:
                break
            except ssl.SSLError as err:
                self._flush()
                if self.raw is not None:
                    self.raw.abort()
                if not self.lost:
                    self.lost = True
                    if self.app is not None:
                        self.app.connection_lost(err)
                return
        else:
            return  # paused, lost or detached: the rest waits in the incoming buffer
        self._peer_done()

    def _peer_done(self):
        """The peer's direction ended (close_notify, or a FIN): the app hears EOF; ours may go on."""
        if self.eof_in:
            return
        self.eof_in = True
        self._flush()
        keep = self.app.eof_received()
        if (self.eof_out or not keep) and self.raw is not None:
            # Both directions ended, or the app does not do half-open connections.
            self.raw.close()

    # -- writing --------------------------------------------------------------------------
    def _flush(self):
        if not self.outgoing.pending:
            return
        out = self.outgoing.read()
        if self.raw is not None and not self.raw.is_closing():
            self.raw.write(out)

    def write(self, data):
        if self.eof_out or self.lost:
            return
        self.cssl.write(data)
        self._flush()

    def write_eof(self):
        if self.eof_out or self.lost:
            return
        self.eof_out = True
        try:
            self.sslobj.unwrap()  # sends close_notify; TLS 1.3 keeps the other direction open
        except (_WANT_READ, ssl.SSLError):
            pass
        self._flush()
        if self.eof_in and self.raw is not None:
            self.raw.close()

    def switch(self, app):
        self.app = app
        self.buffered = hasattr(app, "get_buffer")


class TlsTransport:
    """What the protocol above sees: an asyncio transport over TLS that can half-close."""

    def __init__(self, layer):
        self.layer = layer
        self.closing = False

    def write(self, data):
        self.layer.write(data)

    def writelines(self, chunks):
        self.layer.write(b"".join(chunks))

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.layer.write_eof()

    def close(self):
        if self.closing:
            return
        self.closing = True
        layer = self.layer
        if not layer.eof_out and not layer.lost:
            layer.eof_out = True
            try:
                layer.sslobj.unwrap()
            except (_WANT_READ, ssl.SSLError):
                pass
            layer._flush()
        raw = layer.raw
        if raw is not None:
            raw.close()

    def abort(self):
        self.closing = True
        raw = self.layer.raw
        if raw is not None:
            raw.abort()

    def is_closing(self):
        raw = self.layer.raw
        return self.closing or raw is None or raw.is_closing()

    def pause_reading(self):
        layer = self.layer
        layer.paused = True
        layer.raw.pause_reading()

    def resume_reading(self):
        layer = self.layer
        if not layer.paused:
            return
        layer.paused = False
        layer.raw.resume_reading()
        if not layer.handshaking and not layer.lost:
            layer._read()  # what arrived before the pause and was not delivered

    def is_reading(self):
        return not self.layer.paused

    def set_write_buffer_limits(self, high=None, low=None):
        self.layer.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self):
        return self.layer.raw.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self.layer.raw.get_write_buffer_limits()

    def set_protocol(self, protocol):
        self.layer.switch(protocol)

    def get_protocol(self):
        return self.layer.app

    def get_extra_info(self, name, default=None):
        sslobj = self.layer.sslobj
        if name == "ssl_object":
            return sslobj
        if name == "peercert":
            return sslobj.getpeercert()
        if name == "cipher":
            return sslobj.cipher()
        if name == "compression":
            return sslobj.compression()
        if name == "sslcontext":
            return sslobj.context
        return self.layer.raw.get_extra_info(name, default)
