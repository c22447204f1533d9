"""The hostile HTTP/2 requests of the corpus, as data: header fields, DATA and trailers per stream.

``VECTORS`` go to either listener as h2c with prior knowledge, addressed to
the HTTP/2 backend (``@H@`` is its ``host:port``). ``MESHED`` go to the
inbound listener as a peer proxy would send them (transport header, then
HTTP/2, each stream carrying ``l5d-orig-proto``) and are restored to HTTP/1
for the app. Field blocks are sent as HPACK literals exactly as written, so
a value may hold any byte. ``expect``: "refused" (the stream is reset, or
answered 400, or the connection is closed with or without GOAWAY, and not
one header block reaches the other side), "refused-body" (the head may go
ahead, what breaks the rule in the body never), "either" (refused, or
forwarded strictly valid) and "forwarded" (legal: it must arrive, valid).
"""

from __future__ import annotations

from dataclasses import dataclass

Fields = tuple[tuple[bytes, bytes], ...]
H = b"@H@"


@dataclass(frozen=True)
class H2Vector:
    id: str
    fields: Fields
    expect: str = "refused"
    data: tuple[bytes, ...] = ()
    trailers: Fields | None = None

    def render_fields(self, authority: str) -> Fields:
        return tuple((n, v.replace(H, authority.encode())) for n, v in self.fields)


def req(method: bytes = b"GET", path: bytes = b"/h2", authority: bytes = H, scheme: bytes = b"http",
        extra: Fields = ()) -> Fields:
    return ((b":method", method), (b":scheme", scheme), (b":authority", authority), (b":path", path)) + extra


def without(fields: Fields, name: bytes) -> Fields:
    return tuple(f for f in fields if f[0] != name)


VECTORS: list[H2Vector] = []


def add(vid: str, fields: Fields, expect: str = "refused", data: tuple[bytes, ...] = (),
        trailers: Fields | None = None) -> None:
    VECTORS.append(H2Vector(vid, fields, expect, data, trailers))


# ---------------------------------------------------------------------------
# pseudo-header fields

add("h2-pseudo.missing-method", without(req(), b":method"))
add("h2-pseudo.missing-scheme", without(req(), b":scheme"))
add("h2-pseudo.missing-path", without(req(), b":path"))
add("h2-pseudo.empty-path", req(path=b""))
add("h2-pseudo.path-without-slash", req(path=b"h2"))
add("h2-pseudo.path-absolute-uri", req(path=b"http://evil.example/x"))
add("h2-pseudo.path-asterisk-on-get", req(path=b"*"))
add("h2-pseudo.duplicate-method", req(extra=((b":method", b"POST"),)))
add("h2-pseudo.duplicate-path", req(extra=((b":path", b"/other"),)))
add("h2-pseudo.duplicate-authority", req(extra=((b":authority", b"evil.example"),)))
add("h2-pseudo.duplicate-scheme", req(extra=((b":scheme", b"https"),)))
add("h2-pseudo.unknown", req(extra=((b":foo", b"bar"),)))
add("h2-pseudo.status-in-request", req(extra=((b":status", b"200"),)))
add("h2-pseudo.after-regular", ((b":method", b"GET"), (b":scheme", b"http"), (b"x-a", b"1"),
                             (b":authority", H), (b":path", b"/h2")))
add("h2-pseudo.protocol-without-extended-connect", req(extra=((b":protocol", b"websocket"),)))
add("h2-pseudo.connect-with-path", req(method=b"CONNECT"))
add("h2-pseudo.empty-method", req(method=b""))
add("h2-pseudo.method-with-space", req(method=b"GE T"))
add("h2-pseudo.method-at-sign", req(method=b"G@T"))
add("h2-pseudo.method-with-nul", req(method=b"G\x00T"))
add("h2-pseudo.authority-with-space", req(authority=b"127.0.0.1 .evil"))
add("h2-pseudo.authority-userinfo", req(authority=b"user@" + H))
add("h2-pseudo.authority-crlf", req(authority=H + b"\r\nx-injected: 1"))
add("h2-pseudo.scheme-with-space", req(scheme=b"ht tp"))
for _name, _path in {"space": b"/a b", "tab": b"/a\tb", "cr": b"/a\rb", "lf": b"/a\nb", "nul": b"/a\x00b",
                     "crlf-injection": b"/a HTTP/1.1\r\nx-injected: 1\r\n\r\n", "del": b"/a\x7fb",
                     "high-byte": b"/caf\xc3\xa9", "fragment": b"/a#b"}.items():
    add(f"h2-path.{_name}", req(path=_path))

# ---------------------------------------------------------------------------
# field names and connection-specific fields

