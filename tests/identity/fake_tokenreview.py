"""A mock Kubernetes API server for TokenReview, because no real API server can run here.

It serves only ``POST /apis/authentication.k8s.io/v1/tokenreviews`` over TLS,
answering from ``tokenreview_recorded.json`` (the API's response shapes): a
review of a known token gets its recorded TokenReview, any other token the
"not authenticated" answer's shape; a caller without the issuer's bearer
token gets the recorded 401 ``Status``; a test can switch the server to the
recorded 403 (RBAC) or 500 answers. Every request is kept for assertions.
"""

from __future__ import annotations

import copy
import json
import ssl
from pathlib import Path

from aiohttp import web

RECORDED = json.loads((Path(__file__).parent / "tokenreview_recorded.json").read_text())
PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


class FakeTokenReviewApi:
    def __init__(self, caller_token: str, ssl_context: ssl.SSLContext) -> None:
        self.caller_token = caller_token
        self.ssl_context = ssl_context
        self.mode = "normal"  # or "forbidden", "internal_error"
        self.requests: list[tuple[str | None, dict]] = []  # (Authorization, body)
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(PATH, self._review)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _review(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.headers.get("Authorization"), body))
        if request.headers.get("Authorization") != f"Bearer {self.caller_token}":
            return self._answer(RECORDED["unauthorized"])
        if self.mode != "normal":
            return self._answer(RECORDED[self.mode])
        assert body["apiVersion"] == "authentication.k8s.io/v1" and body["kind"] == "TokenReview"
        token = body["spec"]["token"]
        recorded = RECORDED["reviews"].get(token)
        if recorded is None:
            recorded = copy.deepcopy(RECORDED["reviews"]["expired-or-forged"])
            recorded["body"]["spec"]["token"] = token
        return self._answer(recorded)

    @staticmethod
    def _answer(recorded: dict) -> web.Response:
        return web.json_response(recorded["body"], status=recorded["status"])
