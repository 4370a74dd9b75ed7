"""The project files of a compile (`files`): the path policy, as data plus pure functions.

A path is accepted only if it names a plain file inside the job dir: relative, components of
letters, digits and `._-` that start with a letter, digit or `_` (so never `.`, `..`, a hidden
name or something emcc would read as a flag), a bounded depth, and never one of the names the
service writes itself, nor a directory of such a name. The job dir is new and empty, so a link
can only come from the writer; `compiler.write_file` refuses to follow one anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from emcc_trio.models import SOURCE_SUFFIXES, Files, is_source

MB: Final = 1024 * 1024
MAIN_NAMES: Final[Mapping[str, str]] = {"main.c": "c", "main.cpp": "cpp"}
# What the service itself writes into the job dir.
RESERVED: Final = frozenset({"app.js", "app.wasm", "app.wasm.map", "app.data", "app.worker.js"})

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\Z")


class FileError(Exception):
    """A file in `files` is refused; the message names its path and says why."""


@attrs.frozen
class ProjectLimits:
    """How large a project may be (`maxFiles`, `maxPathDepth`, `maxPathLength`,
    `maxProjectMB`): sized so that real libraries (zstd, SQLite's amalgamation) fit."""

    max_files: int = 1000
    max_depth: int = 8  # directories above a file, plus the file itself
    max_path_length: int = 255
    max_total_bytes: int = 64 * MB


DEFAULT_LIMITS: Final = ProjectLimits()
# `sources` patterns: at most this many, each like a path (with * ? ** and a leading !).
MAX_PATTERNS: Final = 256
_PATTERN = re.compile(r"^!?[A-Za-z0-9._*?/-]+\Z")


def _why_refused(path: str, limits: ProjectLimits) -> str | None:
    if not path:
        return "the path is empty"
    if len(path) > limits.max_path_length:
        return f"the path is longer than {limits.max_path_length} characters (maxPathLength)"
    if path.startswith("/"):
        return "the path must be relative"
    parts = path.split("/")
    if ".." in parts:
        return "the path must not contain '..'"
    if len(parts) > limits.max_depth:
        return f"the path is deeper than {limits.max_depth} levels (maxPathDepth)"
    if not all(_COMPONENT.match(part) for part in parts):
        return (
            "each path component must use only letters, digits and ._- "
            "and start with a letter, digit or _"
        )
    if path in RESERVED:
        return "the service writes this file itself"
    if parts[0] in RESERVED:
        return f"the service writes {parts[0]!r} itself: it cannot be a directory"
    return None


def check_files(
    files: Iterable[tuple[str, bytes]], limits: ProjectLimits = DEFAULT_LIMITS
) -> Files:
    """The files sorted by path, if every path is acceptable and the project fits `limits`;
    else raise naming the first fault."""
    checked = sorted(files)
    if len(checked) > limits.max_files:
        raise FileError(f"too many files: {len(checked)} (at most {limits.max_files}: maxFiles)")
    total = sum(len(content) for _, content in checked)
    if total > limits.max_total_bytes:
        raise FileError(
            f"the project's files are {total} bytes (at most {limits.max_total_bytes}: "
            "maxProjectMB)"
        )
    seen: set[str] = set()
    for path, _content in checked:
        why = _why_refused(path, limits)
        if why is not None:
            raise FileError(f"file {path!r} is not allowed: {why}")
        if path in seen:
            raise FileError(f"file {path!r} is given twice")
        seen.add(path)
    # `a` and `a/b` cannot both exist; sorted order puts the directory's name first.
    for path in seen:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in seen:
                raise FileError(f"file {path!r} is not allowed: {parent!r} is a file")
    return tuple(checked)


def check_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """`sources` as given, if each is a pattern of the path alphabet (`*` within a directory,
    `**` across directories, `?` one character, a leading `!` excludes); else FileError."""
    if len(patterns) > MAX_PATTERNS:
        raise FileError(f'"sources" has {len(patterns)} patterns (at most {MAX_PATTERNS})')
    for pattern in patterns:
        body = pattern.removeprefix("!")
        if not _PATTERN.match(pattern) or not body or body.startswith("/"):
            raise FileError(
                f"sources pattern {pattern!r} is not allowed: a relative path of letters, "
                "digits and ._-/ with * ? **, optionally after one !"
            )
        if ".." in body.split("/"):
            raise FileError(f"sources pattern {pattern!r} is not allowed: it contains '..'")
    return tuple(patterns)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:[^/]+/)*")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


def select_sources(paths: Sequence[str], patterns: Sequence[str], main: str) -> tuple[str, ...]:
    """The translation units `patterns` name among `paths` (the project files, sorted), in
    path order, without `main` (always compiled). Every pattern that includes must match a
    file, and each match must be a C or C++ source; FileError names the fault."""
    chosen: set[str] = set()
    for pattern in patterns:
        exclude = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!"))
        matched = {path for path in paths if regex.match(path)}
        if exclude:
            chosen -= matched
            continue
        if not matched:
            raise FileError(f"sources pattern {pattern!r} matches no file")
        for path in sorted(matched):
            if not is_source(path):
                raise FileError(
                    f"sources pattern {pattern!r} matches {path!r}, which is not a C or C++ "
                    f"source ({', '.join(SOURCE_SUFFIXES)})"
                )
        chosen |= matched
    return tuple(path for path in paths if path in chosen and path != main)
