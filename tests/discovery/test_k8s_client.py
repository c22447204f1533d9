"""The Kubernetes API client against the mock API server (TLS, tokens) and against hostile scripted servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time

import pytest
from cryptography.hazmat.primitives import serialization

from proxy import config
from proxy.discovery import k8s_client
from proxy.discovery.k8s_client import ApiError, EventTooLarge, Gone, KubeApi, Unavailable, endpoint
from proxy.identity import ca

from .fakeapi import FakeApiServer

SERVICES = "/api/v1/services"


def settings(url: str | None, token_file: str = "/nonexistent/token", ca_file: str = "/nonexistent/ca.crt",
             **extra: str):
    env = {config.DESTINATION: "k8s", config.K8S_TOKEN_FILE: token_file, config.K8S_CA_FILE: ca_file, **extra}
    if url is not None:
        env[config.K8S_API] = url
    return config.load(env).discovery


def make_pki(out):
    """A test CA in ``out``/ca.crt (and another, other.crt); a server context with a certificate for 127.0.0.1."""
    root = ca.create_root("k8s.test", dt.timedelta(hours=1))
    key = ca.new_key()
    leaf = ca.sign_leaf(root, key.public_key(), "kube-apiserver", ca.host_sans("127.0.0.1"), dt.timedelta(hours=1))
    (out / "ca.crt").write_bytes(ca.cert_pem(root.cert))
    (out / "other.crt").write_bytes(ca.cert_pem(ca.create_root("other.test", dt.timedelta(hours=1)).cert))
    (out / "server.crt").write_bytes(ca.cert_pem(leaf))
    (out / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(out / "server.crt", out / "server.key")
    return out / "ca.crt", server


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki")
    return out, make_pki(out)[1]


def test_tls_verified_token_reread_on_rotation_and_kept_alive(run, pki, tmp_path):
    out, server_tls = pki
    token = tmp_path / "token"
    token.write_text("first-token\n")

    async def main():
        api = await FakeApiServer(tls=server_tls).start()
        api.token = "first-token"
        client = KubeApi(settings(api.url, str(token), str(out / "ca.crt")), request_timeout=2.0)
        await client.open()
        try:
            listed = await client.get(SERVICES, {"limit": "1"})
            assert listed["kind"] == "ServiceList" and len(listed["items"]) == 1
            # The kubelet rotates the projected token (a symlink swap: a new inode).
            rotated = tmp_path / "token.new"
            rotated.write_text("second-token\n")
            rotated.replace(token)
            api.token = "second-token"
            await client.get(SERVICES)
            assert [auth for _, _, auth in api.requests] == ["Bearer first-token", "Bearer second-token"]
            assert len(set(api.peers)) == 1  # one kept-alive TLS connection for both
            events = client.watch(SERVICES, {"resourceVersion": listed["metadata"]["resourceVersion"]}, 1)
            assert [e async for e in events] == []  # the stream ends at timeoutSeconds, over TLS too
        finally:
            await client.close()
            await api.stop()

    run(main())


def test_tls_with_the_wrong_ca_fails_clearly(run, pki):
    out, server_tls = pki

    async def main():
        api = await FakeApiServer(tls=server_tls).start()
        client = KubeApi(settings(api.url, ca_file=str(out / "other.crt")), request_timeout=2.0)
        await client.open()
        try:
            with pytest.raises(Unavailable, match="TLS: CERTIFICATE_VERIFY_FAILED"):
                await client.get(SERVICES)
            hostname = KubeApi(settings(f"https://localhost:{api.port}", ca_file=str(out / "ca.crt")), 2.0)
            await hostname.open()  # the certificate names 127.0.0.1 only
            with pytest.raises(Unavailable, match="TLS"):
                await hostname.get(SERVICES)
            await hostname.close()
        finally:
            await client.close()
            await api.stop()

    run(main())


def test_unauthorized_and_forbidden_are_api_errors(run, tmp_path):
    token = tmp_path / "token"
    token.write_text("stale")

    async def main():
        api = await FakeApiServer().start()
        client = KubeApi(settings(api.url, str(token)), request_timeout=2.0)
        await client.open()
        try:
            api.token = "fresh"
            with pytest.raises(ApiError) as info:
                await client.get(SERVICES)
            assert info.value.status == 401 and "Unauthorized" in str(info.value)
            api.token, api.forbidden = None, True
            with pytest.raises(ApiError) as info:
                [e async for e in client.watch(SERVICES, {}, 1)]
            assert info.value.status == 403 and "cannot list resource" in str(info.value)
        finally:
            await client.close()
            await api.stop()

    run(main())


def test_the_client_is_the_standard_library_only():
    import subprocess
    import sys

    code = ("import sys, proxy.discovery.k8s; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes_asyncio', 'aiohttp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- configuration ------------------------------------------------------------------------


def test_in_cluster_and_explicit_endpoints():
    v6 = endpoint(settings(None), {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert (v6.tls, v6.authority, v6.url) == (True, "[fd00:10:96::1]:443", "https://[fd00:10:96::1]:443")
    v4 = endpoint(settings(None), {"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert (v4.host, v4.port) == ("10.96.0.1", 443)
    with pytest.raises(config.ConfigError, match="not in a cluster"):
        endpoint(settings(None), {})
    with pytest.raises(config.ConfigError, match="not a port"):
        endpoint(settings(None), {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "https"})
    proxied = endpoint(settings("http://admin:s%40cret@[::1]:8001/k8s/"))
    assert (proxied.tls, proxied.authority, proxied.prefix) == (False, "[::1]:8001", "/k8s")
    assert proxied.basic == "Basic YWRtaW46c0BjcmV0"  # admin:s@cret
    for bad in ("ftp://h", "https://", "https://h:99999"):
        with pytest.raises(config.ConfigError) as info:
            endpoint(settings(bad))
        assert "s3cret" not in str(info.value)


def test_in_cluster_needs_the_ca_file(run, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    with pytest.raises(config.ConfigError, match="CA file"):
        run(KubeApi(settings(None)).open())


# ---- hostile and broken servers ---------------------------------------------------------------


class Scripted:
    """A server that reads one request head and answers with the test's bytes (``respond(writer)``)."""

    def __init__(self, respond) -> None:
        self.respond = respond
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")]
                self.bodies.append(await reader.readexactly(length[0]) if length else b"")
                if await self.respond(writer) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
