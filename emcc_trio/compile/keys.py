"""The result cache's key: a digest of everything that decides a compile's output."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


def cache_key(
    emscripten_version: str,
    argv: Sequence[str],
    source: str,
    files: Sequence[tuple[str, bytes]] = (),
    scope: str = "",
) -> str:
    """argv is the full compile command (compiler, source names, every argument); `files`
    the project's other files, each path with its content's digest; `scope` the client whose
    compiles alone may share the key (cacheScope "client"), "" for everyone."""
    parts: list[Any] = [emscripten_version, list(argv), source]
    if files or scope:  # keys of single-file global compiles stay what they were
        parts.append([[path, hashlib.sha256(content).hexdigest()] for path, content in files])
    if scope:
        parts.append({"scope": scope})
    material = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()
