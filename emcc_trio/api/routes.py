"""The routes. Each one translates: HTTP in, a service call, HTTP out. Refusals are raised
as `ServiceError`s and answered by the app's one handler."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from contextlib import ExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Final

from quart import Response, request
from quart.wrappers.response import ResponseBody
from quart_trio import QuartTrio

from emcc_trio.api import bodies
from emcc_trio.api.clients import Client, identify
from emcc_trio.api.middleware import log_fields
from emcc_trio.api.responses import (
    Answer,
    busy,
    compile_answer,
    compile_response,
    error_answer,
    json_error,
    json_ok,
    run_answer,
    run_response,
)
from emcc_trio.api.tokens import bearer_token
from emcc_trio.compile.compiler import new_job_id
from emcc_trio.compile.service import Service
from emcc_trio.errors import RunsOffError, ServiceError, UnauthorizedError
from emcc_trio.jobs.manager import JobManager, JobNotFoundError
from emcc_trio.models import ARTIFACT_FILES
from emcc_trio.storage.base import Artifact

if TYPE_CHECKING:
    from emcc_trio.api.app import ApiOptions

IMMUTABLE_CACHE: Final = "public, max-age=31536000, immutable"
# The job events a client sees (a job's `created` and `cancel` entries are the log's own).
SSE_EVENTS: Final = frozenset({"state", "output", "diagnostic", "result"})


def register_health(app: QuartTrio, service: Service, options: ApiOptions) -> None:
    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        """For the balancer: can this replica take a compile now?"""
        reason = service.not_ready()
        if reason is not None:
            return busy(f"not ready: {reason}", options.retry_after_seconds)
        return Response("ready", mimetype="text/plain")

    @app.get("/toolchain")
    async def toolchain() -> Response:
        """The emscripten release and the installed ports, with their versions."""
        return json_ok(service.toolchain())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")


def _identify_client(service: Service, options: ApiOptions) -> Client:
    """Who sends this request; UnauthorizedError when tokens are on and it carries no
    valid one. The token itself is never kept or logged, only its name."""
    token_name = None
    if options.tokens is not None:
        token = bearer_token(request.headers.get("Authorization"))
        token_name = options.tokens.identify(token) if token is not None else None
        if token_name is None:
            service.metrics.client_rejections.labels("unauthorized").inc()
            raise UnauthorizedError(
                "a valid API token is required: send Authorization: Bearer <token>"
                if token is None
                else "the API token is not valid"
            )
    return identify(
        request.remote_addr or "",
        request.headers.getlist("X-Forwarded-For"),
        options.trusted_proxies,
        token_name,
    )


def register_compile(app: QuartTrio, service: Service, options: ApiOptions) -> None:
    rules = bodies.Rules(service.policy, service.limits)  # fixed while the server runs

    def identify_client() -> Client:
        return _identify_client(service, options)

    @app.post("/compile")
    async def compile_route() -> Response:
        client = identify_client()
        fields = log_fields()
        fields["client"] = client.key.removeprefix("token:")
        # The raw body dies in `read`: a request waiting in the queue holds its source once.
        compile_request = await bodies.read(request, rules)
        with service.client_slot(client.key), service.holding(compile_request):
            job_id = new_job_id()
            fields["job"] = job_id
            result, cached = await service.compile(compile_request, job_id, client.key)
        fields.update(job=result.job_id, limit=result.limit, ok=result.ok, cached=cached)
        return compile_response(result, cached)

    @app.post("/run")
    async def run_route() -> Response:
        client = identify_client()
        fields = log_fields()
        fields["client"] = client.key.removeprefix("token:")
        if service.runner is None:
            raise RunsOffError
        compile_request, options = await bodies.read_run(request, rules, service.runner.limits)
        with service.client_slot(client.key), service.holding(compile_request):
            job_id = new_job_id()
            fields["job"] = job_id
            result, cached, run = await service.run(compile_request, options, job_id, client.key)
        fields.update(job=result.job_id, limit=result.limit, ok=result.ok, cached=cached)
        if run is not None:
            fields.update(run_limit=run.limit, exit_code=run.exit_code, signal=run.signal)
        return run_response(result, cached, run)


class _Streamed(ResponseBody):
    """An artifact as Quart sends a body: a chunk read as the previous one has been handed to
    the connection, so a reader holds one chunk, not the file. The stream opens when the send
    starts and is closed however it ends (done, client gone, send timeout)."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.chunks: AsyncGenerator[bytes, None] | None = None

    async def __aenter__(self) -> AsyncGenerator[bytes, None]:
        self.chunks = self.artifact.chunks()
        return self.chunks

    async def __aexit__(
        self, exc_type: type | None, exc_value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.chunks is not None:
            await self.chunks.aclose()


def register_artifacts(app: QuartTrio, service: Service) -> None:
    @app.get("/artifacts/<job_id>/<name>")
    async def artifact(job_id: str, name: str) -> Response:
        found = await service.store.artifact(job_id, name)
        if found is None:
            return json_error(404, "no such artifact")
        response = Response(_Streamed(found), mimetype=ARTIFACT_FILES[name])
        response.content_length = found.size
        # Quart's RESPONSE_TIMEOUT (60 s) would cut a large artifact short on a slow link;
        # sendTimeoutSeconds closes the connection of a client that stops reading.
        response.timeout = None
        response.headers["Cache-Control"] = IMMUTABLE_CACHE
        response.headers["ETag"] = f'"{job_id}-{name}"'
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Threads need a cross-origin-isolated page (COOP + COEP require-corp): such a page
        # loads these from any origin, and a worker script must itself say require-corp.
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        if name == "app.worker.js":
            response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
        return response


JOB_ID: Final = re.compile(r"[0-9a-f]{32}")
# An SSE comment this often while a job is quiet, so that no proxy takes it for dead.
SSE_KEEPALIVE_SECONDS: Final = 15.0


def register_jobs(app: QuartTrio, service: Service, jobs: JobManager, options: ApiOptions) -> None:
    rules = bodies.Rules(service.policy, service.limits)

    def owner_of(client: Client) -> str | None:
        """With API tokens, a job is its token's alone; without, its id is the capability."""
        return client.key if options.tokens is not None else None

    def checked(job_id: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFoundError
        return job_id

    @app.post("/jobs")
    async def submit_job() -> Response:
        client = _identify_client(service, options)
        fields = log_fields()
        fields["client"] = client.key.removeprefix("token:")
        limits = service.runner.limits if service.runner is not None else None
        kind, compile_request, run_options = await bodies.read_job(request, rules, limits)

        async def work() -> Answer:
            compile_id = new_job_id()
            try:
                if run_options is None:
                    result, cached = await service.compile(compile_request, compile_id, client.key)
                    return compile_answer(result, cached)
                ran = await service.run(compile_request, run_options, compile_id, client.key)
                return run_answer(*ran)
            except ServiceError as exc:
                return error_answer(exc)

        with ExitStack() as stack:
            stack.enter_context(service.client_slot(client.key))
            stack.enter_context(service.holding(compile_request))
            job_id = await jobs.submit(kind, owner_of(client), work, stack.pop_all())
        fields["job"] = job_id
        location = f"/jobs/{job_id}"
        response = json_ok(
            {
                "ok": True,
                "id": job_id,
                "kind": kind,
                "state": "queued",
                "url": location,
                "events": f"{location}/events",
            },
            202,
        )
        response.headers["Location"] = location
        return response

    @app.get("/jobs/<job_id>")
    async def job_state(job_id: str) -> Response:
        client = _identify_client(service, options)
        found = await jobs.view(checked(job_id), owner_of(client))
        return json_ok(found.to_json(job_id))

    @app.delete("/jobs/<job_id>")
    async def cancel_job(job_id: str) -> Response:
        client = _identify_client(service, options)
        found = await jobs.cancel(checked(job_id), owner_of(client))
        return json_ok(found.to_json(job_id))

    @app.get("/jobs/<job_id>/events")
    async def job_events(job_id: str) -> Response:
        client = _identify_client(service, options)
        await jobs.view(checked(job_id), owner_of(client))  # 404 before the stream starts
        resume = request.headers.get("Last-Event-ID", "")
        start = int(resume) + 1 if resume.isdigit() else 0

        async def stream() -> AsyncGenerator[bytes, None]:
            async for index, event in jobs.follow(job_id, start, SSE_KEEPALIVE_SECONDS):
                name = event["event"]
                if name == "idle":
                    yield b": keep-alive\n\n"
                elif name in SSE_EVENTS:
                    fields = {key: value for key, value in event.items() if key != "event"}
                    data = json.dumps(fields, separators=(",", ":"))
                    yield f"id: {index}\nevent: {name}\ndata: {data}\n\n".encode()

        response = Response(stream(), mimetype="text/event-stream")
        response.timeout = None  # as long as the job takes
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        return response
