"""The JS memo's entries: the output of emscripten's `src/compiler.js` (the JS glue), kept
under a digest of everything it reads (its settings file, the jail's working dir, the
toolchain), so a compile whose settings were seen before skips the about 0.2 s node spends on
it; and the output of `tools/acorn-optimizer.js` (`-O1` and above) under a digest of its input
and passes. Distinct programs share entries (five different C programs at `-O0` share one
glue). See compile.memos."""

from __future__ import annotations

import json
from typing import Final

from emcc_trio.compile.jailside.emcc_launch import ACORN_TAG, FORWARDED, GLUE_TAG

MAX_ENTRY_BYTES: Final = 16 * 1024 * 1024
TAG: Final = GLUE_TAG
ACORN: Final = ACORN_TAG


def entry_name(digest: str) -> str:
    """A glue entry's file name in the memo directory, as the launcher opens it."""
    return "g-" + digest


def acorn_name(digest: str) -> str:
    """A JS optimizer entry's file name in the memo directory."""
    return "a-" + digest


def is_valid_acorn(data: bytes) -> bool:
    return len(data) <= MAX_ENTRY_BYTES


def is_valid_entry(data: bytes) -> bool:
    """What the launcher accepts: {"stdout": glue with its forwarded data, "stderr": str}."""
    if len(data) > MAX_ENTRY_BYTES:
        return False
    try:
        entry = json.loads(data)
    except ValueError:
        return False
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("stdout"), str)
        and isinstance(entry.get("stderr"), str)
        and FORWARDED in entry["stdout"]
    )
