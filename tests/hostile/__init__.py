"""A corpus of hostile HTTP/1 and HTTP/2 inputs, run against the real proxy on both listeners.

The rule: no byte that fails a strict parse ever reaches the other side.
Every vector is sent by a raw client to the outbound and to the inbound
listener of one ``meshproxy run`` per test module (requests), or answered by
a raw backend (responses), and afterwards:

* what reached the other side parses strictly: the backend's bytes as
  requests, the client's bytes as responses, both by our own RFC 9112 rules
  (``helpers/strict_h1.py``: CRLF only, no obs-fold, one framing field, one
  Host agreeing with an absolute-form URI, no ``Upgrade: h2c``, no
  ``Connection`` naming framing or routing fields, hop-by-hop fields gone)
  and by the independent ``h11`` parser; HTTP/2 that reached an HTTP/2
  backend is decoded and judged by ``helpers/strict_h2.py``;
* the input got a clear answer: an error status with ``l5d-proxy-error``
  and a close (HTTP/1), or a 400, RST_STREAM, GOAWAY or close (HTTP/2);
  never silence until a deadline, never a close without a status;
* the proxy is alive, logged no Python traceback since the vector started,
  and still answers a good request through the same listener.

A failing test's message starts with what the proxy did wrong, in brackets
(``[forwarded malformed bytes | closed without a status]``, see
``findings.py``), so a run's failures can be grouped by kind. The proxy is
fixed by others in parallel: a failure here is a finding to report, never a
reason to loosen an expectation.

Adding a vector: append one line to the list of its class.

* HTTP/1 request: ``add("<class>.<name>", bytes, expect)`` in
  ``vectors_h1.py``; ``@H@`` stands for the backend's ``host:port``;
  ``expect`` is one of ``refused(*statuses)``, ``refused_body()``,
  ``either(*statuses, host=...)``, ``forwarded()`` or ``pipelined(n)``
  (``expect.py`` says what each demands). Keep ``@H@`` out of bodies whose
  length the vector states. Add its id to ``SPLIT_IDS`` to also send it
  one byte at a time and cut at every CR and LF.
* HTTP/1 response: ``add("<class>.<name>", bytes or (bytes, pause, bytes),
  kind)`` in ``vectors_h1_responses.py``, kind "bad-head", "bad-body",
  "valid-or-502" or "stray".
* HTTP/2: ``add(...)`` (h2c to both listeners) or ``add_mesh(...)`` (a peer
  proxy's stream restored to HTTP/1) in ``vectors_h2.py``, with the header
  fields exactly as they go on the wire.
* HPACK and CONTINUATION: ``add("hpack-<class>.<name>", frames, expect)`` in
  ``vectors_h2_hpack.py``: ``frames`` builds stream 1's exact frames for the
  tap's ``host:port``; ``expect`` "compression-error", "goaway" (with a code)
  or "forwarded" (with the ``x-hpack-mark`` value that must arrive).

Ids are stable and readable: listener, then the vector's class and name
(``outbound-smuggle-cl-te.xchunked``, ``inbound-resp-framing.cl-te``,
``outbound-h2-pseudo.missing-path``, ``inbound-peer-orig.http-9``, and
``outbound-bytes-...``, ``-lines-``, ``-late-`` for the other ways of
sending); a new class of input gets a new prefix. The package runs in about two minutes on
two cores: one proxy and backend per module, short per-vector deadlines, and
``pytest.mark.timeout`` on every test so a hang fails alone.
"""
