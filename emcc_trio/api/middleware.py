"""The access log as ASGI middleware: one structured line per request, also for cancelled
ones, and the request counter. Routes add fields to the line with `log_fields()`."""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any, Final

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from emcc_trio.metrics import Metrics, route_of

CLIENT_CLOSED_STATUS: Final = 499  # logged only: nobody is left to receive it

access_log = logging.getLogger("emcc_trio.access")
_request_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("request_fields")


def log_fields() -> dict[str, Any]:
    """The current request's access-log fields (a throwaway dict outside a request)."""
    return _request_fields.get({})


class AccessLog:
    def __init__(self, app: ASGIFramework, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields: dict[str, Any] = {"method": scope["method"], "path": scope["path"]}
        token = _request_fields.set(fields)
        status = CLIENT_CLOSED_STATUS
        start = time.perf_counter()

        async def send_and_record(message: ASGISendEvent) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            _request_fields.reset(token)
            fields["status"] = status
            fields["ms"] = round((time.perf_counter() - start) * 1000, 1)
            access_log.info("request", extra={"fields": fields})
            self.metrics.requests.labels(route_of(scope["path"]), str(status)).inc()
