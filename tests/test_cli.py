"""`emcc-trio compile` and `emcc-trio run`, the command-line client, against a live server with
the real emcc (runs against a jailed one)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_flags_compile import THREAD_ARGS

from emcc_trio.testing.harness import Server, server_config, start_server
from emcc_trio.testing.programs import FifoGate, program, run_node

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emcc_trio", "compile", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def node_output(out: Path) -> str:
    done = run_node(out)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The example program, its main renamed and its sources in a subdir."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    shutil.copy(EXAMPLES / "main.c", root / "src" / "prog.c")
    shutil.copy(EXAMPLES / "util.c", root / "src" / "util.c")
    shutil.copy(EXAMPLES / "util.h", root / "src" / "util.h")
    return root


def test_multi_file_round_trip(server: Server, project: Path) -> None:
    done = cli(
        "--server",
        server.url,
        "-o",
        "build",
        "src/prog.c",
        "src/util.c",
        "src/util.h",
        "--",
        "-O1",
        cwd=project,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["build/app.js", "build/app.wasm"]
    assert node_output(project / "build") == "sum of squares 1..4 = 30\n"


def test_a_single_file_build_downloads_app_js_alone(server: Server, project: Path) -> None:
    done = cli(
        "--server", server.url, "-o", "one", "src/prog.c", "src/util.c", "src/util.h",
        "--", "-O1", "-sSINGLE_FILE=1",
        cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["one/app.js"]
    assert sorted(path.name for path in (project / "one").iterdir()) == ["app.js"]
    ran = run_node(project / "one", single_file=True)
    assert (ran.returncode, ran.stdout) == (0, "sum of squares 1..4 = 30\n"), ran.stderr


def test_a_threaded_build_downloads_its_worker_too(server: Server, tmp_path: Path) -> None:
    (tmp_path / "threads.c").write_text(program("threads.c"))
    done = cli(
        "--server", server.url, "-o", "out", "threads.c",
        "--", *THREAD_ARGS,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["out/app.js", "out/app.wasm", "out/app.worker.js"]
    # The worker script itself: it loads app.js and calls the module's EXPORT_NAME.
    worker = (tmp_path / "out" / "app.worker.js").read_text()
    assert "importScripts" in worker
    assert "createModule" in worker


def test_errors_print_like_a_compiler_under_the_given_names(server: Server, project: Path) -> None:
    src = project / "src"
    (src / "util.h").write_text("int sum_of_squares(int n)\n")  # no semicolon
    (src / "prog.c").write_text('#include "util.h"\nint main(void) {\n  return  missing;\n}\n')
    done = cli("src/prog.c", "src/util.h", cwd=project, env={"EMCC_TRIO_SERVER": server.url})
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert "src/util.h:1:26: error: expected ';' after top level declarator" in lines
    assert "src/prog.c:3:11: error: use of undeclared identifier 'missing'" in lines
    assert not (project / "app.js").exists()


def test_a_refused_argument_exits_2_with_the_servers_message(server: Server, project: Path) -> None:
    done = cli(
        "--server", server.url, "src/prog.c", "--", "--js-library", "/etc/passwd", cwd=project
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "emcc-trio: error: argument '--js-library' is not allowed: it reads a file by path"
    )


def test_no_source_and_an_unreachable_server_are_errors(project: Path) -> None:
    no_source = cli("src/util.h", cwd=project)
    assert no_source.returncode == 2
    assert no_source.stderr.strip() == (
        "emcc-trio: error: no C/C++ source among the files (.c, .cpp, .cc)"
    )
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    unreachable = cli("--server", f"http://127.0.0.1:{port}", "src/prog.c", cwd=project)
    assert unreachable.returncode == 2
    assert f"cannot reach http://127.0.0.1:{port}" in unreachable.stderr


def test_token_from_the_environment_is_a_bearer_token(project: Path) -> None:
    """What goes over the wire, read by a one-shot listener that answers like a busy server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(60)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "emcc_trio", "compile", "src/prog.c"],
            cwd=project,
            env={**os.environ, "EMCC_TRIO_SERVER": url, "EMCC_TRIO_TOKEN": "s3cret"},
            stderr=subprocess.PIPE,
            text=True,
        )
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            body = json.dumps({"ok": False, "error": "too many compiles are waiting"}).encode()
            conn.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        _, stderr = proc.communicate(timeout=60)
    head = request.split(b"\r\n\r\n")[0].decode().lower().splitlines()
    assert head[0] == "post /compile http/1.1"
    assert "authorization: bearer s3cret" in head
    assert proc.returncode == 2
    assert stderr.strip() == "emcc-trio: error: too many compiles are waiting"


def test_progress_is_shown_while_a_slow_compile_runs(server: Server, tmp_path: Path) -> None:
    gate = FifoGate(tmp_path / "gate.h")
    source = tmp_path / "gated.c"
    source.write_text(gate.code)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emcc_trio", "compile", "--server", server.url, str(source)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the compile cannot end before the gate opens
    assert first.startswith(f"emcc-trio: compiling on {server.url}... ")
    gate.open()
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert stdout.split() == ["app.js", "app.wasm"]
    assert node_output(tmp_path) == "gated 42\n"


def test_compile_is_listed_in_the_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emcc_trio", "--help"], capture_output=True, text=True, check=True
    )
    assert "compile files on a server" in done.stdout


RUN_OUTPUT_BYTES = 4096  # the jailed server's runOutputBytes: the flood meets it at once


