"""Compile results as a store holds them, for store and cache tests."""

from __future__ import annotations

from emcc_trio.models import BOTH_FILES, CompileResult, Usage


def stored_result(
    job_id: str,
    ok: bool = True,
    output: str = "",
    *,
    duration_seconds: float = 0.0,
    cpu_seconds: float | None = None,
    files: tuple[str, ...] = BOTH_FILES,
) -> CompileResult:
    """A success (with its artifact's `files`) or a compile error, as a cache entry holds it."""
    return CompileResult(
        job_id=job_id,
        ok=ok,
        output=output,
        output_truncated=False,
        limit=None,
        usage=Usage(cpu_seconds=cpu_seconds),
        duration_seconds=duration_seconds,
        files=files if ok else (),
    )
