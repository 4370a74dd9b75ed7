"""Request validation and the argument policy, as data plus pure functions.

The policy is closed: an argument is accepted only if a rule below matches it exactly,
and nothing accepted can make emcc, clang or the linker read a file outside the job dir.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from .sources import Files, extra_sources

MAX_ARGS: Final = 64
MAX_ARG_LENGTH: Final = 4096

LANGUAGES: Final[Mapping[str, str]] = {"": "c", "c": "c", "cpp": "cpp", "cc": "cpp", "c++": "cpp"}
SOURCE_NAMES: Final[Mapping[str, str]] = {"c": "main.c", "cpp": "main.cpp"}

EXACT_FLAGS: Final = frozenset(
    {"-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-g", "-g0", "-g1", "-g2", "-g3"}
)
# Flags that name a file in the job dir, given as the next argument or after `=`.
PATH_FLAGS: Final = frozenset({"--preload-file", "--embed-file", "--source-map-base"})

# Explained refusals, checked before the allowlist so the user learns why.
BLOCKED_PREFIXES: Final[Sequence[tuple[str, str]]] = (
    ("@", "response files read a file by path"),
    ("-o", "the output file is fixed by the service"),
    ("--shell-file", "it reads a file by path"),
    ("--js-library", "it reads a file by path"),
    ("--pre-js", "it reads a file by path"),
    ("--post-js", "it reads a file by path"),
    ("--extern-pre-js", "it reads a file by path"),
    ("--extern-post-js", "it reads a file by path"),
    ("-I", "include paths could reach outside the job dir"),
    ("-include", "it reads a file by path"),
    ("-isystem", "include paths could reach outside the job dir"),
    ("-iquote", "include paths could reach outside the job dir"),
    ("-idirafter", "include paths could reach outside the job dir"),
    ("--sysroot", "it points the compiler at another tree"),
    ("-L", "library paths could reach outside the job dir"),
    ("-Wl,", "linker options can read files by path"),
    ("-Xlinker", "linker options can read files by path"),
    ("-Xclang", "raw clang options are not filtered"),
    ("--config", "it reads a file by path"),
    ("--em-config", "it reads a file by path"),
    ("-sFORCE_FILESYSTEM", "not allowed by the service"),
    ("-s", "only the listed -sNAME=VALUE settings are allowed"),
)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_C_SYMBOL = r"_[A-Za-z0-9_]+"
_BOOL = re.compile(r"^[01]$")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._/-]*$")
_VIRTUAL_PATH = re.compile(r"^/?[A-Za-z0-9._][A-Za-z0-9._/-]*$")
_ENVIRONMENTS = frozenset({"web", "webview", "worker", "shell"})


def _name_list(item: str) -> Callable[[str], bool]:
    """A `[a,b]`, `a,b` or `["a","b"]` list whose items all match `item`."""
    item_re = re.compile(rf"^(?:{item}|\"{item}\"|'{item}')$")

    def check(value: str) -> bool:
        inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        items = [part.strip() for part in inner.split(",")]
        return bool(items) and all(item_re.match(part) for part in items)

    return check


def _environment(value: str) -> bool:
    parts = value.split(",")
    return all(part in _ENVIRONMENTS for part in parts)


SETTINGS: Final[Mapping[str, Callable[[str], bool]]] = {
    "MODULARIZE": lambda v: bool(_BOOL.match(v)),
    "INVOKE_RUN": lambda v: bool(_BOOL.match(v)),
    "ALLOW_MEMORY_GROWTH": lambda v: bool(_BOOL.match(v)),
    "ENVIRONMENT": _environment,
    "EXPORTED_FUNCTIONS": _name_list(_C_SYMBOL),
    "EXPORTED_RUNTIME_METHODS": _name_list(_IDENT),
}
SETTING_HINTS: Final[Mapping[str, str]] = {
    "MODULARIZE": "0 or 1",
    "INVOKE_RUN": "0 or 1",
    "ALLOW_MEMORY_GROWTH": "0 or 1",
    "ENVIRONMENT": "a comma list of web, webview, worker, shell (node is not allowed)",
    "EXPORTED_FUNCTIONS": "a list of C symbols such as [_main,_add]",
    "EXPORTED_RUNTIME_METHODS": "a list of names such as [callMain,ccall]",
}


class RequestError(Exception):
    """The request is unacceptable; the message says which part and why."""


@attrs.frozen
class CompileRequest:
    code: str
    language: str  # "c" or "cpp"
    args: tuple[str, ...]
    files: Files = ()  # checked by sources.check_files: (path, content), sorted by path

    @property
    def source_name(self) -> str:
        return SOURCE_NAMES[self.language]

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source compiled and linked: the main one first."""
        return (self.source_name, *extra_sources(self.files, self.source_name))


