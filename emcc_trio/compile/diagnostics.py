"""Clang's and the linker's human output, read into structured diagnostics (pure functions).

Clang's default format is already machine-readable at the start of each line
(`file:line:col: severity: message`), so the compile command stays as it is and `error` keeps
the text people read; the caret lines and `In file included from` lines are context only.
"""

from __future__ import annotations

import re
from typing import Any, Final

import attrs

_CLANG: Final = re.compile(
    r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<column>\d+): "
    r"(?P<severity>fatal error|error|warning|note|remark): (?P<message>.*)$"
)
# wasm-ld names an object file, not a source line: `wasm-ld: error: main_0.o: undefined ...`,
# and emscripten's own link check says `error: undefined symbol: f (referenced by ...)`.
_LINKER: Final = re.compile(r"^(?:wasm-ld: )?(?P<severity>error|warning): (?P<message>.*)$")
# emcc's report of a failed clang run carries clang's whole internal command line.
_EMCC_FAILED: Final = re.compile(r"^emcc: error: '(?P<tool>\S+) [^\n]*' failed (?P<how>.*)$", re.M)


@attrs.frozen
class Diagnostic:
    file: str | None
    line: int | None
    column: int | None
    severity: str  # "error", "warning", "note" or "remark"; a fatal error is an error
    message: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _clean_path(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path


def parse(output: str) -> list[Diagnostic]:
    """Every diagnostic in `output`, in order."""
    found = []
    for line in output.splitlines():
        match = _CLANG.match(line)
        if match:
            severity = match["severity"]
            found.append(
                Diagnostic(
                    file=_clean_path(match["file"]),
                    line=int(match["line"]),
                    column=int(match["column"]),
                    severity="error" if severity == "fatal error" else severity,
                    message=match["message"],
                )
            )
            continue
        match = _LINKER.match(line)
        if match:
            found.append(Diagnostic(None, None, None, match["severity"], match["message"]))
    return found


def human_text(output: str) -> str:
    """The compiler's text without emcc's internal clang command line."""
    return _EMCC_FAILED.sub(
        lambda m: f"emcc: error: {m['tool'].rsplit('/', 1)[-1]} failed {m['how']}", output
    )
