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
) -> str:
    """argv is the full compile command (compiler, source names, every argument); `files`
    the project's other files, each path with its content's digest."""
    parts: list[Any] = [emscripten_version, list(argv), source]
    if files:  # keys of single-file compiles stay what they were
        parts.append([[path, hashlib.sha256(content).hexdigest()] for path, content in files])
    material = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()