def is_safe_relative_path(path: str) -> bool:
    """A path that stays inside the directory it is resolved from."""
    if not _PATH_CHARS.match(path):
        return False
    return all(part not in ("..",) for part in path.split("/"))


def _check_path_value(flag: str, value: str, shown: str) -> None:
    if flag == "--source-map-base":
        ok = is_safe_relative_path(value)
    else:
        # `src@dst`: src is a host path (must stay in the job dir); dst lives in the virtual FS.
        src, sep, dst = value.partition("@")
        ok = is_safe_relative_path(src) and (
            not sep or (bool(_VIRTUAL_PATH.match(dst)) and ".." not in dst.split("/"))
        )
    if not ok:
        raise RequestError(
            f"argument {shown!r} is not allowed: the path must be relative, "
            "inside the job dir, without '..', and use only letters, digits and ._/-"
        )


def _check_setting(arg: str) -> None:
    name, sep, value = arg[2:].partition("=")
    if not sep or name not in SETTINGS:
        return _refuse(arg)
    if name == "ENVIRONMENT" and "node" in value.split(","):
        raise RequestError(f"argument {arg!r} is not allowed: the node environment is blocked")
    if not SETTINGS[name](value):
        raise RequestError(f"argument {arg!r} is not allowed: {name} takes {SETTING_HINTS[name]}")
    return None


def _refuse(arg: str) -> None:
    for prefix, why in BLOCKED_PREFIXES:
        if arg.startswith(prefix):
            raise RequestError(f"argument {arg!r} is not allowed: {why}")
    raise RequestError(f"argument {arg!r} is not allowed: it is not on the allowlist")


def check_args(args: Sequence[str]) -> tuple[str, ...]:
    """Return `args` unchanged if every one is allowed; else raise naming the first refused."""
    if len(args) > MAX_ARGS:
        raise RequestError(f"too many args: {len(args)} (at most {MAX_ARGS})")
    accepted: list[str] = []
    pending_flag: str | None = None
    for arg in args:
        if len(arg) > MAX_ARG_LENGTH:
            raise RequestError(f"an argument is longer than {MAX_ARG_LENGTH} characters")
        if "\x00" in arg:
            raise RequestError("an argument contains a NUL character")
        if pending_flag is not None:
            _check_path_value(pending_flag, arg, f"{pending_flag} {arg}")
            pending_flag = None
        elif arg in EXACT_FLAGS:
            pass
        elif arg in PATH_FLAGS:
            pending_flag = arg
        elif "=" in arg and arg.partition("=")[0] in PATH_FLAGS:
            flag, _, value = arg.partition("=")
            _check_path_value(flag, value, arg)
        elif arg.startswith("-s"):
            _check_setting(arg)
        else:
            _refuse(arg)
        accepted.append(arg)
    if pending_flag is not None:
        raise RequestError(f"argument {pending_flag} needs a value after it")
    return tuple(accepted)


def parse_request(body: Any) -> CompileRequest:
    """Validate a decoded JSON body into a CompileRequest."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(body) - {"code", "type", "args"})
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(unknown)}")
    code = body.get("code")
    if not isinstance(code, str):
        raise RequestError('"code" must be a string')
    if not code.strip():
        raise RequestError('"code" must not be empty')
    if "\x00" in code:
        raise RequestError('"code" contains a NUL character')
    kind = body.get("type", "")
    if not isinstance(kind, str):
        raise RequestError('"type" must be a string')
    if kind.lower() not in LANGUAGES:
        raise RequestError(f'"type" must be one of c, cpp, cc, c++ (got {kind!r})')
    args = body.get("args", [])
    if args is None:
        args = []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise RequestError('"args" must be a list of strings')
    return CompileRequest(code=code, language=LANGUAGES[kind.lower()], args=check_args(args))


def compiler_argv(compiler: str, request: CompileRequest, default_args: Sequence[str]) -> list[str]:
    """The full command: defaults, then the user's accepted args, then the forced output."""
    return [compiler, *request.sources, *default_args, *request.args, "-o", "app.js"]
