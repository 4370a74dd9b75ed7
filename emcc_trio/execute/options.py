"""What a run asks for, parsed and checked: its stdin, its argv and its limits, and the
arguments its compile adds. Pure: no I/O here."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from emcc_trio.errors import RequestError

MB: Final = 1024 * 1024
RUN_FIELDS: Final = frozenset({"stdin", "stdinBase64", "argv", "limits"})
MAX_ARGS: Final = 1024
MAX_ARGV_BYTES: Final = 64 * 1024
# The settings every run's compile ends with (after the user's, so they win): main is
# called by the runner with argv (INVOKE_RUN=0, callMain), the runtime exits when main
# returns (flushing stdio, running atexit; the runner sees the exit code), and the whole
# filesystem is there so that stdin, stdout and stderr are byte devices (binary-safe).
RUN_SETTINGS: Final = (
    "-sENVIRONMENT=web",
    "-sMODULARIZE=1",
    "-sINVOKE_RUN=0",
    "-sEXIT_RUNTIME=1",
)
_FORCE_FILESYSTEM: Final = "-sFORCE_FILESYSTEM=1"
_RUNTIME_METHODS: Final = "-sEXPORTED_RUNTIME_METHODS="
_NO_FILESYSTEM = re.compile(r"-sFILESYSTEM=0")


@attrs.frozen
class RunLimits:
    """A run's caps: the server's (`run*` config keys), or lower ones a request asks for."""

    memory_bytes: int = 256 * MB
    cpu_seconds: float = 5.0
    timeout_seconds: float = 10.0
    pids_max: int = 32
    output_bytes: int = 64 * 1024


# The request's `limits` keys: (attribute, JSON type, scale to the attribute's unit).
LIMIT_KEYS: Final[Mapping[str, tuple[str, type, int]]] = {
    "memoryMB": ("memory_bytes", int, MB),
    "cpuSeconds": ("cpu_seconds", float, 1),
    "timeoutSeconds": ("timeout_seconds", float, 1),
    "outputBytes": ("output_bytes", int, 1),
}


@attrs.frozen
class RunOptions:
    stdin: bytes = b""
    argv: tuple[str, ...] = ()
    limits: RunLimits = RunLimits()


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (not integer and isinstance(value, float))


def parse_limits(value: Any, server: RunLimits) -> RunLimits:
    """The request's `limits` object: each key a positive number no higher than the server's
    cap (a run may ask for less, never for more)."""
    if value is None:
        return server
    if not isinstance(value, dict):
        raise RequestError('"limits" must be an object such as {"timeoutSeconds": 2}')
    unknown = sorted(set(value) - LIMIT_KEYS.keys())
    if unknown:
        raise RequestError(
            f"unknown run limit(s): {', '.join(unknown)} (known: {', '.join(LIMIT_KEYS)})"
        )
    changes: dict[str, Any] = {}
    for key, given in value.items():
        attribute, kind, scale = LIMIT_KEYS[key]
        cap = getattr(server, attribute)
        if not _number(given, kind is int) or given <= 0:
            what = "a positive whole number" if kind is int else "a positive number"
            raise RequestError(f'run limit "{key}" must be {what} (got {given!r})')
        if given * scale > cap:
            raise RequestError(
                f'run limit "{key}" is {given}, above this server\'s cap of {cap / scale:g}'
            )
        changes[attribute] = kind(given * scale)
    return attrs.evolve(server, **changes)


def parse_argv(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(arg, str) for arg in value):
        raise RequestError('"argv" must be a list of strings')
    if len(value) > MAX_ARGS:
        raise RequestError(f'"argv" has {len(value)} arguments (at most {MAX_ARGS})')
    if any("\0" in arg for arg in value):
        raise RequestError('an "argv" argument contains a NUL character (C strings end there)')
    size = sum(len(arg.encode("utf-8", "surrogatepass")) + 1 for arg in value)
    if size > MAX_ARGV_BYTES:
        raise RequestError(f'"argv" takes {size} bytes (at most {MAX_ARGV_BYTES})')
    try:
        for arg in value:
            arg.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError('an "argv" argument contains a lone surrogate') from None
    return tuple(value)


def parse_stdin(text: Any, encoded: Any) -> bytes:
    """`stdin` (text, sent as UTF-8; bytes from a multipart upload) or `stdinBase64`
    (bytes), not both."""
    if text is not None and encoded is not None:
        raise RequestError('give "stdin" or "stdinBase64", not both')
    if encoded is not None:
        if not isinstance(encoded, str):
            raise RequestError('"stdinBase64" must be a base64 string')
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f'"stdinBase64" is not valid base64: {exc}') from None
    if text is None:
        return b""
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str):
        raise RequestError('"stdin" must be a string (or send bytes as "stdinBase64")')
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            '"stdin" contains a lone surrogate: send bytes as "stdinBase64"'
        ) from None


def parse_run_options(fields: Mapping[str, Any], server: RunLimits) -> RunOptions:
    """A run's options from the request's run fields (RUN_FIELDS); RequestError names a fault."""
    return RunOptions(
        stdin=parse_stdin(fields.get("stdin"), fields.get("stdinBase64")),
        argv=parse_argv(fields.get("argv")),
        limits=parse_limits(fields.get("limits"), server),
    )


def _with_call_main(arg: str) -> str:
    """A user's -sEXPORTED_RUNTIME_METHODS with callMain added (the runner calls it)."""
    value = arg.removeprefix(_RUNTIME_METHODS)
    if value.startswith("[") and value.endswith("]"):
        inner = value[1:-1].strip()
        return f"{_RUNTIME_METHODS}[callMain{',' + inner if inner else ''}]"
    return f"{_RUNTIME_METHODS}callMain{',' + value if value else ''}"


def run_compile_args(args: tuple[str, ...]) -> tuple[str, ...]:
    """The accepted compile arguments of a run: the user's, with callMain exported, then the
    settings the runner needs (they come last, so they win). Threads are refused: the runner
    has no workers to start them in."""
    if "-pthread" in args:
        raise RequestError("argument '-pthread' is not allowed in a run: runs have no threads")
    methods = [arg for arg in args if arg.startswith(_RUNTIME_METHODS)]
    kept = tuple(_with_call_main(arg) if arg in methods[-1:] else arg for arg in args)
    if not methods:
        kept += (f"{_RUNTIME_METHODS}[callMain]",)
    filesystem = () if any(_NO_FILESYSTEM.fullmatch(arg) for arg in args) else (_FORCE_FILESYSTEM,)
    return (*kept, *RUN_SETTINGS, *filesystem)