@pytest.fixture(scope="module")
def jailed() -> Iterator[Server]:
    """A server that runs programs: jailed, in a dir nsjail's outside user can traverse."""
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-cli-run-"))
    workdir.chmod(0o711)
    config = server_config(workdir, nsjailEnabled=True, runOutputBytes=RUN_OUTPUT_BYTES)
    started = start_server(workdir, config)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """`emcc-trio run`, its output as bytes: it hands the program's on as they are."""
    return subprocess.run(
        [sys.executable, "-m", "emcc_trio", "run", *args],
        cwd=cwd,
        capture_output=True,
        timeout=300,
        check=False,
    )


ECHO_MAIN = """#include <stdio.h>
#include <stdlib.h>
#include "echo.h"

int main(int argc, char **argv) {
  for (int i = 0; i < argc; i++) printf("argv[%d]=%s\\n", i, argv[i]);
  echo_stdin();
  fputs("to stderr\\n", stderr);
  return argc > 1 ? atoi(argv[1]) : 0;
}
"""
ECHO_H = "void echo_stdin(void);\n"
ECHO_C = """#include <stdio.h>
#include "echo.h"

void echo_stdin(void) {
  char buffer[4096];
  size_t got;
  while ((got = fread(buffer, 1, sizeof buffer, stdin)) > 0) fwrite(buffer, 1, got, stdout);
}
"""


def test_run_passes_argv_and_stdin_and_exits_with_the_programs_code(
    jailed: Server, tmp_path: Path
) -> None:
    """Three files (multipart); what follows -- is argv, -X goes to emcc; stdin not UTF-8
    (the server answers base64) comes back byte for byte."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "prog.c").write_text(ECHO_MAIN)
    (src / "echo.h").write_text(ECHO_H)
    (src / "echo.c").write_text(ECHO_C)
    stdin = b"line one\n\xff\xfe not UTF-8\nlast, no newline"
    (tmp_path / "input.bin").write_bytes(stdin)
    done = run_cli(
        "--server", jailed.url, "-X", "-O1", "--stdin", "input.bin",
        "src/prog.c", "src/echo.h", "src/echo.c",
        "--", "7", "two words", "-X", "--stdin",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.stdout == (
        b"argv[0]=./this.program\nargv[1]=7\nargv[2]=two words\nargv[3]=-X\nargv[4]=--stdin\n"
        + stdin
    )
    assert done.stderr == b"to stderr\n"
    assert done.returncode == 7


def test_run_of_the_example_project_as_the_docs_show(jailed: Server, project: Path) -> None:
    """docs/howto/cli.md: `emcc-trio run -X -O2 src/prog.c src/util.c src/util.h -- --case 1`."""
    done = run_cli(
        "--server", jailed.url, "-X", "-O2", "src/prog.c", "src/util.c", "src/util.h",
        "--", "--case", "1",
        cwd=project,
    )  # fmt: skip
    assert (done.stdout, done.stderr, done.returncode) == (b"sum of squares 1..4 = 30\n", b"", 0)


def test_an_abort_exits_134_as_in_a_shell(jailed: Server, tmp_path: Path) -> None:
    (tmp_path / "abort.c").write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        'int main(void) { puts("before"); fflush(stdout); abort(); }\n'
    )
    done = run_cli("--server", jailed.url, "abort.c", cwd=tmp_path)
    assert done.returncode == 134  # 128 + SIGABRT
    assert done.stdout == b"before\n"
    assert done.stderr == b"Aborted(native code called abort())\n"  # no note: no cap ended it


def test_a_cap_ends_the_run_with_a_note_after_the_programs_stderr(
    jailed: Server, tmp_path: Path
) -> None:
    (tmp_path / "flood.c").write_text(
        "#include <stdio.h>\n"
        "int main(void) { fputs(\"flooding\\n\", stderr); for (;;) putchar('x'); }\n"
    )
    done = run_cli("--server", jailed.url, "flood.c", cwd=tmp_path)
    assert done.stdout == b"x" * RUN_OUTPUT_BYTES
    assert done.stderr == (
        b"flooding\nemcc-trio: the program printed more than runOutputBytes; it was stopped\n"
    )
    assert done.returncode == 137  # 128 + SIGKILL


def test_run_prints_compile_errors_as_compile_does(jailed: Server, project: Path) -> None:
    src = project / "src"
    (src / "util.h").write_text("int sum_of_squares(int n)\n")  # no semicolon
    (src / "prog.c").write_text('#include "util.h"\nint main(void) {\n  return  missing;\n}\n')
    ran = run_cli("--server", jailed.url, "src/prog.c", "src/util.h", "--", "arg", cwd=project)
    compiled = cli("--server", jailed.url, "src/prog.c", "src/util.h", cwd=project)
    assert ran.stdout == b""
    assert ran.stderr.decode() == compiled.stderr
    assert ran.stderr.decode().splitlines() == [
        "src/util.h:1:26: error: expected ';' after top level declarator",
        "src/prog.c:3:11: error: use of undeclared identifier 'missing'",
    ]
    assert ran.returncode == compiled.returncode == 1


def test_run_on_a_server_without_the_jail_exits_2(server: Server, project: Path) -> None:
    done = run_cli("--server", server.url, "src/prog.c", "src/util.c", "src/util.h", cwd=project)
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode().startswith("emcc-trio: error: this server does not run programs")


def test_run_help_says_where_emcc_and_program_arguments_go() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emcc_trio", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith(
        "usage: emcc-trio run [-h] [--server URL] [--token TOKEN] [-X EMCC_ARG]... "
        "[--stdin FILE] FILE... [-- ARGS]\n"
    )
    assert "Arguments after -- are the program's" in done.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "emcc_trio", "--help"], capture_output=True, text=True, check=True
    )
    assert "run a program on a server" in listed.stdout
