"""How results and refusals are answered: JSON bodies, statuses and their headers."""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from quart import Response

from emcc_trio.compile import diagnostics
from emcc_trio.errors import ServiceError
from emcc_trio.models import CompileResult, RunResult, usage_json

LIMIT_STATUS: Final = 422

LIMIT_MESSAGES: Final = {
    "memory": "the compile exceeded its memory cap (jobMemoryMaxMB) and was killed",
    "pids": "the compile exceeded its process cap (jobPidsMax)",
    "cpu": "the compile exceeded its CPU-time cap (jobCpuSeconds) and was killed",
    "timeout": "the compile exceeded its wall-clock cap (jobTimeoutSeconds) and was killed",
    "output": "the compiler's output exceeded maxOutputBytes; the compile was stopped",
    "artifact": (
        "the compile tried to write a file (or an artifact) of maxArtifactMB or more; the "
        "write failed and nothing was stored"
    ),
    "disk": "the compile's job dir took more than jobDiskMaxMB on disk; the compile was stopped",
}


RUN_LIMIT_MESSAGES: Final = {
    "memory": "the program exceeded its memory cap (runMemoryMB) and was killed",
    "pids": "the program exceeded its process and thread cap (runPidsMax)",
    "cpu": "the program exceeded its CPU-time cap (runCpuSeconds) and was killed",
    "timeout": "the program exceeded its wall-clock cap (runTimeoutSeconds) and was killed",
    "output": "the program printed more than runOutputBytes; it was stopped",
    "artifact": "the program wrote a file past its tmpfs",
}


def json_error(status: int, message: str, **extra: Any) -> Response:
    body = {"ok": False, "error": message, **extra}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def json_ok(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def busy(message: str, retry_after_seconds: int) -> Response:
    response = json_error(503, message)
    response.headers["Retry-After"] = str(retry_after_seconds)
    return response


def error_response(exc: ServiceError, retry_after_seconds: int) -> Response:
    """The answer to any refusal: its status, its public message, the job it concerns."""
    extra = {} if exc.job_id is None else {"id": exc.job_id}
    response = json_error(exc.status, exc.answer(), **extra)
    response.headers.update(exc.headers)
    if exc.retry:
        seconds = retry_after_seconds if exc.retry_after is None else exc.retry_after
        response.headers["Retry-After"] = str(seconds)
    return response


def _stream(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 text as it is, anything else as base64."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def run_json(run: RunResult) -> dict[str, Any]:
    """The `run` object of a /run answer."""
    stdout, stdout_encoding = _stream(run.stdout)
    stderr, stderr_encoding = _stream(run.stderr)
    return {
        "exitCode": run.exit_code,
        "signal": run.signal,
        "limit": run.limit,
        "message": None if run.limit is None else RUN_LIMIT_MESSAGES[run.limit],
        "stdout": stdout,
        "stdoutEncoding": stdout_encoding,
        "stdoutTruncated": run.stdout_truncated,
        "stderr": stderr,
        "stderrEncoding": stderr_encoding,
        "stderrTruncated": run.stderr_truncated,
        "usage": usage_json(run.usage, run.duration_seconds),
    }


Answer = tuple[int, dict[str, Any]]  # an HTTP status and its JSON body


def answer_response(answer: Answer) -> Response:
    status, body = answer
    return json_ok(body, status)


def error_answer(exc: ServiceError) -> Answer:
    """A refusal as a job's result records it (headers such as Retry-After are the
    synchronous answer's only)."""
    extra = {} if exc.job_id is None else {"id": exc.job_id}
    return exc.status, {"ok": False, "error": exc.answer(), **extra}


def run_answer(result: CompileResult, cached: bool, run: RunResult | None) -> Answer:
    """A compile that failed answers as /compile does; a run, whatever its end, is a 200
    with the compile's fields and `run` (a program's crash or cap is its result)."""
    if run is None:
        return compile_answer(result, cached)
    return 200, {**_built(result, cached), "run": run_json(run)}


def _built(result: CompileResult, cached: bool) -> dict[str, Any]:
    body = {
        "ok": True,
        "id": result.job_id,
        "js": f"/artifacts/{result.job_id}/app.js",
        # None for -sSINGLE_FILE: the wasm is inside app.js.
        "wasm": f"/artifacts/{result.job_id}/app.wasm" if "app.wasm" in result.files else None,
        "output": result.output,
        "diagnostics": [d.to_json() for d in diagnostics.parse(result.output)],
        "usage": usage_json(result.usage, result.duration_seconds),
        "cached": cached,
    }
    if "app.worker.js" in result.files:  # -pthread
        body["worker"] = f"/artifacts/{result.job_id}/app.worker.js"
    return body


def compile_answer(result: CompileResult, cached: bool) -> Answer:
    if result.ok:
        return 200, _built(result, cached)
    usage = usage_json(result.usage, result.duration_seconds)
    found = [d.to_json() for d in diagnostics.parse(result.output)]
    if result.limit is not None:
        message = LIMIT_MESSAGES[result.limit]
        if result.output:
            message += "\n" + result.output
        return LIMIT_STATUS, {
            "ok": False,
            "error": message,
            "id": result.job_id,
            "limit": result.limit,
            "diagnostics": found,
            "usage": usage,
        }
    error = diagnostics.human_text(result.output)
    if result.output_truncated:
        error += "\n[output truncated]"
    return 400, {
        "ok": False,
        "error": error,
        "id": result.job_id,
        "diagnostics": found,
        "usage": usage,
        "cached": cached,
    }


def compile_response(result: CompileResult, cached: bool) -> Response:
    return answer_response(compile_answer(result, cached))


def run_response(result: CompileResult, cached: bool, run: RunResult | None) -> Response:
    return answer_response(run_answer(result, cached, run))
