"""Real clients and real servers through the real proxies: the tools users run behind a sidecar.

tests/integration/test_matrix.py drives the proxies with the suite's own clients and apps; this module uses
curl, wget, requests, urllib3, httpx (HTTP/1.1 and HTTP/2), aiohttp, Node's http, http2, fetch (undici) and
ws, and Go's net/http as clients, and Node's http and http2 servers, Python's http.server (HTTP/1.0),
gunicorn, uvicorn, nginx, caddy and Go's net/http (HTTP/1.1 and h2c) as apps.

Everything runs in one network namespace the module creates, as in a pod with iptables redirection: a
client simply dials ``HOP_IP:app port`` and iptables sends it to a proxy (run under the group the nat rules
exempt). Hops:

- ``out``:  127.0.0.3 -> proxy P1's outbound listener -> the app (SO_ORIGINAL_DST);
- ``in``:   127.0.0.2 -> P1's inbound listener -> the app on 127.0.0.1;
- ``mtls``: 127.0.0.5 -> proxy A's outbound listener, whose endpoints file names the address as a service
            behind proxy B -> mutual TLS (identities from the test issuer) -> B's inbound listener -> app.

Each cell: a small request, an upload and a download of LARGE pattern bytes (checked by sha256), an error
response and a request after it, all on one client connection where the client keeps connections alive (the
accepting proxy's count of accepted connections must grow by exactly one). After each cell every proxy is
running and has written no traceback. A tool that is missing is a failure naming the install step.

Pairings that cannot work are not cells: an HTTP/1 client to an app that speaks only prior-knowledge
HTTP/2 (the proxy answers 502), and an HTTP/2 request body of unknown length (Node's http2 client) to an
HTTP/1.0 app, which cannot read the chunked body it becomes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.clients import clean_env
from helpers.realapps.world import (
    APPS_DIR,
    BLOB,
    BLOB_SHA,
    HOPS,
    LARGE,
    NODE_MODULES,
    STEP_TIMEOUT,
    UPLOAD_ANSWER,
    World,
    sha,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("realclients"))
    try:
        w.start()
        yield w
    finally:
        w.stop()


@pytest.fixture(autouse=True)
def _healthy_proxies(world):
    """Every test runs inside the namespace and leaves every proxy running without a traceback."""
    marks = {name: mp.mark() for name, mp in world.proxies.items()}
    with world.ns:
        yield
    for name, mp in world.proxies.items():
        assert mp.running(), f"{name} exited;\n{mp.tail()}"
        bad = [line for line in mp.lines(marks[name]) if "Traceback" in line or "Exception in callback" in line]
        assert not bad, f"{name} wrote a traceback:\n" + "\n".join(mp.lines(marks[name])[-60:])


# ---------------------------------------------------------------------------
# what a cell must have seen


@dataclass
class Got:
    status: int
    body: bytes

    @staticmethod
    def of(summary: dict[str, Any]) -> Got:
        """From a JSON summary a Node or Go client printed (digest and length instead of the body)."""
        return Got(summary["status"], summary["text"].encode("latin-1") if summary["length"] <= 200
                   else f"sha256:{summary['sha256']}:{summary['length']}".encode())


def _digest_view(got: Got) -> str:
    if got.body.startswith(b"sha256:"):
        return got.body.decode()
    return f"sha256:{sha(got.body)}:{len(got.body)}"


def check_cell(results: dict[str, Got], *, upload_answer: str = UPLOAD_ANSWER) -> None:
    """The five steps of a cell, as every client reports them."""
    problems = []
    expect = {"small": (200, "ok"), "upload": (200, upload_answer), "error": (404, None), "after": (200, "ok")}
    for step, (status, text) in expect.items():
        got = results.get(step)
        if got is None:
            problems.append(f"{step}: no result")
        elif got.status != status or (text is not None and got.body.decode("latin-1").strip() != text):
            problems.append(f"{step}: {got.status} {got.body[:200]!r}")
    download = results.get("download")
    if download is None or download.status != 200 or _digest_view(download) != f"sha256:{BLOB_SHA}:{LARGE}":
        problems.append(f"download: {download and download.status} {download and _digest_view(download)}")
    assert not problems, "; ".join(problems)


def one_connection(world: World, hop: str, run: Callable[[], Any], expected: int = 1) -> Any:
    """Run a client; the accepting proxy must have accepted exactly ``expected`` connections for it."""
    before = world.accepted(hop)
    out = run()
    opened = world.accepted(hop) - before
    assert opened == expected, f"the client opened {opened:g} connections where keep-alive needs {expected}"
    return out


# ---------------------------------------------------------------------------
# Python clients, in this process (inside the namespace)


def _requests_cell(base: str) -> dict[str, Got]:
    import requests

    with requests.Session() as s:
        def go(method: str, path: str, body: bytes | None = None) -> Got:
            r = s.request(method, base + path, data=body, timeout=STEP_TIMEOUT)
            return Got(r.status_code, r.content)
        return _steps(go)


def _urllib3_cell(base: str) -> dict[str, Got]:
    import urllib3

    with urllib3.PoolManager(maxsize=1, retries=False, timeout=STEP_TIMEOUT) as pool:
        def go(method: str, path: str, body: bytes | None = None) -> Got:
            r = pool.request(method, base + path, body=body)
            return Got(r.status, r.data)
        return _steps(go)


def _httpx_cell(base: str, http2: bool) -> dict[str, Got]:
    import httpx

    # http1=False: HTTP/2 with prior knowledge over cleartext (h2c), which is how httpx speaks h2 without TLS.
    with httpx.Client(http1=not http2, http2=http2, timeout=STEP_TIMEOUT) as client:
        def go(method: str, path: str, body: bytes | None = None) -> Got:
            r = client.request(method, base + path, content=body)
            assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1"), r.http_version
            return Got(r.status_code, r.content)
        return _steps(go)


def _aiohttp_cell(base: str) -> dict[str, Got]:
    import aiohttp

    async def run() -> dict[str, Got]:
        out = {}
        timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as s:
            for step, method, path, body in _STEPS:
                async with s.request(method, base + path, data=body) as r:
                    out[step] = Got(r.status, await r.read())
        return out

    return asyncio.run(run())


_STEPS: list[tuple[str, str, str, bytes | None]] = [
    ("small", "GET", "/small", None),
    ("upload", "POST", "/upload", BLOB),
    ("download", "GET", f"/download?n={LARGE}", None),
    ("error", "GET", "/missing", None),
    ("after", "GET", "/small", None),
]


def _steps(go: Callable[..., Got]) -> dict[str, Got]:
    return {step: go(method, path, body) for step, method, path, body in _STEPS}


PY_CLIENTS: dict[str, tuple[str, Callable[[str], dict[str, Got]]]] = {
    # client: (app, cell)
    "requests": ("node-h1", _requests_cell),
    "urllib3": ("node-h1", _urllib3_cell),
    "httpx": ("node-h1", lambda base: _httpx_cell(base, False)),
    "httpx-h2c": ("node-h2c", lambda base: _httpx_cell(base, True)),
    "httpx-h2c-to-h1-app": ("node-h1", lambda base: _httpx_cell(base, True)),
    "aiohttp": ("node-h1", _aiohttp_cell),
}


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("client", list(PY_CLIENTS))
def test_python_client(world, client, hop):
    app, cell = PY_CLIENTS[client]
    base = world.base(app, hop)
    check_cell(one_connection(world, hop, lambda: cell(base)))


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("app", ["python-http10", "gunicorn", "uvicorn", "go-h1"])
def test_http2_client_to_http1_apps(world, app, hop):
    """httpx over HTTP/2 to HTTP/1 apps: the proxy speaks HTTP/1.1 to the app (HTTP/1.0 answers and
    close-delimited bodies included) and HTTP/2 to the client."""
    check_cell(one_connection(world, hop, lambda: _httpx_cell(world.base(app, hop), True)))


# ---------------------------------------------------------------------------
# Node and Go clients, as child processes (started inside the namespace)


def _run_json(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(cmd, env=clean_env(**(env or {})), capture_output=True, text=True, timeout=90,
                          cwd=APPS_DIR)
    assert done.returncode == 0, f"{cmd[:3]} exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


# undici (Node 20's fetch) opens a second connection for its first request with a body, without any proxy
# on the way too; every other client here keeps one.
CONNECTIONS = {"node-fetch": 2}

PROCESS_CLIENTS: dict[str, tuple[str, Callable[[World, str], list[str]]]] = {
    "node-http": ("node-h1", lambda w, base: ["node", "client.js", "http", base, str(LARGE)]),
    "node-http2": ("node-h2c", lambda w, base: ["node", "client.js", "http2", base, str(LARGE)]),
    "node-http2-to-h1-app": ("node-h1", lambda w, base: ["node", "client.js", "http2", base, str(LARGE)]),
    "node-fetch": ("node-h1", lambda w, base: ["node", "client.js", "fetch", base, str(LARGE)]),
    "go-h1": ("go-h1", lambda w, base: [w.go["client"], "h1", base, str(LARGE)]),
    "go-h2c": ("go-h2c", lambda w, base: [w.go["client"], "h2c", base, str(LARGE)]),
}


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("client", list(PROCESS_CLIENTS))
def test_process_client(world, client, hop):
    app, command = PROCESS_CLIENTS[client]
    cmd = command(world, world.base(app, hop))
    out = one_connection(world, hop, lambda: _run_json(cmd, {"NODE_PATH": str(NODE_MODULES)}),
                         expected=CONNECTIONS.get(client, 1))
    check_cell({step: Got.of(summary) for step, summary in out.items()})


@pytest.mark.parametrize("hop", HOPS)
def test_node_ws_websocket(world, hop):
    """ws (npm): the upgrade, a text message and LARGE bytes echoed in one binary message, a clean close."""
    base = world.base("node-h1", hop)
    out = one_connection(world, hop, lambda: _run_json(["node", "client.js", "ws", base, str(LARGE)],
                                                       {"NODE_PATH": str(NODE_MODULES)}))["ws"]
    assert out["small"] == "small", out
    assert out["echo"] and (out["echo"]["sha256"], out["echo"]["length"]) == (BLOB_SHA, LARGE), out
    assert out["code"] == 1000, out


# ---------------------------------------------------------------------------
# curl and wget


@dataclass
class Transfer:
    status: int
    connects: int
    body: bytes
    head: str  # the response head(s) and any trailers, as curl dumped them

    def got(self) -> Got:
        return Got(self.status, self.body)


H2_PRIOR = "--http2-prior-knowledge"


def curl_connections(transfers: list[list[str]]) -> int:
    """Connections curl needs for ``transfers``. Debian 12's curl 7.88.1 cannot reuse a prior-knowledge
    HTTP/2 connection (its second request fails with "Error in the HTTP2 framing layer" against Node's own
    h2c server too), so each such transfer gets a connection of its own."""
    return len(transfers) if any(H2_PRIOR in t for t in transfers) else 1


def curl_transfers(tmp: Path, transfers: list[list[str]], stdin: bytes | None = None) -> list[Transfer]:
    """Several transfers in one curl run (``--next``: one connection, which the proxy must keep), or one run
    each for prior-knowledge HTTP/2 (see ``curl_connections``). curl's own count of connects is checked."""
    runs = [transfers] if curl_connections(transfers) == 1 else [[t] for t in transfers]
    out: list[Transfer] = []
    for run in runs:
        args: list[str] = []
        first = len(out)
        for i, transfer in enumerate(run, first):
            if i > first:
                args.append("--next")
            args += ["-sS", "--max-time", "60", "-o", str(tmp / f"body{i}"), "-D", str(tmp / f"head{i}"),
                     "-w", "%{http_code} %{num_connects}\\n", *transfer]
        done = subprocess.run(["curl", *args], input=stdin, capture_output=True, timeout=120, env=clean_env())
        assert done.returncode == 0, f"curl exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
        lines = done.stdout.decode().split()
        for i in range(len(run)):
            body = tmp / f"body{first + i}"
            out.append(Transfer(int(lines[2 * i]), int(lines[2 * i + 1]),
                                body.read_bytes() if body.exists() else b"",
                                (tmp / f"head{first + i}").read_text(errors="replace")))
        connects = [t.connects for t in out[first:]]
        assert connects == [1] + [0] * (len(run) - 1), f"curl did not keep its connection: {connects}"
    return out


