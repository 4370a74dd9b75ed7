"""The projects the projects table builds (bench.bench): Lua 5.4 (62 files, 33 units of a few
KB each) and zstd (86 files in five folders, 29 units up to 300 KB) as upstream lays them out
(`emcc_trio.testing.libraries`), each with its test driver as main.c.

Each side gets the same files and the same arguments: the service as one JSON request
(`files`, `sources`, `args`, as tests/test_libraries.py uploads it), raw emcc as one call with
the driver and every unit. Run `n` adds `-DBENCH_RUN=n` to both, so that no run of the service
finds a run's objects in its object cache (every unit's key holds the args); edit `n` appends
a function of its own to one unit (code, not a comment: its object changes), so that a rebuild
compiles that unit only. The unit edited is the library's unit of median size, so that neither
its smallest nor its largest unit decides the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from emcc_trio.testing.libraries import LIBRARIES as KNOWN
from emcc_trio.testing.libraries import Library, fetch

LIBRARIES = ("lua5.4", "libzstd")
MAIN = "main.c"


@attrs.frozen
class Project:
    library: Library
    files: tuple[tuple[str, bytes], ...]  # the upload, and the driver as MAIN
    sources: tuple[str, ...]  # the translation units besides MAIN, as paths

    @classmethod
    def load(cls, name: str) -> Project:
        """The library's tree (downloaded once per machine, see `fetch`)."""
        library = KNOWN[name]
        if library.build.language != "c":
            raise ValueError(f"{name}: the driver is written as {MAIN}")
        tree = fetch(name)
        files = (*library.files(tree), (MAIN, library.build.driver_code().encode()))
        return cls(library, files, tuple(library.source_paths(tree)))

    @property
    def edited(self) -> str:
        """The unit a rebuild changes: the one of median size (the lower middle)."""
        sizes = {path: len(content) for path, content in self.files}
        by_size = sorted(self.sources, key=lambda path: (sizes[path], path))
        return by_size[(len(by_size) - 1) // 2]

    @property
    def units(self) -> int:
        """Translation units, the driver included."""
        return len(self.sources) + 1

    def label(self) -> str:
        return (
            f"{self.library.key}: {len(self.files)} files, {self.units} units, edits {self.edited}"
        )

    def args(self, run: int, opt: str = "-O0") -> list[str]:
        return [*self.library.build.compile_args(), opt, f"-DBENCH_RUN={run}"]

    def body(self, run: int, edit: int | None = None, opt: str = "-O0") -> dict[str, Any]:
        """The service's request for run `run`; with `edit`, `edited` has that edit's function."""
        files = {path: content.decode() for path, content in self.files}
        if edit is not None:
            files[self.edited] += f"\nint emcc_trio_bench_edit_{edit}(void) {{ return {edit}; }}\n"
        sources = list(self.library.build.sources)
        return {"files": files, "sources": sources, "args": self.args(run, opt)}

    def write(self, into: Path) -> None:
        """The files as the raw emcc run reads them."""
        for path, content in self.files:
            (into / path).parent.mkdir(parents=True, exist_ok=True)
            (into / path).write_bytes(content)

    def raw_argv(self, run: int, default_args: list[str], opt: str = "-O0") -> list[str]:
        """One emcc call with every source, the service's default args and the same args."""
        compiler = self.library.build.compiler
        return [compiler, MAIN, *self.sources, *default_args, *self.args(run, opt), "-o", "app.js"]