ADDED = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "ünïcode-名", "resourceVersion": "5"}}},
                   ensure_ascii=False).encode() + b"\n"


def client_for(url: str, timeout: float = 1.0, **extra: str) -> KubeApi:
    return KubeApi(settings(url, **extra), request_timeout=timeout)


async def drain(client: KubeApi, timeout_seconds: int = 5) -> list[dict]:
    return [e async for e in client.watch(SERVICES, {"resourceVersion": "1"}, timeout_seconds)]


def test_watch_lines_split_across_chunks_and_characters(run):
    async def respond(writer):
        stream = ADDED * 3
        writer.write(CHUNKED_HEAD)
        for at in range(0, len(stream), 7):  # boundaries inside lines and inside UTF-8 sequences
            writer.write(chunk(stream[at:at + 7]))
            await writer.drain()
        writer.write(chunk(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}'))  # no newline
        writer.write(b"0\r\n\r\n")
        return False

    async def main():
        async with Scripted(respond) as server:
            client = client_for(server.url)
            await client.open()
            events = await drain(client)
            assert [e["object"]["metadata"]["name"] for e in events[:3]] == ["ünïcode-名"] * 3
            assert events[3]["type"] == "BOOKMARK" and len(events) == 4
            head = server.heads[0].decode()
            assert head.startswith("GET /api/v1/services?resourceVersion=1&watch=true&allowWatchBookmarks=true"
                                   "&timeoutSeconds=5 HTTP/1.1\r\n")
            assert f"Host: {server.url[7:]}\r\n" in head and "Authorization" not in head
            await client.close()

    run(main())


@pytest.mark.parametrize("tail, error, match", [
    (ADDED[:20], Unavailable, "closed inside the response body"),  # stream cut mid-line
    (b"zz\r\n", Unavailable, "bad chunk size"),
    (b"3\r\nabcdef", Unavailable, "not followed by CRLF"),
    (chunk(b"not json\n"), Unavailable, "not JSON"),
    (chunk(b'{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version"}}\n'),
     Gone, "too old"),
    (chunk(b'{"type":"ERROR","object":{"kind":"Status","code":500,"message":"etcd"}}\n'), ApiError, "500: etcd"),
    (chunk(b"x" * 3000), EventTooLarge, "over 2048 bytes"),
])
def test_broken_watch_streams_raise_after_the_good_events(run, tail, error, match):
    async def respond(writer):
        writer.write(CHUNKED_HEAD + chunk(ADDED) + tail)
        await writer.drain()
        return False

    async def main():
        async with Scripted(respond) as server:
            client = client_for(server.url, **{config.K8S_MAX_EVENT_BYTES: "2048"})
            await client.open()
            events = client.watch(SERVICES, {}, 5)
            assert (await anext(events))["type"] == "ADDED"
            with pytest.raises(error, match=match):
                await anext(events)
            await client.close()

    run(main())


@pytest.mark.parametrize("answer, error, status", [
    (b"HTTP/1.1 410 Gone\r\nContent-Length: 31\r\n\r\n" + b'{"message":"gone","code":410}  ', Gone, 410),
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden", ApiError, 403),
    (b"HTTP/1.1 200 OK\r\nX: y\r\n" + b"X-Endless: " + b"a" * 100_000, Unavailable, 0),  # head never ends
    (b"HTTP/1.1 200 OK\r\nX-Half: y\r\n", Unavailable, 0),  # then silence: the time limit
    (b"", Unavailable, 0),  # silence from the start
    (b"ICY 200 OK\r\n\r\n", Unavailable, 0),
])
def test_bad_answers_to_a_request_are_clear_errors(run, answer, error, status):
    async def respond(writer):
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(3)  # neither closing nor finishing
        return False

    async def main():
        async with Scripted(respond) as server:
            client = client_for(server.url, timeout=0.5)
            await client.open()
            started = time.monotonic()
            for call in (client.get(SERVICES), drain(client)):
                with pytest.raises(error) as info:
                    await call
                assert info.value.status == status
                assert status or str(info.value).startswith(server.url)  # which server, and why
            assert time.monotonic() - started < 2.5  # each bounded by the request time limit
            await client.close()

    run(main())


def test_a_silent_watch_is_dead_after_timeout_seconds_and_a_margin(run, monkeypatch):
    monkeypatch.setattr(k8s_client, "WATCH_SILENCE", 0.3)

    async def respond(writer):
        writer.write(CHUNKED_HEAD + chunk(ADDED))
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async def main():
        async with Scripted(respond) as server:
            client = client_for(server.url)
            await client.open()
            events = client.watch(SERVICES, {}, 0)
            await anext(events)
            started = time.monotonic()
            with pytest.raises(Unavailable, match="time limit, reading the watch stream"):
                await anext(events)
            assert 0.2 < time.monotonic() - started < 2
            await client.close()

    run(main())


def test_requests_keep_alive_post_and_oversized_responses(run, tmp_path):
    token = tmp_path / "token"
    token.write_text("sa-token")
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b'{"kind":') + chunk(b'"X"}')
               + b"0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
               ]

    async def respond(writer):
        writer.write(answers.pop(0))
        await writer.drain()

    async def main():
        async with Scripted(respond) as server:
            client = client_for(server.url, token_file=str(token), **{config.K8S_MAX_RESPONSE_BYTES: "4096"})
            await client.open()
            assert await client.get("/api/v1/namespaces/default/pods/web 1") == {}
            review = {"kind": "TokenReview", "spec": {"token": "x"}}
            assert await client.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review) == {"kind": "X"}
            with pytest.raises(Unavailable, match="over 4096"):
                await client.get(SERVICES)
            assert server.connections == 1  # kept alive until the oversized answer
            first, second = (h.decode() for h in server.heads[:2])
            assert first.startswith("GET /api/v1/namespaces/default/pods/web%201 HTTP/1.1\r\n")
            assert "Authorization: Bearer sa-token\r\n" in first and "Content-Length" not in first
            assert second.startswith("POST /apis/authentication.k8s.io/v1/tokenreviews HTTP/1.1\r\n")
            assert "Content-Type: application/json\r\n" in second and json.loads(server.bodies[1]) == review
            await client.close()

    run(main())


def test_a_kept_alive_connection_the_server_closed_is_replaced(run):
    async def respond(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        return False  # closes after each answer, without saying Connection: close

    async def main():
        async with Scripted(respond) as server:
            client = client_for(server.url)
            await client.open()
            for _ in range(3):
                assert await client.get(SERVICES) == {}
                await asyncio.sleep(0.05)
            assert server.connections == 3
            await client.close()

    run(main())


def test_a_server_that_closes_without_answering(run):
    async def respond(writer):
        return False  # reads the request, closes

    async def main():
        async with Scripted(respond) as server:
            client = client_for(server.url)
            await client.open()
            for call in (client.get(SERVICES), drain(client)):
                with pytest.raises(Unavailable, match="closed the connection before answering"):
                    await call
            await client.close()

    run(main())


def test_the_limits_default_alike_for_code_that_builds_its_settings():
    from proxy.config import DiscoverySettings

    loaded = settings(None)
    defaults = DiscoverySettings._defaults
    assert loaded.k8s_max_event_bytes == defaults["k8s_max_event_bytes"] == 4 << 20
    assert loaded.k8s_max_response_bytes == defaults["k8s_max_response_bytes"] == 64 << 20