def curl_run(world: World, hop: str, tmp: Path, transfers: list[list[str]],
             stdin: bytes | None = None) -> list[Transfer]:
    """``curl_transfers``, checking that the proxy accepted no more connections than curl made."""
    return one_connection(world, hop, lambda: curl_transfers(tmp, transfers, stdin),
                          expected=curl_connections(transfers))


def curl_cell(tmp: Path, base: str, *flags: str, upload: list[str] | None = None,
              upload_path: str = "/upload") -> dict[str, Transfer]:
    blob = tmp / "blob"
    if not blob.exists():
        blob.write_bytes(BLOB)
    steps = {
        "small": [*flags, f"{base}/small"],
        "upload": [*flags, *(upload or ["--data-binary", f"@{blob}"]), f"{base}{upload_path}"],
        "download": [*flags, f"{base}/download?n={LARGE}"],
        "error": [*flags, f"{base}/missing"],
        "after": [*flags, f"{base}/small"],
    }
    return dict(zip(steps, curl_transfers(tmp, list(steps.values()))))


SERVERS: dict[str, tuple[str, ...]] = {
    # app: curl's flags for it
    "node-h1": (),
    "node-h2c": ("--http2-prior-knowledge",),
    "python-http10": (),
    "gunicorn": (),
    "uvicorn": (),
    "nginx": (),
    "caddy": (),
    "go-h1": (),
    "go-h2c": ("--http2-prior-knowledge",),
}


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("server", list(SERVERS))
def test_server(world, server, hop, tmp_path):
    """curl against each real server: the cell on one client connection, whatever the app does with its own."""
    base = world.base(server, hop)
    flags = SERVERS[server]
    expected = 5 if H2_PRIOR in flags else 1
    if server == "nginx":
        # nginx stores a PUT (WebDAV): the digest is checked on the file it wrote.
        target = world.nginx_uploads / f"{hop}.bin"
        target.unlink(missing_ok=True)
        put = ["-T", str(tmp_path / "blob")]
        out = one_connection(world, hop, lambda: curl_cell(tmp_path, base, *flags, upload=put,
                                                           upload_path=f"/upload/{hop}.bin"), expected=expected)
        assert out["upload"].status == 201, out["upload"]
        assert sha(target.read_bytes()) == BLOB_SHA
        out["upload"] = Transfer(200, 0, UPLOAD_ANSWER.encode(), "")
    else:
        out = one_connection(world, hop, lambda: curl_cell(tmp_path, base, *flags), expected=expected)
    check_cell({step: t.got() for step, t in out.items()})


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("flags", [(), ("--http2",), ("--http2-prior-knowledge",)], ids=["h1", "h2c-upgrade", "h2c"])
def test_curl_basic(world, flags, hop, tmp_path):
    """The cell with curl to an HTTP/1.1 app; ``--http2`` asks for an h2c upgrade on the first request."""
    expected = 5 if H2_PRIOR in flags else 1
    out = one_connection(world, hop, lambda: curl_cell(tmp_path, world.base("node-h1", hop), *flags), expected=expected)
    check_cell({step: t.got() for step, t in out.items()})
    if not flags:
        # curl asked `Expect: 100-continue` for its large body; the interim answer must come (else curl
        # waits a second, then sends anyway, and the cell passes slowly)
        assert out["upload"].head.startswith("HTTP/1.1 100 Continue"), out["upload"].head


