"""The Quart-Trio app: routes, JSON errors, and the one-line-per-request access log."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
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

from . import openapi, playground
from .artifacts import ARTIFACT_FILES, ArtifactStore
from .cache import Entry, FlightCancelledError, ResultCache, SingleFlight, cache_key
from .cgroups import Driver, Usage
from .clients import Client, Network, identify
from .gate import Gate, QueueFullError, QueueTimeoutError
from .jobs import Compiler, CompileResult, InternalJobError, new_job_id
from .metrics import Metrics, route_of
from .policy import CompileRequest, RequestError, parse_request
from .runner import JobStartError
from .tokens import TokenBook, bearer_token

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


@attrs.define
class Service:
    """What the routes need, passed in explicitly (no globals)."""

    driver: Driver | None
    compiler: Compiler
    gate: Gate
    store: ArtifactStore
    enable_static_artifacts: bool
    max_body_bytes: int
    cache: ResultCache | None = None
    emscripten_version: str = ""
    metrics: Metrics = attrs.field(factory=Metrics)
    retry_after_seconds: int = 5
    running: set[trio.CancelScope] = attrs.field(factory=set)
    shutting_down: bool = False
    flights: SingleFlight[CompileResult] | None = None
    max_jobs_per_client: int = 8
    tokens: TokenBook | None = None  # None: no API tokens, anyone may compile
    trusted_proxies: tuple[Network, ...] = ()
    # client key -> its compile requests running or waiting (maxJobsPerClient)
    client_jobs: Counter[str] = attrs.field(factory=Counter)

    def __attrs_post_init__(self) -> None:
        self.metrics.watch_gate(self.gate)
        if self.cache is not None:
            self.metrics.watch_cache(self.cache)

    def start(self, nursery: trio.Nursery) -> None:
        """Shared compiles run in the server's nursery, owned by no single request."""
        self.flights = SingleFlight(nursery, self.running)

    async def compile(
        self, request: CompileRequest, job_id: str, client: str = ""
    ) -> tuple[CompileResult, bool]:
        """The result for `request` and whether it came from the cache.

        Identical requests in flight share one compile; cancelling this call (the client
        went away) cancels the compile only when no other request waits for it.
        """
        assert self.flights is not None, "Service.start was not called"
        key = None
        if self.cache is not None:
            key = cache_key(self.emscripten_version, self.compiler.command(request), request.code)
            entry = self.cache.get(key)
            if entry is not None:
                self.metrics.cache_requests.labels("hit").inc()
                return _from_entry(entry), True
            # "shared": an identical compile is already running and this request joins it.
            lookup = "shared" if self.flights.is_flying(key) else "miss"
            self.metrics.cache_requests.labels(lookup).inc()
        work = partial(self._compile_admitted, request, job_id, key, client)
        return await self.flights.run(key or job_id, work), False

    async def _compile_admitted(
        self, request: CompileRequest, job_id: str, key: str | None, client: str
    ) -> CompileResult:
        queued_at = trio.current_time()
        client_class = "single" if self.client_jobs[client] <= 1 else "multi"
        async with self.gate.admit(client):
            waited = trio.current_time() - queued_at
            self.metrics.queue_wait_seconds.labels(client_class).observe(waited)
            result = await self.compiler.compile(request, job_id, client)
        self.metrics.compile_seconds.observe(result.duration_seconds)
        if result.limit is not None:
            self.metrics.cap_kills.labels(result.limit).inc()
        elif key is not None and self.cache is not None:
            # Deterministic results only: successes and compile errors, never cap kills.
            usage = usage_json(result.usage, result.duration_seconds)
            try:
                await trio.to_thread.run_sync(
                    self.cache.put, key, result.job_id, result.ok, result.output, usage
                )
            except OSError as exc:  # a full disk costs the cache entry, not the answer
                log.warning("cannot cache", extra={"fields": {"error": str(exc)}})
        return result

    def shutdown(self) -> None:
        """Refuse new compiles and cancel the running ones (their cleanup still runs)."""
        self.shutting_down = True
        for scope in self.running:
            scope.cancel()


def _from_entry(entry: Entry) -> CompileResult:
    usage = entry.usage
    return CompileResult(
        job_id=entry.job_id,
        ok=entry.ok,
        output=entry.output,
        output_truncated=False,
        limit=None,
        usage=Usage(
            peak_memory_bytes=usage.get("peakMemoryBytes"),
            cpu_seconds=usage.get("cpuSeconds"),
            peak_pids=usage.get("peakPids"),
        ),
        duration_seconds=float(usage.get("durationSeconds", 0.0)),
    )


def json_error(status: int, message: str, **extra: Any) -> Response:
    body = {"ok": False, "error": message, **extra}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def json_ok(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def usage_json(usage: Usage, duration_seconds: float) -> dict[str, Any]:
    return {
        "peakMemoryBytes": usage.peak_memory_bytes,
        "cpuSeconds": None if usage.cpu_seconds is None else round(usage.cpu_seconds, 3),
        "peakPids": usage.peak_pids,
        "durationSeconds": round(duration_seconds, 3),
    }


def compile_response(result: CompileResult, cached: bool) -> Response:
    usage = usage_json(result.usage, result.duration_seconds)
    if result.ok:
        return json_ok(
            {
                "ok": True,
                "id": result.job_id,
                "js": f"/artifacts/{result.job_id}/app.js",
                "wasm": f"/artifacts/{result.job_id}/app.wasm",
                "output": result.output,
                "usage": usage,
                "cached": cached,
            }
        )
    if result.limit is not None:
        message = LIMIT_MESSAGES[result.limit]
        if result.output:
            message += "\n" + result.output
        return json_error(LIMIT_STATUS, message, id=result.job_id, limit=result.limit, usage=usage)
    error = result.output
    if result.output_truncated:
        error += "\n[output truncated]"
    return json_error(400, error, id=result.job_id, usage=usage, cached=cached)


def create_app(service: Service) -> QuartTrio:
    # No implicit /static route: every path the app serves is one of ours, and documented.
    app = QuartTrio(__name__, root_path=str(Path(__file__).parent), static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = service.max_body_bytes

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = {
            404: "not found",
            405: f"method {request.method} not allowed for {request.path}",
            413: f"request body too large (maxBodyBytes is {service.max_body_bytes})",
        }.get(status, exc.description or exc.name)
        response = json_error(status, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        if status == 413:
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

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")

    async def read_compile_request() -> CompileRequest | Response:
        """The parsed request, or the 400 that says what is wrong with it. The raw body and
        the decoded JSON die here: a request waiting in the queue holds its source once."""
        body = await request.get_data(cache=False)
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            return json_error(400, f"the body is not valid JSON: {exc}")
        try:
            return parse_request(decoded)
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
            data = await service.store.read(job_id, name)
            if data is None:
                return json_error(404, "no such artifact")
            response = Response(data, mimetype=ARTIFACT_FILES[name])
            response.headers["Cache-Control"] = IMMUTABLE_CACHE
            response.headers["ETag"] = f'"{job_id}-{name}"'
            response.headers["X-Content-Type-Options"] = "nosniff"
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
