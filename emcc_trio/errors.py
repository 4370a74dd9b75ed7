"""What the service refuses or cannot do, each with the HTTP status it is answered with.

Every layer raises a subclass of `ServiceError`; `api` turns any of them into one JSON answer
(`{"ok": false, "error": answer, ...}`), so a route never needs to know which module refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class ServiceError(Exception):
    """A refusal. `status` is the HTTP answer; `answer()` the client-facing message (the
    exception's own text may hold detail for the log only)."""

    status: ClassVar[int] = 500
    # Whether a client may try the same request again later (then the answer has Retry-After).
    retry: ClassVar[bool] = False
    public: ClassVar[str] = "internal server error"
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self, detail: str = "", *, job_id: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(detail or self.public)
        self.job_id = job_id  # named in the answer when the refusal concerns a started job
        # Retry-After in seconds when this refusal knows it (else the service's default).
        self.retry_after = retry_after

    def answer(self) -> str:
        return self.public


class RequestError(ServiceError):
    """The request is unacceptable; the message says which part and why."""

    status = 400

    def answer(self) -> str:
        return str(self)


class UnauthorizedError(ServiceError):
    """API tokens are on and the request carries no valid one."""

    status = 401
    # The body was not read: the connection cannot carry another request.
    headers: ClassVar[Mapping[str, str]] = {
        "WWW-Authenticate": 'Bearer realm="emcc-trio"',
        "Connection": "close",
    }

    def answer(self) -> str:
        return str(self)


class TooManyJobsError(ServiceError):
    """The client already has `maxJobsPerClient` compiles running or waiting."""

    status = 429
    retry = True

    def answer(self) -> str:
        return str(self)


class ArtifactQuotaError(ServiceError):
    """The client has stored `artifactQuotaMB` of artifacts within the current window (or
    this compile's artifact would take it past that); Retry-After says when the window ends."""

    status = 429
    retry = True

    def answer(self) -> str:
        return str(self)


class UnavailableError(ServiceError):
    """This replica cannot take the request now; another, or a later try, may."""

    status = 503
    retry = True
    public = "the service is unavailable; try again later"


class ShuttingDownError(UnavailableError):
    """The server got SIGTERM or SIGINT: it finishes what runs and takes nothing new."""

    public = "the server is shutting down"


class RunsOffError(ServiceError):
    """This server does not run programs (`enableRun` is off, or there is no jail)."""

    status = 501
    public = (
        "this server does not run programs: runs need enableRun and nsjailEnabled "
        "(without the jail a program would run with the server's access)"
    )


class InternalError(ServiceError):
    """The service, not the submitted code, failed (sandbox, cgroup or process trouble)."""

    def answer(self) -> str:
        return f"internal error: {self}"


def all_errors() -> list[type[ServiceError]]:
    """Every refusal class defined so far, depth first (the docs list them with their status)."""
    found: list[type[ServiceError]] = []
    stack: list[type[ServiceError]] = [ServiceError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(reversed(cls.__subclasses__()))
    return found