@pytest.mark.parametrize("hop", HOPS)
def test_curl_h2c_upgrade_to_an_h2c_app(world, hop, tmp_path):
    """``--http2`` to Go's h2c server, which would accept the upgrade if it reached it."""
    out = one_connection(world, hop, lambda: curl_cell(tmp_path, world.base("go-h2c", hop), "--http2"))
    check_cell({step: t.got() for step, t in out.items()})


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("app", ["node-h1", "go-h2c"])
def test_curl_h2c_upgrade_offered_with_an_upload(world, app, hop, tmp_path):
    """``--http2`` on a first request that carries a large body (Upgrade, HTTP2-Settings and
    ``Expect: 100-continue`` together): the upgrade is declined, the body and the next request go through."""
    base = world.base(app, hop)
    blob = tmp_path / "blob"
    blob.write_bytes(BLOB)
    upload, download = curl_run(world, hop, tmp_path, [
        ["--http2", "--data-binary", f"@{blob}", f"{base}/upload"],
        ["--http2", f"{base}/download?n={LARGE}"],
    ])
    assert (upload.status, upload.body.decode()) == (200, UPLOAD_ANSWER), upload
    assert upload.head.startswith("HTTP/1.1 100 Continue") and "HTTP/2" not in upload.head, upload.head
    assert (download.status, sha(download.body)) == (200, BLOB_SHA)


