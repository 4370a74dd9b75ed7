"""The project the projects table builds (bench.bench): Lua 5.4 as upstream lays it out
(`emcc_trio.testing.libraries`), with its test driver as main.c.

Each side gets the same files and the same arguments: the service as one JSON request
(`files`, `sources`, `args`, as tests/test_libraries.py uploads it), raw emcc as one call with
the driver and every unit. Run `n` adds `-DBENCH_RUN=n` to both, so that no run of the service
finds a run's objects in its object cache (every unit's key holds the args); edit `n` appends
its own comment to one unit, so that a rebuild compiles that unit only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import httpx

from emcc_trio.testing.libraries import LIBRARIES, Library, fetch

LIBRARY = "lua5.4"
MAIN = "main.c"
EDITED = "src/lstrlib.c"  # the unit a rebuild changes


@attrs.frozen
class Project:
    library: Library
    files: tuple[tuple[str, bytes], ...]  # the upload, and the driver as MAIN
    sources: tuple[str, ...]  # the translation units besides MAIN, as paths

    @classmethod
    def load(cls, name: str = LIBRARY) -> Project:
        """The library's tree (downloaded once per machine, see `fetch`)."""
        library = LIBRARIES[name]
        if library.build.language != "c":
            raise ValueError(f"{name}: the driver is written as {MAIN}")
        tree = fetch(name)
        files = (*library.files(tree), (MAIN, library.build.driver_code().encode()))
        return cls(library, files, tuple(library.source_paths(tree)))

    @property
    def units(self) -> int:
        """Translation units, the driver included."""
        return len(self.sources) + 1

    def label(self) -> str:
        return f"{self.library.key}: {len(self.files)} files, {self.units} units"

    def args(self, run: int, opt: str = "-O0") -> list[str]:
        return [*self.library.build.compile_args(), opt, f"-DBENCH_RUN={run}"]

    def body(self, run: int, edit: int | None = None, opt: str = "-O0") -> dict[str, Any]:
        """The service's request for run `run`; with `edit`, EDITED has that edit's comment."""
        files = {path: content.decode() for path, content in self.files}
        if edit is not None:
            files[EDITED] += f"\n/* bench edit {edit} */\n"
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


def build_units(client: httpx.Client) -> dict[str, float]:
    """The server's `emcc_trio_build_units_total` by `how`: compiled and reused units."""
    found = {"compiled": 0.0, "reused": 0.0}
    for line in client.get("/metrics").raise_for_status().text.splitlines():
        for how in found:
            if line.startswith(f'emcc_trio_build_units_total{{how="{how}"}}'):
                found[how] = float(line.split()[-1])
    return found
