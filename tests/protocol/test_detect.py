"""Tests for proxy.protocol.detect: every case whole, byte by byte, and with trailing bytes.

The compiled module is the one under test; the same source loaded uncompiled
runs beside it, both to keep the two in step and because pure Python turns an
out-of-range index (which the compiled build, built without bounds checks,
would silently read) into an IndexError.
"""

from __future__ import annotations

import importlib.util
import ssl
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proxy.protocol.detect as detect
import proxy.protocol.http1 as http1

assert detect.__file__.endswith(".so"), f"compiled detect not in use: {detect.__file__}"


def _load_pure():
    source = Path(detect.__file__).with_name("detect.py")
    spec = importlib.util.spec_from_file_location("meshproxy_detect_pure", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pure = _load_pure()
assert not pure.__file__.endswith(".so")

NEED_MORE, MATCH, NO_MATCH = detect.NEED_MORE, detect.MATCH, detect.NO_MATCH
HTTP1, H2, TLS, OPAQUE = detect.HTTP1, detect.H2, detect.TLS, detect.OPAQUE
KINDS = {NEED_MORE, HTTP1, H2, TLS, OPAQUE}

IMPLS = pytest.mark.parametrize("mod", [detect, pure], ids=["compiled", "pure"])

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SNI = "web.default.svc.cluster.local"


# ---------------------------------------------------------------- helpers


def _norm(result):
    """Results made comparable: a ClientHello becomes a tuple of its fields."""
    if isinstance(result, int):
        return result
    return ("hello", result.sni, result.alpn, result.legacy_version)


def decide(fn, data: bytes, trailing: bytes = b"\xff\x00garbage\r\n") -> tuple[int, object]:
    """Check fn on every prefix of data; return (bytes needed to decide, decision).

    Every prefix answers NEED_MORE until the decision, then the decision; data
    with trailing bytes answers the same once decided.
    """
    results = [_norm(fn(data[:k])) for k in range(len(data) + 1)]
    first = next((k for k, r in enumerate(results) if r != NEED_MORE), None)
    if first is None:
        return len(data) + 1, NEED_MORE
    decision = results[first]
    assert all(r == decision for r in results[first:]), (first, results)
    assert _norm(fn(data + trailing)) == decision
    return first, decision


def assert_detector(mod, data: bytes, expected: int, max_size: int = 16384) -> None:
    """Feed a Detector one byte at a time: NEED_MORE, then the decision, which sticks."""
    det = mod.Detector(max_size)
    decided = None
    for k in range(len(data)):
        result = det.feed(data[k:k + 1])
        if decided is None:
            if result != NEED_MORE:
                decided = result
        else:
            assert result == decided
    assert decided == expected
    assert det.buffered == data
    assert det.feed(b"more") == expected
    assert det.buffered == data + b"more"
    if expected == TLS:
        assert isinstance(det.client_hello, mod.ClientHello)
    else:
        assert det.client_hello is None


def real_client_hello(
    server_hostname: str | None = SNI,
    alpn: list[str] | None = ("h2", "http/1.1"),
    maximum_version: ssl.TLSVersion | None = None,
) -> bytes:
    """The ClientHello Python's ssl module (OpenSSL) really sends, read from a MemoryBIO."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def ext(ext_type: int, body: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(body)) + body


def sni_ext(*names: bytes, name_type: int = 0, extra: bytes = b"") -> bytes:
    entries = extra + b"".join(struct.pack("!BH", name_type, len(n)) + n for n in names)
    return ext(0, struct.pack("!H", len(entries)) + entries)


def alpn_ext(*protocols: bytes) -> bytes:
    names = b"".join(bytes([len(p)]) + p for p in protocols)
    return ext(16, struct.pack("!H", len(names)) + names)


TLS13_EXTENSIONS = [
    sni_ext(b"web.default.svc.cluster.local"),
    ext(0x0A0A, b""),  # GREASE
    ext(10, bytes.fromhex("0004001d0017")),  # supported_groups
    ext(13, bytes.fromhex("000404030804")),  # signature_algorithms
    alpn_ext(b"h2", b"http/1.1"),
    ext(43, bytes.fromhex("0403040303")),  # supported_versions: 1.3, 1.2
    ext(51, bytes.fromhex("0024001d0020") + bytes(range(32))),  # key_share x25519
    ext(0xFF01, b"\x00"),  # renegotiation_info
]
TLS12_EXTENSIONS = [sni_ext(b"api.example.com"), alpn_ext(b"http/1.1"), ext(13, bytes.fromhex("000404030804"))]


def hello_body(
    extensions: list[bytes] | None = TLS13_EXTENSIONS,
    version: int = 0x0303,
    session_id: bytes = bytes(range(32)),
    suites: bytes = bytes.fromhex("130113021303c02f"),
    compression: bytes = b"\x00",
    ext_block: bytes | None = None,
) -> bytes:
    body = struct.pack("!H", version) + bytes(range(100, 132))
    body += bytes([len(session_id)]) + session_id
    body += struct.pack("!H", len(suites)) + suites
    body += bytes([len(compression)]) + compression
    if ext_block is not None:
        body += ext_block
    elif extensions is not None:
        block = b"".join(extensions)
        body += struct.pack("!H", len(block)) + block
    return body


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def records(message: bytes, sizes: list[int] | None = None, version: int = 0x0301) -> bytes:
    """Wrap a handshake message in records of the given payload sizes (the rest in the last)."""
    out, pos = b"", 0
    for size in [*(sizes or []), len(message)]:
        chunk = message[pos:pos + size]
        if chunk:
            out += struct.pack("!BHH", 22, version, len(chunk)) + chunk
        pos += len(chunk)
    return out


def length_fields(message: bytes) -> list[tuple[str, int, int]]:
    """(name, offset, width) of every length field inside a ClientHello handshake message."""
    fields = [("handshake", 1, 3)]
    p = 4 + 34
    fields.append(("session_id", p, 1))
    p += 1 + message[p]
    fields.append(("cipher_suites", p, 2))
    p += 2 + int.from_bytes(message[p:p + 2], "big")
    fields.append(("compression", p, 1))
    p += 1 + message[p]
    if p == len(message):
        return fields
    fields.append(("extensions", p, 2))
    p += 2
    while p < len(message):
        ext_type = int.from_bytes(message[p:p + 2], "big")
        size = int.from_bytes(message[p + 2:p + 4], "big")
        fields.append((f"ext{ext_type}", p + 2, 2))
        body = p + 4
        if ext_type == 0:
            fields.append(("sni_list", body, 2))
            fields.append(("sni_name", body + 3, 2))
        elif ext_type == 16:
            fields.append(("alpn_list", body, 2))
            q = body + 2
            while q < body + size:
                fields.append((f"alpn_name@{q}", q, 1))
                q += 1 + message[q]
        p = body + size
    return fields


def with_field(message: bytes, offset: int, width: int, value: int) -> bytes:
    return message[:offset] + value.to_bytes(width, "big") + message[offset + width:]


# ---------------------------------------------------------------- the module surface


def test_constants_are_distinct_ints():
    assert (NEED_MORE, MATCH, NO_MATCH) == (0, 1, 2)
    assert (HTTP1, H2, TLS, OPAQUE) == (1, 2, 3, 4)
    assert pure.NEED_MORE == NEED_MORE and pure.OPAQUE == OPAQUE


def test_client_hello_is_readonly_and_has_repr():
    hello = detect.ClientHello("a.example", (b"h2",), 0x0303)
    assert repr(hello) == "ClientHello(sni='a.example', alpn=(b'h2',), legacy_version=0x0303)"
    with pytest.raises(AttributeError):
        hello.sni = "b.example"


# ---------------------------------------------------------------- HTTP/1

# (request start, bytes detect() needs to say HTTP1)
HTTP1_MATCHES = [
    (b"GET / HTTP/1.1\r\n", 4),  # a standard method and a space decide at once
    (b"GET /index.html?q=1&r=%20 HTTP/1.1\r\nHost: web\r\n\r\n", 4),
    (b"POST /api HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 5),
    (b"OPTIONS * HTTP/1.1\r\n", 8),
    (b"CONNECT web.default.svc:443 HTTP/1.1\r\n", 8),
    (b"GET http://web.default.svc/x HTTP/1.1\r\n", 4),
    (b"M-SEARCH * HTTP/1.1\r\n", 16),  # other methods: once a later word starts with HTTP/
    (b"PROPFIND /dav HTTP/1.1\r\n", 19),
    (b"PRI /x HTTP/1.1\r\n", 12),  # looks like the h2 preface for three bytes
    (b"get / HTTP/1.1\r\n", 11),  # a valid (if odd) method
    (b"\r\nGET / HTTP/1.1\r\n", 6),
    (b"\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n", 12),  # four leading CRLFs are tolerated
]


@IMPLS
@pytest.mark.parametrize(("data", "needed"), HTTP1_MATCHES)
def test_http1_request_lines(mod, data, needed):
    line_end = data.index(b"HTTP/1.") + len(b"HTTP/1.x\r\n")
    assert mod.is_http1(data) == MATCH
    assert decide(mod.is_http1, data) == (line_end, MATCH)
    assert decide(mod.detect, data) == (needed, HTTP1)
    assert decide(mod.looks_like_http1, data) == (needed, MATCH)
    assert_detector(mod, data, HTTP1)


# Broken requests are HTTP all the same: the strict parser, not the app behind
# the proxy, must be the one to read (and refuse) them.
# (name, whole head, bytes detect() needs to say HTTP1)
BROKEN_HTTP1 = [
    ("method with @", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 11),
    ("nul in method", b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", 11),
    ("nul after method", b"GET\x00/ HTTP/1.1\r\nHost: a\r\n\r\n", 11),
    ("tab after method", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 4),
    ("tabs, lower case", b"get\t/\thttp/1.1\r\nHost: a\r\n\r\n", 11),
    ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 4),
    ("all lower case", b"get / http/1.1\r\nHost: a\r\n\r\n", 11),
    ("leading space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 5),
    ("leading tab", b"\tget / HTTP/1.1\r\nHost: a\r\n\r\n", 12),
    ("bare lf", b"GET / HTTP/1.1\nHost: a\n\n", 4),
    ("bare lf, lower case", b"post / HTTP/1.1\nHost: a\n\n", 12),
    ("bare cr, lower case", b"post /\rHTTP/1.1\r\nHost: a\r\n\r\n", 12),
    ("leading lf", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 5),
    ("five leading crlf", b"\r\n" * 5 + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 14),
    ("http/0.9", b"GET /\r\n\r\n", 4),
    ("trailing space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 4),
    ("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 4),
    ("space in target", b"FOO /a b HTTP/1.1\r\nHost: a\r\n\r\n", 14),
    ("unknown version", b"BREW /pot HTTP/9.9\r\nHost: a\r\n\r\n", 15),
    ("non-ascii target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 4),
    ("broken h2 preface", PREFACE[:18] + b"XX\r\n\r\n", 19),
    ("cl.te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 5),
    ("connection: content-length", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n\r\n", 4),
    ("userinfo", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 4),
    ("del in method", b"GE\x7fT / HTTP/1.1\r\nHost: a\r\n\r\n", 12),
    ("utf-8 method", "GÉT / HTTP/1.1\r\nHost: a\r\n\r\n".encode(), 12),
    ("utf-8 text", "héllo wörld HTTP/1.1\r\n".encode(), 19),
]


@IMPLS
@pytest.mark.parametrize(("name", "data", "needed"), BROKEN_HTTP1, ids=[c[0] for c in BROKEN_HTTP1])
def test_broken_http1_is_http1(mod, name, data, needed):
    assert decide(mod.detect, data) == (needed, HTTP1)
    assert_detector(mod, data, HTTP1)
    # Every prefix with something in it could still be HTTP/1 (the detect
    # timeout must not turn it into opaque bytes).
    for k in range(len(data) + 1):
        assert mod.could_be_http1(data[:k]) == (data[:k].strip(b"\r\n\t ") != b""), k
    # And the parser it is handed to refuses it.
    with pytest.raises(http1.ParseError) as info:
        http1.parse_request_head(data, 65536)
    assert info.value.status in (400, 501, 505)


# (data, bytes needed before NO_MATCH) for the strict is_http1
HTTP1_NO_MATCHES = [
    (b" GET / HTTP/1.1\r\n", 1),  # SP cannot start a method
    (b"(GET / HTTP/1.1\r\n", 1),  # '(' is not a tchar
    (b"GE\tT / HTTP/1.1\r\n", 3),
    (b"GET  / HTTP/1.1\r\n", 5),  # empty target
    (b"GET /a\x01b HTTP/1.1\r\n", 7),  # CTL in the target
    (b"GET /\xc3\xa9 HTTP/1.1\r\n", 6),  # not visible ASCII
    (b"GET /\r\n", 6),  # HTTP/0.9 style: the line ends inside the target
    (b"GET / HTTP/1.2\r\n", 14),
    (b"GET / HTTP/2.0\r\n", 12),
    (b"GET / http/1.1\r\n", 7),
    (b"GET / HTTP/1.1\n", 15),  # bare LF
    (b"GET / HTTP/1.1\rX", 16),
    (b"GET / HTTP/1.1 \r\n", 15),
    (PREFACE, 12),  # PRI * HTTP/2.0 is not HTTP/1
    (b"\r\n" * 5 + b"GET / HTTP/1.1\r\n", 9),  # a fifth leading CRLF
    (b"\r\rGET", 2),
    (b"\nGET / HTTP/1.1\r\n", 1),
]


@IMPLS
@pytest.mark.parametrize(("data", "needed"), HTTP1_NO_MATCHES)
def test_strict_http1_is_refused_as_soon_as_a_byte_rules_it_out(mod, data, needed):
    assert mod.is_http1(data) == NO_MATCH
    assert decide(mod.is_http1, data) == (needed, NO_MATCH)
    # Detection still calls every one of them HTTP (or h2, for the preface),
    # or waits: "\r\rGET" has no space after its method yet.
    assert mod.detect(data) == (H2 if data == PREFACE else NEED_MORE if data == b"\r\rGET" else HTTP1)


@IMPLS
def test_http1_max_line_counts_to_the_lf(mod):
    line = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n"
    assert decide(lambda d: mod.is_http1(d, len(line)), line) == (len(line), MATCH)
    assert decide(lambda d: mod.is_http1(d, len(line) - 1), line) == (len(line) - 1, NO_MATCH)
    # Leading CRLFs count too: the bound is on bytes examined.
    assert mod.is_http1(b"\r\n" + line, len(line)) == NO_MATCH
    assert mod.is_http1(b"\r\n" + line, len(line) + 2) == MATCH
    assert mod.is_http1(b"", 0) == NO_MATCH
    assert mod.is_http1(b"G", 1) == NO_MATCH


@IMPLS
def test_default_max_line(mod):
    long_target = b"GET /" + b"x" * 20000
    assert mod.is_http1(long_target[:16383]) == NEED_MORE
    assert mod.is_http1(long_target) == NO_MATCH
    assert decide(mod.detect, long_target[:100]) == (4, HTTP1)
    assert mod.detect(long_target) == HTTP1
    # Past the bytes detection looks at, a line that has begun like a request
    # line (two words) is one, and so is a single word that starts like a
    # method (a huge method token gets 400, not a raw relay); other single
    # words are not. (Prefixes sampled: every
    # one of 20,000 would take minutes uncompiled.)
    for data, decision in ((b"PROPFIND /" + b"x" * 20000, HTTP1), (b"x" * 20000, HTTP1), (b"1" * 20000, OPAQUE)):
        for k in list(range(0, 16384, 1009)) + [16383]:
            assert mod.detect(data[:k]) == NEED_MORE, k
        for k in (16384, 16385, 18000, 20000):
            assert mod.detect(data[:k]) == decision, k
    blob = b"1" * 20000
    assert mod.could_be_http1(blob[:16383]) and not mod.could_be_http1(blob)  # undecided, then decided not
    word = b"x" * 20000  # a huge method token
    assert mod.could_be_http1(word[:16383]) and mod.could_be_http1(word)


@IMPLS
def test_looks_like_http1_bounds(mod):
    assert mod.looks_like_http1(b"abc def", 7) == MATCH
    assert mod.looks_like_http1(b"abc def", 8) == NEED_MORE
    assert mod.looks_like_http1(b"abcdefg", 7) == MATCH  # a method-like word as long as the bound
    assert mod.looks_like_http1(b"GE", 2) == MATCH
    assert mod.looks_like_http1(b"1234567", 7) == NO_MATCH  # a first word that cannot be a method
    assert mod.looks_like_http1(b"\r\n\r\n", 4) == NO_MATCH
    assert mod.looks_like_http1(b"\r\n", 4) == NEED_MORE
    assert mod.looks_like_http1(b"", 0) == NO_MATCH
    assert mod.looks_like_http1(b"GET ", -1) == NO_MATCH
    assert mod.looks_like_http1(b"") == NEED_MORE


@IMPLS
def test_could_be_http1_after_the_timeout(mod, captures):
    # Nothing, or only blank lines: nothing says HTTP, so the connection is
    # left to the server-speaks-first path.
    for data in (b"", b"\r\n", b" \t\r\n\r\n"):
        assert not mod.could_be_http1(data)
    # A request trickled in slowly is HTTP at every byte.
    request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    for k in range(1, len(request) + 1):
        assert mod.could_be_http1(request[:k]), k
    # The h2 preface may yet turn out to be a broken HTTP/1 request.
    assert all(mod.could_be_http1(PREFACE[:k]) for k in range(1, 25))
    # TLS, at every byte.
    hello = captures["sni+alpn"]
    assert not any(mod.could_be_http1(hello[:k]) for k in range(1, len(hello) + 1))
    # Undecided text may still become a (broken) request line.
    assert mod.could_be_http1(b"SSH-2.0-OpenSSH_9.6")
    assert not mod.could_be_http1(b"SSH-2.0-OpenSSH_9.6\r\n")


# ---------------------------------------------------------------- HTTP/2 preface


@IMPLS
def test_h2_preface(mod):
    assert decide(mod.is_h2_preface, PREFACE) == (24, MATCH)
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    assert decide(mod.detect, PREFACE + settings_frame) == (24, H2)
    assert_detector(mod, PREFACE + settings_frame, H2)
    assert decide(mod.is_h2_preface, b"PRI * HTTP/1.1\r\n") == (12, NO_MATCH)
    assert decide(mod.is_h2_preface, PREFACE[:18] + b"XX") == (19, NO_MATCH)
    assert mod.is_h2_preface(b"GET") == NO_MATCH
    assert mod.is_h2_preface(b"") == NEED_MORE


@IMPLS
def test_prefaces_that_diverge_late_are_broken_http1(mod):
    # "PRI * HTTP/2.0" looks like HTTP/1 from its eleventh byte, but detection
    # waits for the preface to decide; when it fails, the HTTP/1 parser answers.
    assert decide(mod.detect, PREFACE[:18] + b"XX\r\n\r\n") == (19, HTTP1)
    assert decide(mod.detect, b"PRI * HTTP/1.1\r\n") == (12, HTTP1)


# ---------------------------------------------------------------- other protocols

# (name, first bytes a client sends, bytes needed to decide OPAQUE): at the
# first byte no HTTP/1 line can hold, or at the end of a first line with no
# "HTTP/" word in it.
OPAQUE_CASES = [
    ("postgres SSLRequest", b"\x00\x00\x00\x08\x04\xd2\x16\x2f", 1),
    ("postgres startup", b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00app\x00", 1),
    ("postgres cancel", b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x01\x00\x12\x34\x56\x78", 1),
    ("redis", b"*1\r\n$4\r\nPING\r\n", 4),
    ("redis inline", b"PING\r\n", 6),
    ("redis inline set", b"SET k v\r\n", 9),
    ("ssh", b"SSH-2.0-OpenSSH_9.6\r\n", 21),
    ("mysql client reply", b"\x55\x00\x00\x01\x8d\xa6\x0f\x00", 4),
    ("mysql ssl request", b"\x20\x00\x00\x01\x05\xae\x0f\x00\x00\x00\x00\x01\x21", 2),
    ("mysql query", b"\x09\x00\x00\x00\x03select 1", 2),
    ("kafka", b"\x00\x00\x00\x4f\x00\x12\x00\x03", 1),
    # A first byte of NUL is binary, even when an HTTP request line follows it.
    ("nul then a request line", b"\x00GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1),
    ("mongodb", b"\x3a\x01\x00\x00\x01\x00\x00\x00", 2),
    ("amqp", b"AMQP\x00\x00\x09\x01", 8),
    ("memcached", b"get user:42\r\n", 13),
    ("memcached set", b"set k 0 0 1\r\nx\r\n", 13),
    ("smtp client", b"EHLO client.example.com\r\n", 25),
    ("stomp", b"CONNECT\naccept-version:1.2\n\n\x00", 8),
    ("http response", b"HTTP/1.1 200 OK\r\n", 17),
    ("tls alert", b"\x15\x03\x03\x00\x02\x02\x28", 1),
    ("sslv2 hello", b"\x80\x2e\x01\x00\x02\x00\x15", 1),
    ("binary blob", bytes.fromhex("8f03a17c00e4199b"), 1),
    # What server-speaks-first servers send, should it ever reach the detector.
    ("mysql greeting", b"J\x00\x00\x00\x0a8.0.36\x00", 5),
    ("smtp greeting", b"220 mail.example.com ESMTP Postfix\r\n", 36),
    ("ftp greeting", b"220 (vsFTPd 3.0.5)\r\n", 20),
]


@IMPLS
@pytest.mark.parametrize(("name", "data", "needed"), OPAQUE_CASES, ids=[c[0] for c in OPAQUE_CASES])
def test_other_protocols_are_opaque_as_early_as_possible(mod, name, data, needed):
    assert mod.detect(data) == OPAQUE
    assert decide(mod.detect, data) == (needed, OPAQUE)
    assert decide(mod.looks_like_http1, data) == (needed, NO_MATCH)
    assert_detector(mod, data, OPAQUE)
    # Once decided, the detect timeout does not make it HTTP either.
    assert not any(mod.could_be_http1(data[:k]) for k in range(needed, len(data) + 1))


@IMPLS
def test_server_speaks_first_waits(mod):
    # The client of a server-speaks-first protocol sends nothing: detection
    # can only wait (the proxy's detect timeout decides then).
    assert mod.detect(b"") == NEED_MORE
    assert mod.detect(b"SSH-2.0-OpenSSH_9.6") == NEED_MORE
    det = mod.Detector()
    assert det.feed(b"") == NEED_MORE
    assert det.buffered == b""


# ---------------------------------------------------------------- TLS: real captures


REAL_CAPTURES = {
    "sni+alpn": dict(),
    "tls12-only": dict(maximum_version=ssl.TLSVersion.TLSv1_2),
    "no-sni": dict(server_hostname=None),
    "no-alpn": dict(alpn=None),
    "upper-case-sni": dict(server_hostname="Web.Default.SVC.cluster.local"),
}


@pytest.fixture(scope="module")
def captures() -> dict[str, bytes]:
    return {name: real_client_hello(**kw) for name, kw in REAL_CAPTURES.items()}


@IMPLS
@pytest.mark.parametrize("name", list(REAL_CAPTURES))
def test_real_client_hello(mod, captures, name):
    data = captures[name]
    hello = mod.peek_client_hello(data)
    assert isinstance(hello, mod.ClientHello)
    assert hello.sni == (None if name == "no-sni" else SNI)
    assert hello.alpn == (() if name == "no-alpn" else (b"h2", b"http/1.1"))
    assert hello.legacy_version == 0x0303
    assert repr(hello).startswith("ClientHello(sni=")
    # Every truncation needs more; the last byte decides.
    assert decide(mod.peek_client_hello, data) == (len(data), _norm(hello))
    assert decide(mod.detect, data) == (len(data), TLS)
    # What follows a ClientHello (ChangeCipherSpec, early data) is not examined.
    after = b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05hello"
    assert _norm(mod.peek_client_hello(data + after)) == _norm(hello)
    assert_detector(mod, data, TLS)
    det = mod.Detector()
    assert det.feed(data) == TLS
    assert _norm(det.client_hello) == _norm(hello)


@IMPLS
def test_real_client_hello_fragmented(mod, captures):
    message = captures["sni+alpn"][5:]
    expected = _norm(mod.peek_client_hello(captures["sni+alpn"]))
    for sizes in ([100], [1], [3], [4], [len(message) - 1], [50, 50, 50, 50]):
        data = records(message, sizes)
        assert decide(mod.peek_client_hello, data) == (len(data), expected), sizes
        assert decide(mod.detect, data) == (len(data), TLS)


@IMPLS
def test_real_client_hello_size_limit(mod, captures):
    data = captures["sni+alpn"]
    assert isinstance(mod.peek_client_hello(data, len(data)), mod.ClientHello)
    # The handshake header already says the message cannot fit.
    assert decide(lambda d: mod.peek_client_hello(d, len(data) - 1), data) == (9, NO_MATCH)
    assert_detector(mod, data, OPAQUE, max_size=len(data) - 1)
    assert_detector(mod, data, TLS, max_size=len(data))


# ---------------------------------------------------------------- TLS: hand-built


HAND_BUILT = {
    "tls13": (hello_body(), SNI, (b"h2", b"http/1.1"), 0x0303),
    "tls12": (hello_body(TLS12_EXTENSIONS, session_id=b""), "api.example.com", (b"http/1.1",), 0x0303),
    "tls10": (hello_body([sni_ext(b"a.example")], version=0x0301, session_id=b""), "a.example", (), 0x0301),
    "no-extensions": (hello_body(None), None, (), 0x0303),
    "empty-extensions": (hello_body([]), None, (), 0x0303),
    "no-sni": (hello_body([alpn_ext(b"h2")]), None, (b"h2",), 0x0303),
    "no-alpn": (hello_body([sni_ext(b"x.y")]), "x.y", (), 0x0303),
    "unknown-name-type-skipped": (
        hello_body([sni_ext(b"Web.Example", extra=b"\x07\x00\x03abc")]),
        "web.example",
        (),
        0x0303,
    ),
    "only-unknown-name-type": (hello_body([sni_ext(b"opaque", name_type=9)]), None, (), 0x0303),
}


@IMPLS
@pytest.mark.parametrize("name", list(HAND_BUILT))
def test_hand_built_client_hello(mod, name):
    body, sni, alpn, version = HAND_BUILT[name]
    expected = ("hello", sni, alpn, version)
    for record_version in (0x0301, 0x0303):
        data = records(handshake(body), version=record_version)
        assert decide(mod.peek_client_hello, data) == (len(data), expected)
        assert decide(mod.detect, data) == (len(data), TLS)
    assert_detector(mod, data, TLS)


@IMPLS
@pytest.mark.parametrize("name", ["tls13", "tls12"])
def test_hand_built_fragmented_at_every_split(mod, name):
    body, sni, alpn, version = HAND_BUILT[name]
    message = handshake(body)
    expected = ("hello", sni, alpn, version)
    for split in range(1, len(message)):
        data = records(message, [split])
        assert _norm(mod.peek_client_hello(data)) == expected, split
        assert mod.peek_client_hello(data[:-1]) == NEED_MORE, split
        # A record of another type between the fragments is not allowed.
        bad = data[:5 + split] + b"\x17\x03\x03\x00\x01\x00" + data[5 + split:]
        assert mod.peek_client_hello(bad) == NO_MATCH, split
    data = records(message, [37])
    assert decide(mod.peek_client_hello, data) == (len(data), expected)
    assert_detector(mod, data, TLS)


@IMPLS
def test_fragmented_then_other_records_are_not_examined(mod):
    message = handshake(hello_body())
    data = records(message, [100]) + b"\x14\x03\x03\x00\x01\x01"
    assert isinstance(mod.peek_client_hello(data), mod.ClientHello)
    # The handshake message ends inside a record that carries more handshake bytes.
    data = records(message + b"\x0b\x00\x00\x00", [100])
    assert isinstance(mod.peek_client_hello(data), mod.ClientHello)


# (name, handshake body or full bytes, bytes needed before NO_MATCH or None for "at the end")
def _malformed_cases():
    good = hello_body()
    cases = [
        ("server hello", records(handshake(good, msg_type=2)), 6),
        ("record type alert", b"\x15" + records(handshake(good))[1:], 1),
        ("record major 2", b"\x16\x02\x00", 2),
        ("record minor 5", b"\x16\x03\x05", 3),
        ("record length 0", b"\x16\x03\x01\x00\x00", 5),
        ("record length 2^14+1", b"\x16\x03\x01\x40\x01", 5),
        ("record length high byte", b"\x16\x03\x01\x41", 4),
        ("handshake too short", records(handshake(good[:40])), 9),
        ("hello version 2.0", records(handshake(b"\x02\x00" + good[2:])), 10),
        ("session id 33", records(handshake(hello_body(session_id=bytes(33)))), 44),
        ("odd cipher suites", records(handshake(hello_body(suites=b"\x13\x01\x13"))), None),
        ("no cipher suites", records(handshake(hello_body(suites=b""))), None),
        ("no compression", records(handshake(hello_body(compression=b""))), None),
        ("one stray byte for extensions", records(handshake(hello_body(None) + b"\x00")), None),
        ("extensions short of body", records(handshake(hello_body(ext_block=b"\x00\x00\x00"))), None),
        ("extensions past body", records(handshake(hello_body(ext_block=b"\x00\x05\x00\x00\x00\x00"))), None),
        ("truncated extension header", records(handshake(hello_body(ext_block=b"\x00\x02\x00\x00"))), None),
        ("extension body past block", records(handshake(hello_body(ext_block=b"\x00\x04\x00\x0a\x00\x01"))), None),
        ("duplicate sni", records(handshake(hello_body([sni_ext(b"a"), sni_ext(b"b")]))), None),
        ("duplicate grease", records(handshake(hello_body([ext(0x0A0A, b""), ext(0x0A0A, b"")]))), None),
        ("duplicate 0xff01",
         records(handshake(hello_body([ext(0xFF01, b"\x00"), ext(5, b""), ext(0xFF01, b"\x00")]))), None),
        ("duplicate type 63", records(handshake(hello_body([ext(63, b""), ext(63, b"")]))), None),
        ("zero-length sni list", records(handshake(hello_body([ext(0, b"\x00\x00")]))), None),
        ("sni extension empty", records(handshake(hello_body([ext(0, b"")]))), None),
        ("sni list short of extension", records(handshake(hello_body([ext(0, b"\x00\x04\x00\x00\x01a\x00")]))), None),
        ("sni entry past list", records(handshake(hello_body([ext(0, b"\x00\x02\x00\x00")]))), None),
        ("empty host name", records(handshake(hello_body([sni_ext(b"")]))), None),
        ("two host names", records(handshake(hello_body([sni_ext(b"a", b"b")]))), None),
        ("host name with NUL", records(handshake(hello_body([sni_ext(b"a\x00b")]))), None),
        ("host name with space", records(handshake(hello_body([sni_ext(b"a b")]))), None),
        ("host name non-ascii", records(handshake(hello_body([sni_ext("é.example".encode())]))), None),
        ("host name too long", records(handshake(hello_body([sni_ext(b"a" * 256)]))), None),
        ("empty alpn list", records(handshake(hello_body([ext(16, b"\x00\x00")]))), None),
        ("empty alpn name", records(handshake(hello_body([alpn_ext(b"h2", b"")]))), None),
        ("alpn extension empty", records(handshake(hello_body([ext(16, b"")]))), None),
        ("alpn name past list", records(handshake(hello_body([ext(16, b"\x00\x03\x05h2")]))), None),
    ]
    # Claiming more bytes than any valid hello could hold is refused at the handshake header.
    cases.append(("handshake 2^24-1", b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", 9))
    return cases


MALFORMED = _malformed_cases()


@IMPLS
@pytest.mark.parametrize(("name", "data", "needed"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_client_hello(mod, name, data, needed):
    assert mod.peek_client_hello(data) == NO_MATCH
    got, decision = decide(mod.peek_client_hello, data)
    assert decision == NO_MATCH
    if needed is not None:
        assert got == needed
    assert decide(mod.detect, data) == (got, OPAQUE)
    assert_detector(mod, data, OPAQUE)


@IMPLS
@pytest.mark.parametrize("name", ["tls13", "tls12"])
def test_corrupted_length_fields(mod, name):
    message = handshake(HAND_BUILT[name][0])
    for field, offset, width in length_fields(message):
        value = int.from_bytes(message[offset:offset + width], "big")
        for bad in (value - 1, value + 1, 0, (1 << 8 * width) - 1):
            if bad < 0 or bad >= 1 << 8 * width or bad == value:
                continue
            corrupted = with_field(message, offset, width, bad)
            data = records(corrupted)
            # Every field is checked against its container before the rest
            # arrives: even a handshake length past its record is refused
            # because the extension block no longer fills the message.
            assert mod.peek_client_hello(data) == NO_MATCH, (field, bad)
            assert decide(mod.peek_client_hello, data)[1] == NO_MATCH


@IMPLS
def test_record_length_mismatches(mod):
    message = handshake(hello_body())
    data = records(message)
    # A record longer than the message: the rest is another handshake message.
    longer = with_field(data + b"\x00", 3, 2, len(message) + 1)
    assert isinstance(mod.peek_client_hello(longer), mod.ClientHello)
    # A record shorter than the message: the next record must continue it.
    shorter = with_field(data, 3, 2, len(message) - 1)[:-1]
    assert decide(mod.peek_client_hello, shorter) == (len(shorter) + 1, NEED_MORE)
    assert mod.peek_client_hello(shorter + b"\x16\x03\x03\x00") == NEED_MORE
    continued = shorter + b"\x16\x03\x03\x00\x01" + data[-1:]
    assert _norm(mod.peek_client_hello(continued)) == _norm(mod.peek_client_hello(data))
    assert mod.peek_client_hello(shorter + b"\x17") == NO_MATCH
    assert mod.peek_client_hello(shorter + b"\x16\x03\x03\x00\x00") == NO_MATCH


@IMPLS
def test_client_hello_size_limits(mod):
    big = records(handshake(hello_body([ext(21, bytes(20000))])), [16000])
    assert mod.peek_client_hello(big) == NO_MATCH
    assert isinstance(mod.peek_client_hello(big, len(big)), mod.ClientHello)
    assert mod.peek_client_hello(big, len(big) - 1) == NO_MATCH
    assert mod.detect(big) == OPAQUE
    # Known too big once the second record header arrives.
    first = 5 + 16000
    assert mod.peek_client_hello(big[:first + 5], len(big) - 1) == NO_MATCH
    assert mod.peek_client_hello(big[:first + 5], len(big)) == NEED_MORE


# ---------------------------------------------------------------- the Detector


@IMPLS
def test_detector_bounds_its_buffer(mod):
    det = mod.Detector(max_size=10)
    assert det.feed(b"999999999") == NEED_MORE
    assert det.feed(b"9") == OPAQUE
    assert det.buffered == b"9999999999"
    # A decision within the first max_size bytes stands even when a read overshoots.
    det = mod.Detector(max_size=32)
    assert det.feed(b"PROPFIND / HTTP/1.1\r\nHost: web\r\n\r\n" + b"x" * 100) == HTTP1
    det = mod.Detector(max_size=16)
    assert det.feed(b"PROPFIND_MULTI_STATUS / HTTP/1.1\r\n") == HTTP1  # a huge method: the parser refuses it
    assert mod.Detector().max_size == 16384


@IMPLS
def test_detector_decision_sticks(mod):
    det = mod.Detector()
    assert det.feed(b"\x01") == OPAQUE
    assert det.feed(b"GET / HTTP/1.1\r\n") == OPAQUE
    assert det.buffered == b"\x01GET / HTTP/1.1\r\n"
    assert det.client_hello is None
    assert "Detector(" in repr(det)


# ---------------------------------------------------------------- fuzz


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _all_results(mod, data: bytes, max_size: int):
    hello = mod.peek_client_hello(data, max_size)
    if not isinstance(hello, int):
        assert isinstance(hello, mod.ClientHello)
        assert hello.sni is None or (hello.sni == hello.sni.lower() and hello.sni.isascii())
        assert all(isinstance(p, bytes) and p for p in hello.alpn)
    else:
        assert hello in (NEED_MORE, NO_MATCH)
    results = (
        mod.is_http1(data),
        mod.is_http1(data, max_size),
        mod.is_h2_preface(data),
        _norm(hello),
        mod.detect(data),
        mod.looks_like_http1(data),
        mod.looks_like_http1(data, max_size),
        mod.could_be_http1(data),
        mod.could_be_http1(data, max_size),
    )
    assert results[0] in (NEED_MORE, MATCH, NO_MATCH)
    assert results[1] in (NEED_MORE, MATCH, NO_MATCH)
    assert results[2] in (NEED_MORE, MATCH, NO_MATCH)
    assert results[4] in KINDS
    assert results[5] in (NEED_MORE, MATCH, NO_MATCH) and results[6] in (NEED_MORE, MATCH, NO_MATCH)
    assert results[7] in (True, False) and results[8] in (True, False)
    det = mod.Detector(max_size)
    assert det.feed(data) in KINDS
    return results


@FUZZ
@given(data=st.binary(max_size=600), max_size=st.integers(-2, 700))
def test_fuzz_arbitrary_bytes(data, max_size):
    assert _all_results(detect, data, max_size) == _all_results(pure, data, max_size)


_SEED_MESSAGE = handshake(hello_body())
_SEED = records(_SEED_MESSAGE)
_SEEDS = [_SEED, records(_SEED_MESSAGE, [1, 2, 40, 100])]


@FUZZ
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10_000),
    tail=st.binary(max_size=16),
)
def test_fuzz_mutated_client_hello(seed, edits, cut, tail):
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[:cut]) + tail
    assert _all_results(detect, data, 16384) == _all_results(pure, data, 16384)


@FUZZ
@given(st.lists(st.integers(1, 80), max_size=8))
def test_fuzz_fragmentation(sizes):
    data = records(_SEED_MESSAGE, sizes)
    expected = ("hello", SNI, (b"h2", b"http/1.1"), 0x0303)
    assert _norm(detect.peek_client_hello(data)) == expected
    assert _norm(pure.peek_client_hello(data)) == expected
    assert detect.peek_client_hello(data[:-1]) == NEED_MORE


_PREFIX_SEEDS = [
    b"", b"GET / ", b"PRI * HTTP/", b"\r\n", _SEED[:60], _SEEDS[1][:30], b"get ", b"G@T / ", b"x HTT", b" \r\nPOS",
]
# Bytes that steer the HTTP/1 look-alike scan.
_TEXTY = st.lists(
    st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\x00", b"HTTP/", b"http/1.1", b"GET", b"P", b"/", b"x", b"\xff"]),
    max_size=12,
).map(b"".join)


@FUZZ
@given(seed=st.sampled_from(_PREFIX_SEEDS), data=st.one_of(st.binary(max_size=48), _TEXTY))
def test_fuzz_prefixes_are_monotone(seed, data):
    data = seed + data
    for fn in (
        detect.detect, detect.is_http1, detect.is_h2_preface, detect.peek_client_hello, detect.looks_like_http1,
        pure.looks_like_http1,
    ):
        decide(fn, data)
    # Once ruled out, HTTP/1 stays ruled out: the timeout path and detection agree.
    ruled_out = [
        k for k in range(len(data) + 1) if data[:k].strip(b"\r\n\t ") and not detect.could_be_http1(data[:k])
    ]
    if ruled_out:
        assert all(not detect.could_be_http1(data[:k]) for k in range(ruled_out[0], len(data) + 1))
        assert detect.detect(data) != HTTP1