@pytest.mark.parametrize("hop", HOPS)
def test_curl_expect_and_chunked_uploads(world, hop, tmp_path):
    """``Expect: 100-continue`` asked for a small body, and a chunked upload from stdin (``-T -``)."""
    base = world.base("node-h1", hop)
    small = b"a small body"
    transfers = curl_run(world, hop, tmp_path, [
        ["-H", "Expect: 100-continue", "--data-binary", small.decode(), f"{base}/upload"],
        ["-T", "-", f"{base}/upload"],
        [f"{base}/small"],
    ], stdin=BLOB)
    assert (transfers[0].status, transfers[0].body.decode()) == (200, f"{sha(small)} {len(small)}")
    assert transfers[0].head.startswith("HTTP/1.1 100 Continue"), transfers[0].head
    assert (transfers[1].status, transfers[1].body.decode()) == (200, UPLOAD_ANSWER), transfers[1]
    assert (transfers[2].status, transfers[2].body) == (200, b"ok")


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("flags", [(), ("--http2-prior-knowledge",)], ids=["h1", "h2c"])
def test_curl_head_range_compressed(world, hop, flags, tmp_path):
    """HEAD, a range request and ``--compressed``, against nginx, on one connection."""
    base = world.base("nginx", hop)
    text = b"compressible text, " * 4000
    transfers = curl_run(world, hop, tmp_path, [
        [*flags, "-I", f"{base}/download"],
        [*flags, "-r", "1000-2999", f"{base}/download"],
        [*flags, "--compressed", f"{base}/text"],
        [*flags, f"{base}/small"],
    ])
    head, ranged, gz, small = transfers
    # curl -I writes the head where the body would go: nothing may follow it
    assert head.status == 200 and head.body.endswith(b"\r\n\r\n") and len(head.body) < 1024, head
    assert f"content-length: {LARGE}" in head.head.lower(), head
    assert ranged.status == 206 and ranged.body == bytes(BLOB[1000:3000]), (ranged.status, ranged.head)
    assert gz.status == 200 and gz.body == text and "content-encoding: gzip" in gz.head.lower(), gz.head
    assert (small.status, small.body) == (200, b"ok")


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("flags", [(), ("--http2-prior-knowledge",)], ids=["h1", "h2c"])
def test_curl_no_body_statuses_and_trailers(world, hop, flags, tmp_path):
    """204 and 304 (no body, whatever framing the app sends) and a trailer after a chunked body."""
    base = world.base("node-h1", hop)
    transfers = curl_run(world, hop, tmp_path, [
        [*flags, f"{base}/status/204"],
        [*flags, f"{base}/status/304"],
        [*flags, f"{base}/trailers"],
        [*flags, f"{base}/small"],
    ])
    assert [(t.status, t.body) for t in transfers[:2]] == [(204, b""), (304, b"")]
    trailers = transfers[2]
    assert (trailers.status, trailers.body) == (200, b"with trailers")
    assert "x-checksum: abc123" in trailers.head.lower(), trailers.head
    assert (transfers[3].status, transfers[3].body) == (200, b"ok")


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("app", ["node-h1", "python-http10"])
def test_wget(world, app, hop, tmp_path):
    """wget: three downloads in one run (one connection, also past an HTTP/1.0 app that closes its own
    after each answer), an upload (--post-file) and a 404."""
    base = world.base(app, hop)
    blob = tmp_path / "blob"
    blob.write_bytes(BLOB)
    got = tmp_path / "got"

    def run() -> None:
        done = subprocess.run(["wget", "-q", "--tries=1", "--timeout=60", "-O", str(got), f"{base}/small",
                               f"{base}/download?n={LARGE}", f"{base}/small"],
                              capture_output=True, timeout=90, env=clean_env())
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    one_connection(world, hop, run)
    assert sha(got.read_bytes()) == sha(b"ok" + BLOB + b"ok")
    done = subprocess.run(["wget", "-q", "--tries=1", "--timeout=60", "-O", "-", f"--post-file={blob}",
                           f"{base}/upload"], capture_output=True, timeout=90, env=clean_env())
    assert done.returncode == 0 and done.stdout.decode() == UPLOAD_ANSWER, done
    done = subprocess.run(["wget", "-S", "--tries=1", "--timeout=60", "--content-on-error", "-O", "-",
                           f"{base}/missing"], capture_output=True, timeout=90, env=clean_env())
    assert done.returncode == 8 and done.stdout == b"not found" and b"404" in done.stderr, done
