"""The Quart-Trio app: routes, JSON errors, and the one-line-per-request access log."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from pathlib import Path
from typing import Any, Final

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from emcc_trio.api import bodies, openapi, playground
from emcc_trio.api.clients import Client, identify
from emcc_trio.api.tokens import bearer_token
from emcc_trio.compile import diagnostics
from emcc_trio.compile.compiler import CompileResult, InternalJobError, new_job_id
from emcc_trio.compile.gate import QueueFullError, QueueTimeoutError
from emcc_trio.compile.policy import CompileRequest, RequestError
from emcc_trio.compile.service import Service, usage_json
from emcc_trio.isolation.runner import JobStartError
from emcc_trio.metrics import Metrics, route_of
from emcc_trio.storage.artifacts import ARTIFACT_FILES
from emcc_trio.storage.base import FlightWaitTimeoutError, StoreUnavailableError
from emcc_trio.storage.cache import FlightCancelledError

LIMIT_STATUS: Final = 422
BUSY_STATUS: Final = 503
TOO_MANY_STATUS: Final = 429
CLIENT_CLOSED_STATUS: Final = 499  # logged only: nobody is left to receive it
IMMUTABLE_CACHE: Final = "public, max-age=31536000, immutable"

log = logging.getLogger("emcc_trio.app")
access_log = logging.getLogger("emcc_trio.access")
_request_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("request_fields")

LIMIT_MESSAGES: Final = {
    "memory": "the compile exceeded its memory cap (jobMemoryMaxMB) and was killed",
    "pids": "the compile exceeded its process cap (jobPidsMax)",
    "cpu": "the compile exceeded its CPU-time cap (jobCpuSeconds) and was killed",
    "timeout": "the compile exceeded its wall-clock cap (jobTimeoutSeconds) and was killed",
    "output": "the compiler's output exceeded maxOutputBytes; the compile was stopped",
}


def json_error(status: int, message: str, **extra: Any) -> Response:
    body = {"ok": False, "error": message, **extra}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def json_ok(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def compile_response(result: CompileResult, cached: bool) -> Response:
    usage = usage_json(result.usage, result.duration_seconds)
    found = [d.to_json() for d in diagnostics.parse(result.output)]
    if result.ok:
        body = {
            "ok": True,
            "id": result.job_id,
            "js": f"/artifacts/{result.job_id}/app.js",
            # None for -sSINGLE_FILE: the wasm is inside app.js.
            "wasm": f"/artifacts/{result.job_id}/app.wasm" if "app.wasm" in result.files else None,
            "output": result.output,
            "diagnostics": found,
            "usage": usage,
            "cached": cached,
        }
        if "app.worker.js" in result.files:  # -pthread
            body["worker"] = f"/artifacts/{result.job_id}/app.worker.js"
        return json_ok(body)
    if result.limit is not None:
        message = LIMIT_MESSAGES[result.limit]
        if result.output:
            message += "\n" + result.output
        return json_error(
            LIMIT_STATUS,
            message,
            id=result.job_id,
            limit=result.limit,
            diagnostics=found,
            usage=usage,
        )
    error = diagnostics.human_text(result.output)
    if result.output_truncated:
        error += "\n[output truncated]"
    return json_error(400, error, id=result.job_id, diagnostics=found, usage=usage, cached=cached)


def create_app(service: Service) -> QuartTrio:
    # No implicit /static route: every path the app serves is one of ours, and documented.
    app = QuartTrio(__name__, root_path=str(Path(__file__).parent), static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = service.max_body_bytes
    app.config["BODY_TIMEOUT"] = service.body_timeout_seconds

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = {
            404: "not found",
            405: f"method {request.method} not allowed for {request.path}",
            408: (
                "the request body did not arrive within bodyTimeoutSeconds "
                f"({service.body_timeout_seconds:g} s)"
            ),
            413: f"request body too large (maxBodyBytes is {service.max_body_bytes})",
        }.get(status, exc.description or exc.name)
        response = json_error(status, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        if status in (408, 413):
            # The rest of the body was never read: the connection cannot carry another
            # request (the next one would wait behind the unread bytes forever).
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return json_error(500, "internal server error")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        """For the balancer: can this replica take a compile now?"""
        reason = service.not_ready()
        if reason is not None:
            return _busy(f"not ready: {reason}")
        return Response("ready", mimetype="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")

    async def read_compile_request() -> CompileRequest | Response:
        """The parsed request (JSON, multipart or raw body), or the 400 that says what is wrong
        with it. The raw body dies here: a request waiting in the queue holds its source once."""
        try:
            return await bodies.read(request, service.policy)
        except RequestError as exc:
            return json_error(400, str(exc))

    def identify_client() -> Client | Response:
        """Who sends this request, or the 401 when tokens are on and it carries no valid one.
        The token itself is never kept or logged, only its name."""
        token_name = None
        if service.tokens is not None:
            token = bearer_token(request.headers.get("Authorization"))
            token_name = service.tokens.identify(token) if token is not None else None
            if token_name is None:
                service.metrics.client_rejections.labels("unauthorized").inc()
                message = (
                    "a valid API token is required: send Authorization: Bearer <token>"
                    if token is None
                    else "the API token is not valid"
                )
                response = json_error(401, message)
                response.headers["WWW-Authenticate"] = 'Bearer realm="emcc-trio"'
                # The body was not read: the connection cannot carry another request.
                response.headers["Connection"] = "close"
                return response
        return identify(
            request.remote_addr or "",
            request.headers.getlist("X-Forwarded-For"),
            service.trusted_proxies,
            token_name,
        )

    @app.post("/compile")
    async def compile_route() -> Response:
        client = identify_client()
        if isinstance(client, Response):
            return client
        fields = _request_fields.get({})
        fields["client"] = client.key.removeprefix("token:")
        compile_request = await read_compile_request()
        if isinstance(compile_request, Response):
            return compile_request
        if service.shutting_down:
            return _busy("the server is shutting down")
        if service.client_jobs[client.key] >= service.max_jobs_per_client:
            service.metrics.client_rejections.labels("jobs_per_client").inc()
            response = json_error(
                TOO_MANY_STATUS,
                f"this client already has {service.max_jobs_per_client} compiles running or"
                " waiting (maxJobsPerClient); try again when one has finished",
            )
            response.headers["Retry-After"] = str(service.retry_after_seconds)
            return response
        job_id = new_job_id()
        fields["job"] = job_id
        service.client_jobs[client.key] += 1
        try:
            result, cached = await service.compile(compile_request, job_id, client.key)
        except trio.Cancelled:
            service.metrics.cancellations.labels("client").inc()
            raise
        except FlightCancelledError:
            service.metrics.cancellations.labels("shutdown").inc()
            return _busy("the server is shutting down")
        except QueueFullError:
            return _busy("too many compiles are waiting; try again later")
        except QueueTimeoutError:
            return _busy("no capacity became free in time; try again later")
        except FlightWaitTimeoutError:
            return _busy("an identical compile on another replica did not finish in time")
        except StoreUnavailableError:
            log.warning("store unreachable", extra={"fields": {"job": job_id}})
            return _busy("the artifact store is unreachable; try again later")
        except (InternalJobError, JobStartError) as exc:
            log.error("job failed to run", extra={"fields": {"job": job_id, "error": str(exc)}})
            return json_error(500, f"internal error: {exc}", id=job_id)
        finally:
            service.client_jobs[client.key] -= 1
            if not service.client_jobs[client.key]:
                del service.client_jobs[client.key]
        fields.update(job=result.job_id, limit=result.limit, ok=result.ok, cached=cached)
        return compile_response(result, cached)

    def _busy(message: str) -> Response:
        response = json_error(BUSY_STATUS, message)
        response.headers["Retry-After"] = str(service.retry_after_seconds)
        return response

    if service.enable_static_artifacts:

        @app.get("/artifacts/<job_id>/<name>")
        async def artifact(job_id: str, name: str) -> Response:
            try:
                data = await service.store.read(job_id, name)
            except StoreUnavailableError:
                return _busy("the artifact store is unreachable; try again later")
            if data is None:
                return json_error(404, "no such artifact")
            response = Response(data, mimetype=ARTIFACT_FILES[name])
            response.headers["Cache-Control"] = IMMUTABLE_CACHE
            response.headers["ETag"] = f'"{job_id}-{name}"'
            response.headers["X-Content-Type-Options"] = "nosniff"
            # Threads need a cross-origin-isolated page (COOP + COEP require-corp): such a page
            # loads these from any origin, and a worker script must itself say require-corp.
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
            if name == "app.worker.js":
                response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
            return response

    playground.register(app)
    openapi.register(app)
    return app


class AccessLog:
    """ASGI middleware: one structured line per request, also for cancelled ones."""

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
