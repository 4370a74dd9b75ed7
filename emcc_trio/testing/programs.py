"""The test programs (`tests/programs/`) and running what a compile built under node."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import attrs
import httpx

from emcc_trio.testing.harness import REPO, Server, eventually

PROGRAMS = REPO / "tests" / "programs"
RUN_ARTIFACT_JS = REPO / "tests" / "run_artifact.js"

HELLO_C = '#include <stdio.h>\nint main(void) { printf("hello from C\\n"); return 0; }\n'
HELLO_CPP = '#include <iostream>\nint main() { std::cout << "hello from C++" << std::endl; }\n'


def program(name: str) -> str:
    return (PROGRAMS / name).read_text()


def spin() -> str:
    """A C++ compile that only a CPU, wall-clock or hang-up can end (constant memory)."""
    return program("spin.cpp")


@attrs.define
class FifoGate:
    """A compile that waits for the test: its source includes a FIFO, and clang blocks
    reading it until `open` writes the header. An in-flight compile without a race against
    the machine's speed."""

    path: Path

    def __attrs_post_init__(self) -> None:
        os.mkfifo(self.path)

    @property
    def code(self) -> str:
        return (
            f'#include "{self.path}"\n#include <stdio.h>\n'
            'int main(void) { printf("gated %d\\n", GATED); return 0; }\n'
        )

    def open(self) -> None:
        """Let the waiting compile go on (fails if no compiler is reading the FIFO)."""

        def writer() -> list[int]:
            try:
                return [os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)]
            except OSError:  # ENXIO: the compiler has not opened it yet
                return []

        [fd] = eventually(writer, 60, "the compiler to read the gate FIFO")
        with os.fdopen(fd, "w") as fifo:
            fifo.write("#define GATED 42\n")


def run_artifact(server: Server, response: httpx.Response, tmp_path: Path) -> str:
    """Fetch the artifact pair over HTTP and run main under node; return what it prints."""
    body = response.json()
    assert body["ok"] is True, body
    out = tmp_path / body["id"]
    out.mkdir()
    with server.client() as client:
        for key, name in (("js", "app.js"), ("wasm", "app.wasm")):
            fetched = client.get(body[key])
            assert fetched.status_code == 200, fetched.text
            (out / name).write_bytes(fetched.content)
    done = run_node(out)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_node(out: Path, *, single_file: bool = False) -> subprocess.CompletedProcess[str]:
    """Run main of the `app.js` + `app.wasm` in `out` under node (`app.js` alone for a
    -sSINGLE_FILE build)."""
    wasm = "-" if single_file else str(out / "app.wasm")
    return subprocess.run(
        ["node", str(RUN_ARTIFACT_JS), str(out / "app.js"), wasm],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
