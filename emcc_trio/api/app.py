"""The Quart-Trio app: its HTTP options and the factory that puts the routes together."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from emcc_trio.api import openapi, playground, routes
from emcc_trio.api.clients import Network
from emcc_trio.api.responses import error_response, json_error
from emcc_trio.api.tokens import TokenBook
from emcc_trio.compile.service import Service
from emcc_trio.errors import ServiceError
from emcc_trio.jobs.manager import JobManager

log = logging.getLogger("emcc_trio.app")


@attrs.define
class ApiOptions:
    """The HTTP side's settings (the config keys of the same names)."""

    max_body_bytes: int
    body_timeout_seconds: float = 30
    enable_static_artifacts: bool = True
    retry_after_seconds: int = 5
    tokens: TokenBook | None = None  # None: no API tokens, anyone may compile; SIGHUP swaps it
    trusted_proxies: tuple[Network, ...] = ()


def create_app(service: Service, options: ApiOptions, jobs: JobManager | None = None) -> QuartTrio:
    """The app. `jobs` runs POST /jobs (a manager whose `running` block is not open takes
    none: a 503)."""
    # No implicit /static route: every path the app serves is one of ours, and documented.
    app = QuartTrio(__name__, root_path=str(Path(__file__).parent), static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = options.max_body_bytes
    app.config["BODY_TIMEOUT"] = options.body_timeout_seconds

    @app.errorhandler(ServiceError)
    async def refused(exc: ServiceError) -> Response:
        return error_response(exc, options.retry_after_seconds)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return _http_error(exc, options)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return json_error(500, "internal server error")

    routes.register_health(app, service, options)
    routes.register_compile(app, service, options)
    routes.register_jobs(app, service, jobs or JobManager(service.store, 3600), options)
    if options.enable_static_artifacts:
        routes.register_artifacts(app, service)
    playground.register(app)
    openapi.register(app)
    return app


def _http_error(exc: HTTPException, options: ApiOptions) -> Response:
    """What the HTTP layer refused (unknown path, method, slow or oversized body) as JSON."""
    status = exc.code or 500
    message = {
        404: "not found",
        405: f"method {request.method} not allowed for {request.path}",
        408: (
            "the request body did not arrive within bodyTimeoutSeconds "
            f"({options.body_timeout_seconds:g} s)"
        ),
        413: f"request body too large (maxBodyBytes is {options.max_body_bytes})",
    }.get(status, exc.description or exc.name)
    response = json_error(status, message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    if status in (408, 413):
        # The rest of the body was never read: the connection cannot carry another request
        # (the next one would wait behind the unread bytes forever).
        response.headers["Connection"] = "close"
    return response
