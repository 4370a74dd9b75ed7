"""CORS as ASGI middleware: pages from the origins in `corsAllowedOrigins` may call the API and
fetch artifacts (streaming compilation needs `Access-Control-Allow-Origin` on the wasm).

An empty list (the default) changes nothing: same-origin only. A preflight from an allowed
origin is answered here with a bodiless 204; one from any other origin gets a 403 without
CORS headers, which the browser reports as refused. No credentials are ever allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
)

ALLOWED_METHODS: Final = "GET, POST, OPTIONS"
ALLOWED_HEADERS: Final = "Content-Type, Authorization"
EXPOSED_HEADERS: Final = "Retry-After"
MAX_AGE_SECONDS: Final = 600


def _header(scope: HTTPScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class Cors:
    def __init__(self, app: ASGIFramework, allowed_origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(allowed_origins)

    def allow_origin(self, origin: str) -> str | None:
        """The `Access-Control-Allow-Origin` value for `origin`, or None if refused."""
        if "*" in self.origins:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or not self.origins:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.allow_origin(origin)
        preflight = scope["method"] == "OPTIONS" and (
            _header(scope, b"access-control-request-method") is not None
        )
        if preflight:
            await self._preflight(origin, allowed, send)
            return
        if allowed is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"access-control-allow-origin", allowed.encode("latin-1")),
                    (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, allowed: str | None, send: ASGISendCallable) -> None:
        if allowed is None:
            body = json.dumps(
                {"ok": False, "error": f"origin {origin} is not in corsAllowedOrigins"}
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"vary", b"Origin")]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        headers = [
            (b"access-control-allow-origin", allowed.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