for _name, _field in {"uppercase": b"X-Upper", "space": b"x a", "colon-inside": b"x:y", "empty": b"",
                      "nul": b"x\x00a", "cr": b"x\ra", "lf": b"x\na", "high-byte": b"x-\xe9",
                      "leading-space": b" x"}.items():
    add(f"h2-name.{_name}", req(extra=((_field, b"1"),)))
for _name, _value in {"connection": b"keep-alive", "keep-alive": b"timeout=5", "proxy-connection": b"keep-alive",
                      "transfer-encoding": b"chunked", "upgrade": b"h2c"}.items():
    add(f"h2-connection-specific.{_name}", req(extra=((_name.encode(), _value),)))
add("h2-connection-specific.te-gzip", req(extra=((b"te", b"gzip"),)))
add("h2-connection-specific.te-trailers-and-gzip", req(extra=((b"te", b"trailers, gzip"),)))
add("h2-connection-specific.te-trailers", req(extra=((b"te", b"trailers"),)), "forwarded")

# ---------------------------------------------------------------------------
# content-length against DATA

_POST = req(method=b"POST")
add("h2-content-length.more-than-data", _POST + ((b"content-length", b"10"),), "refused-body", data=(b"abc",))
add("h2-content-length.less-than-data", _POST + ((b"content-length", b"1"),), "refused-body", data=(b"abc",))
add("h2-content-length.across-frames", _POST + ((b"content-length", b"3"),), "refused-body", data=(b"ab", b"cd"))
add("h2-content-length.no-data", _POST + ((b"content-length", b"5"),))
add("h2-content-length.not-a-number", _POST + ((b"content-length", b"abc"),), data=(b"abc",))
add("h2-content-length.negative", _POST + ((b"content-length", b"-3"),), data=(b"abc",))
add("h2-content-length.list", _POST + ((b"content-length", b"3, 3"),), "either", data=(b"abc",))
add("h2-content-length.two-fields", _POST + ((b"content-length", b"3"), (b"content-length", b"4")), data=(b"abc",))
add("h2-content-length.plus", _POST + ((b"content-length", b"+3"),), data=(b"abc",))

# ---------------------------------------------------------------------------
# field values

for _name, _value in {"cr": b"a\rb", "lf": b"a\nb", "nul": b"a\x00b", "crlf-injection": b"a\r\nx-injected: 1",
                      "leading-space": b" a", "trailing-space": b"a ", "trailing-tab": b"a\t"}.items():
    add(f"h2-value.{_name}", req(extra=((b"x-a", _value),)))
add("h2-value.obs-text", req(extra=((b"x-a", b"caf\xc3\xa9"),)), "either")
add("h2-value.del", req(extra=((b"x-a", b"a\x7fb"),)), "either")

# ---------------------------------------------------------------------------
# host against :authority

add("h2-host.differs-from-authority", req(extra=((b"host", b"evil.example"),)))
add("h2-host.two-fields", req(extra=((b"host", H), (b"host", b"evil.example"))))
add("h2-host.crlf", req(extra=((b"host", H + b"\r\nx-injected: 1"),)))
add("h2-host.without-authority", without(req(), b":authority") + ((b"host", H),), "either")

# ---------------------------------------------------------------------------
# trailers

_BODY = (b"abc",)
add("h2-trailers.pseudo", _POST, "refused-body", data=_BODY, trailers=((b":path", b"/x"),))
add("h2-trailers.uppercase", _POST, "refused-body", data=_BODY, trailers=((b"X-T", b"1"),))
add("h2-trailers.connection", _POST, "refused-body", data=_BODY, trailers=((b"connection", b"close"),))
add("h2-trailers.cr-in-value", _POST, "refused-body", data=_BODY, trailers=((b"x-t", b"a\rb"),))


# ---------------------------------------------------------------------------
# the meshed hop: streams a peer proxy sends, restored to HTTP/1 for the app

def mesh(orig: bytes = b"HTTP/1.1", method: bytes = b"GET", path: bytes = b"/mesh",
         authority: bytes = b"app.example", extra: Fields = ()) -> Fields:
    return req(method, path, authority, extra=extra + ((b"l5d-orig-proto", orig),))


MESHED: list[H2Vector] = []


def add_mesh(vid: str, fields: Fields, expect: str = "refused", data: tuple[bytes, ...] = (),
             trailers: Fields | None = None) -> None:
    MESHED.append(H2Vector(vid, fields, expect, data, trailers))


add_mesh("orig.valid-http11", mesh(), "forwarded")
add_mesh("orig.valid-http10-with-length", mesh(b"HTTP/1.0", b"POST", extra=((b"content-length", b"5"),)),
         "forwarded", data=(b"hello",))
