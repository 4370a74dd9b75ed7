"""The data every layer passes, and its one codec.

A `CompileRequest` goes in, a `CompileResult` comes out. A result is stored (cache entries on
disk and in Redis) and handed to another replica waiting for the same compile in one JSON
shape, written by `encode_result` and read by `decode_result` only: a new field is one edit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

import attrs

# The files an artifact can have, with the media type each is served as.
ARTIFACT_FILES: Final[Mapping[str, str]] = {
    "app.js": "application/javascript",
    "app.wasm": "application/wasm",
    # -pthread: the script each thread's worker runs (it loads app.js and app.wasm).
    "app.worker.js": "application/javascript",
}
# What every build writes; without it there is nothing to run.
MAIN_FILE: Final = "app.js"
# An artifact's files when nothing says otherwise (results cached before SINGLE_FILE was allowed).
BOTH_FILES: Final = ("app.js", "app.wasm")
SOURCE_NAMES: Final[Mapping[str, str]] = {"c": "main.c", "cpp": "main.cpp"}
SOURCE_SUFFIXES: Final = (".c", ".cpp", ".cc")

Files = tuple[tuple[str, bytes], ...]
# Which cap ended a job.
Limit = Literal["memory", "pids", "cpu", "timeout", "output", "artifact", "disk"]
LIMITS: Final = get_args(Limit)


def is_source(path: str) -> bool:
    return path.endswith(SOURCE_SUFFIXES)


@attrs.frozen
class CompileRequest:
    code: str
    language: str  # "c" or "cpp"
    args: tuple[str, ...]
    files: Files = ()  # checked by sources.check_files: (path, content), sorted by path
    # The other translation units `sources` chose (sources.select_sources), in path order;
    # None: every C or C++ file of `files`.
    units: tuple[str, ...] | None = None

    @property
    def source_name(self) -> str:
        return SOURCE_NAMES[self.language]

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source compiled and linked: the main one first, then the others by path."""
        if self.units is not None:
            return (self.source_name, *self.units)
        extra = (p for p, _ in self.files if is_source(p) and p != self.source_name)
        return (self.source_name, *extra)

    @property
    def size_bytes(self) -> int:
        """What the request's sources and files take in memory."""
        return len(self.code.encode("utf-8", "surrogatepass")) + sum(
            len(content) for _, content in self.files
        )


@attrs.frozen
class Usage:
    """What a job's cgroup measured (None: not measured by this driver)."""

    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    peak_pids: int | None = None
    oom_kills: int = 0
    pids_limit_hits: int = 0
    cpu_throttled: int = 0


@attrs.frozen
class CompileResult:
    job_id: str
    ok: bool
    output: str
    output_truncated: bool
    limit: Limit | None
    usage: Usage
    duration_seconds: float
    files: tuple[str, ...] = ()  # the published artifact's files (none for a failure)


@attrs.frozen
class RunResult:
    """How one run of an artifact ended. `exit_code` is main's return or exit()'s status;
    `signal` names what a native process would have died of instead (SIGABRT for abort(),
    SIGSEGV for an out-of-bounds access, SIGKILL for a cap): one of the two is None."""

    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    exit_code: int | None
    signal: str | None
    limit: Limit | None
    usage: Usage
    duration_seconds: float


def usage_json(usage: Usage, duration_seconds: float) -> dict[str, Any]:
    """The `usage` object of an answer (and of a stored result)."""
    return {
        "peakMemoryBytes": usage.peak_memory_bytes,
        "cpuSeconds": None if usage.cpu_seconds is None else round(usage.cpu_seconds, 3),
        "peakPids": usage.peak_pids,
        "durationSeconds": round(duration_seconds, 3),
    }


def stored_files(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The artifact's file list stored with a result (ValueError when it is not one: the names
    end up in paths); BOTH_FILES for results stored before the list was."""
    value = body.get("files", BOTH_FILES)
    if not isinstance(value, list | tuple) or not set(value) <= ARTIFACT_FILES.keys():
        raise ValueError(f"not a list of artifact files: {value!r}")
    return tuple(value)


def encode_result(result: CompileResult) -> str:
    """A result as stored and as another replica waiting for the same compile receives it.
    Compact: what is unset (no limit, whole output, usage not measured) is left out."""
    body: dict[str, Any] = {"id": result.job_id, "ok": result.ok, "output": result.output}
    if result.output_truncated:
        body["truncated"] = True
    if result.limit is not None:
        body["limit"] = result.limit
    usage = usage_json(result.usage, result.duration_seconds)
    body["usage"] = {key: value for key, value in usage.items() if value is not None}
    body["files"] = result.files
    return json.dumps(body, separators=(",", ":"))


def decode_result(data: str | bytes) -> CompileResult:
    """The result `encode_result` wrote (also entries stored before `truncated` and `limit`
    were); ValueError for anything else."""
    try:
        body = json.loads(data)
        usage = body["usage"]
        limit = body.get("limit")
        if limit is not None and limit not in LIMITS:
            raise ValueError(f"not a limit: {limit!r}")
        ok = bool(body["ok"])
        output = body["output"]
        if not isinstance(output, str) or not isinstance(body["id"], str):
            raise ValueError("the id and the output must be strings")
        return CompileResult(
            job_id=body["id"],
            ok=ok,
            output=output,
            output_truncated=bool(body.get("truncated", False)),
            limit=limit,
            usage=Usage(
                peak_memory_bytes=usage.get("peakMemoryBytes"),
                cpu_seconds=usage.get("cpuSeconds"),
                peak_pids=usage.get("peakPids"),
            ),
            duration_seconds=float(usage.get("durationSeconds", 0.0)),
            files=stored_files(body) if ok else (),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a stored result: {exc!r}") from exc
