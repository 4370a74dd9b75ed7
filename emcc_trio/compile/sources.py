"""The project files of a compile (`files`): the path policy, as data plus pure functions.

A path is accepted only if it names a plain file inside the job dir: relative, components of
letters, digits and `._-` that start with a letter, digit or `_` (so never `.`, `..`, a hidden
name or something emcc would read as a flag), a bounded depth, and never one of the names the
service writes itself, nor a directory of such a name. The job dir is new and empty, so a link
can only come from the writer; `compiler.write_file` refuses to follow one anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from emcc_trio.models import Files

MAX_FILES: Final = 64
MAX_DEPTH: Final = 4  # directories above a file, plus the file itself
MAX_PATH_LENGTH: Final = 255
MAIN_NAMES: Final[Mapping[str, str]] = {"main.c": "c", "main.cpp": "cpp"}
# What the service itself writes into the job dir.
RESERVED: Final = frozenset({"app.js", "app.wasm", "app.wasm.map", "app.data", "app.worker.js"})

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


class FileError(Exception):
    """A file in `files` is refused; the message names its path and says why."""


def _why_refused(path: str) -> str | None:
    if not path:
        return "the path is empty"
    if len(path) > MAX_PATH_LENGTH:
        return f"the path is longer than {MAX_PATH_LENGTH} characters"
    if path.startswith("/"):
        return "the path must be relative"
    parts = path.split("/")
    if ".." in parts:
        return "the path must not contain '..'"
    if len(parts) > MAX_DEPTH:
        return f"the path is deeper than {MAX_DEPTH} levels"
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


def check_files(files: Iterable[tuple[str, bytes]]) -> Files:
    """The files sorted by path, if every path is acceptable; else raise naming the first."""
    checked = sorted(files)
    if len(checked) > MAX_FILES:
        raise FileError(f"too many files: {len(checked)} (at most {MAX_FILES})")
    seen: set[str] = set()
    for path, _content in checked:
        why = _why_refused(path)
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