# An HTTP/1.0 request has no chunked framing: forwarded only with the length made explicit.
add_mesh("orig.http10-body-without-length", mesh(b"HTTP/1.0", b"POST"), "either", data=(b"hello",))
add_mesh("orig.http10-body-across-frames", mesh(b"HTTP/1.0", b"POST"), "either", data=(b"hel", b"lo"))
for _name, _value in {"crlf-header": b"HTTP/1.1\r\nX: y", "http-9": b"HTTP/9", "http-2": b"HTTP/2",
                      "lowercase": b"http/1.1", "trailing-space": b"HTTP/1.1 ", "leading-space": b" HTTP/1.1",
                      "no-version-absolute": b"; absolute-form", "empty": b"", "unknown-parameter": b"HTTP/1.1; bogus",
                      "list": b"HTTP/1.1, HTTP/1.0", "trailing-junk": b"HTTP/1.0 junk", "nul": b"HTTP/1.1\x00",
                      "tab-inside": b"HTTP/1.1\tX", "http-0.9": b"HTTP/0.9", "version-only-digits": b"1.1"}.items():
    add_mesh(f"orig.{_name}", mesh(_value))
add_mesh("orig.two-fields", mesh(extra=((b"l5d-orig-proto", b"HTTP/1.0"),)))
add_mesh("orig.absolute-form-path-without-slash", mesh(b"HTTP/1.1; absolute-form", path=b"x"))
add_mesh("orig.absolute-form-empty-authority", mesh(b"HTTP/1.1; absolute-form", authority=b""))
add_mesh("orig.absolute-form-authority-userinfo", mesh(b"HTTP/1.1; absolute-form", authority=b"user@evil.example"))
add_mesh("orig.absolute-form-path-is-uri", mesh(b"HTTP/1.1; absolute-form", path=b"http://evil.example/x"))
add_mesh("mesh.host-differs-from-authority", mesh(extra=((b"host", b"evil.example"),)))
add_mesh("mesh.path-with-space", mesh(path=b"/a b HTTP/1.1\r\nx: y"))
add_mesh("mesh.path-space-only", mesh(path=b"/a b"))
add_mesh("mesh.path-with-tab", mesh(path=b"/a\tb"))
add_mesh("mesh.path-fragment", mesh(path=b"/a#b"))
add_mesh("mesh.path-asterisk-on-get", mesh(path=b"*"))
add_mesh("mesh.path-without-slash", mesh(path=b"a/b"))
add_mesh("mesh.method-with-space", mesh(method=b"GET /smuggled HTTP/1.1\r\nx:"))
add_mesh("mesh.method-space-only", mesh(method=b"GE T"))
add_mesh("mesh.method-at-sign", mesh(method=b"G@T"))
add_mesh("mesh.method-connect", mesh(method=b"CONNECT"))
add_mesh("mesh.value-bare-cr", mesh(extra=((b"x-a", b"a\rb"),)))
add_mesh("mesh.value-bare-lf", mesh(extra=((b"x-a", b"a\nb"),)))
add_mesh("mesh.value-nul", mesh(extra=((b"x-a", b"a\x00b"),)))
add_mesh("mesh.value-leading-space", mesh(extra=((b"x-a", b" a"),)))
add_mesh("mesh.name-uppercase", mesh(extra=((b"X-A", b"1"),)))
add_mesh("mesh.name-space", mesh(extra=((b"x a", b"1"),)))
add_mesh("mesh.authority-crlf", mesh(authority=b"app.example\r\nx-injected: 1"))
add_mesh("mesh.authority-space", mesh(authority=b"app example"))
add_mesh("mesh.transfer-encoding", mesh(b"HTTP/1.1", b"POST", extra=((b"transfer-encoding", b"chunked"),)),
         data=(b"0\r\n\r\n",))
add_mesh("mesh.connection-close", mesh(extra=((b"connection", b"close"),)))
add_mesh("mesh.upgrade-h2c", mesh(extra=((b"upgrade", b"h2c"),)))
add_mesh("mesh.te-gzip", mesh(extra=((b"te", b"gzip"),)))
add_mesh("mesh.content-length-mismatch", mesh(b"HTTP/1.1", b"POST", extra=((b"content-length", b"10"),)),
         "refused-body", data=(b"abc",))
add_mesh("mesh.content-length-smuggle", mesh(b"HTTP/1.1", b"POST", extra=((b"content-length", b"0"),)),
         "refused-body", data=(b"GET /smuggled HTTP/1.1\r\nHost: app.example\r\n\r\n",))
add_mesh("mesh.trailer-bare-cr", mesh(b"HTTP/1.1", b"POST"), "refused-body", data=(b"abc",),
         trailers=((b"x-t", b"a\rb"),))
add_mesh("mesh.trailer-content-length", mesh(b"HTTP/1.1", b"POST"), "either", data=(b"abc",),
         trailers=((b"content-length", b"99"),))

for _list in (VECTORS, MESHED):
    _ids = [v.id for v in _list]
    assert len(_ids) == len(set(_ids)), "vector ids must be unique"
