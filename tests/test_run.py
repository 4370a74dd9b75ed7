"""POST /run: the program compiled (or taken from the cache) runs under node in a jail and a
cgroup of its own, with its own caps; stdin, argv, stdout, stderr and how it ended come back.

One program (`programs/run_modes.c`) serves every test: its first argument picks a mode, and
each bomb mode can meet one cap only (see the program). The module's server caps runs at
a wall time far above the CPU cap, so only the sleeping mode (no CPU at all) meets the wall
clock, and the spinning one (constant memory, no output) meets the CPU cap first.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emcc_trio.testing.docs import examples, run_example
from emcc_trio.testing.harness import (
    MakeServer,
    Server,
    eventually,
    server_config,
    start_server,
)
from emcc_trio.testing.programs import HELLO_C, program

RUN_MODES = program("run_modes.c")
RUN_CAPS = {
    "runMemoryMB": 192,
    "runCpuSeconds": 2,
    "runTimeoutSeconds": 60,
    "runOutputBytes": 32 * 1024,
}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One jailed server for the module (nsjail's outside user must reach its dirs)."""
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-run-"))
    workdir.chmod(0o711)
    started = start_server(workdir, server_config(workdir, nsjailEnabled=True, **RUN_CAPS))
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(server: Server, *argv: str, **fields: Any) -> dict[str, Any]:
    body = {"type": "c", "code": RUN_MODES, "argv": list(argv), **fields}
    with server.client() as client:
        response = client.post("/run", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ok"] is True, answer
    ran: dict[str, Any] = answer["run"]
    return ran


def test_argv_and_stdin_reach_main_and_the_output_comes_back_exactly(server: Server) -> None:
    ran = run(server, "echo", "7", "two words", stdin="line one\nlast, no newline")
    assert ran["stdout"] == (
        "argv[0]=./this.program\nargv[1]=echo\nargv[2]=7\nargv[3]=two words\n"
        "line one\nlast, no newline"
    )
    assert ran["stdoutEncoding"] == "utf-8"
    assert ran["stderr"] == "to stderr\n"
    assert (ran["exitCode"], ran["signal"], ran["limit"]) == (7, None, None)
    assert ran["usage"]["peakMemoryBytes"] > 0
    server.assert_clean()


def test_binary_stdin_comes_back_as_base64(server: Server) -> None:
    data = bytes(range(256)) * 4
    ran = run(server, "echo", stdinBase64=base64.b64encode(data).decode())
    assert ran["stdoutEncoding"] == "base64"
    printed = base64.b64decode(ran["stdout"])
    assert printed == b"argv[0]=./this.program\nargv[1]=echo\n" + data


def test_exit_codes_and_signals(server: Server) -> None:
    exited = run(server, "exit", "42")
    assert (exited["exitCode"], exited["signal"]) == (42, None)
    aborted = run(server, "abort")
    assert (aborted["exitCode"], aborted["signal"], aborted["limit"]) == (None, "SIGABRT", None)
    assert "Aborted" in aborted["stderr"]
    trapped = run(server, "segv")
    assert (trapped["exitCode"], trapped["signal"]) == (None, "SIGSEGV")
    assert "memory access out of bounds" in trapped["stderr"]
    server.assert_clean()


def test_runs_are_never_cached_but_their_compile_is(server: Server) -> None:
    body = {"type": "c", "code": RUN_MODES + "\n// cached once", "argv": ["echo"]}
    with server.client() as client:
        first = client.post("/run", json={**body, "stdin": "first"}).json()
        second = client.post("/run", json={**body, "stdin": "second"}).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["id"] == second["id"]
    assert first["run"]["stdout"].endswith("first")
    assert second["run"]["stdout"].endswith("second")


def test_the_memory_cap_ends_a_growing_heap(server: Server) -> None:
    ran = run(server, "memory", limits={"memoryMB": 96})
    assert (ran["limit"], ran["signal"], ran["exitCode"]) == ("memory", "SIGKILL", None)
    assert "runMemoryMB" in ran["message"]
    server.assert_clean()


def test_the_cpu_cap_ends_a_spin(server: Server) -> None:
    ran = run(server, "spin", limits={"cpuSeconds": 1})
    assert (ran["limit"], ran["signal"]) == ("cpu", "SIGKILL")
    assert ran["usage"]["cpuSeconds"] >= 1
    server.assert_clean()


def test_the_output_cap_ends_a_flood_and_keeps_the_first_bytes(server: Server) -> None:
    ran = run(server, "flood", limits={"outputBytes": 10000})
    assert (ran["limit"], ran["stdoutTruncated"]) == ("output", True)
    assert ran["stdout"] == "x" * 10000
    server.assert_clean()


def test_the_wall_clock_ends_a_sleeper(server: Server) -> None:
    ran = run(server, "sleep", limits={"timeoutSeconds": 1})
    assert (ran["limit"], ran["signal"]) == ("timeout", "SIGKILL")
    assert ran["usage"]["cpuSeconds"] < 1  # it slept: no other cap was near
    server.assert_clean()


def test_a_run_reaches_no_host_file_no_network_and_writes_only_its_tmpfs(
    server: Server,
) -> None:
    planted = server.workdir / "planted-secret"
    planted.write_text("secret")
    port = str(server.address[1])
    ran = run(
        server,
        "escape",
        str(planted),
        "/etc/passwd",
        "/proc/self/environ",
        f"port:{port}",
        "write:/job/app.js",
        "write:/tmp/scratch",
    )
    lines = ran["stdout"].splitlines()
    assert f"{planted} ENOENT" in lines
    assert "/etc/passwd ENOENT" in lines
    assert "/proc/self/environ ENOENT" in lines
    network = next(line for line in lines if line.startswith("port:"))
    assert network.split()[1] in ("ENETUNREACH", "EADDRNOTAVAIL", "ECONNREFUSED"), lines
    assert "connected" not in network
    assert "write:/job/app.js EROFS" in lines
    assert "write:/tmp/scratch written" in lines
    assert planted.read_text() == "secret"
    server.assert_clean()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stdin": "a", "stdinBase64": "YQ=="}, 'give "stdin" or "stdinBase64", not both'),
        ({"stdinBase64": "not base64!"}, '"stdinBase64" is not valid base64'),
        ({"stdin": 5}, '"stdin" must be a string'),
        ({"argv": "echo"}, '"argv" must be a list of strings'),
        ({"argv": ["a\u0000b"]}, "NUL character"),
        ({"limits": {"timeoutSeconds": 600}}, "above this server's cap of 60"),
        ({"limits": {"memoryMB": 0}}, '"memoryMB" must be a positive whole number'),
        ({"limits": {"memoryMB": True}}, '"memoryMB" must be a positive whole number'),
        ({"limits": {"pids": 3}}, "unknown run limit(s): pids"),
        ({"limits": [1]}, '"limits" must be an object'),
        ({"args": ["-pthread"]}, "runs have no threads"),
    ],
)
def test_bad_run_fields_are_400s_that_name_them(
    server: Server, fields: dict[str, Any], message: str
) -> None:
    with server.client() as client:
        response = client.post("/run", json={"type": "c", "code": HELLO_C, **fields})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_a_compile_error_answers_as_compile_does(server: Server) -> None:
    with server.client() as client:
        response = client.post("/run", json={"type": "c", "code": "int main(void) { oops }"})
    assert response.status_code == 400
    body = response.json()
    assert "run" not in body
    assert body["diagnostics"][0]["severity"] == "error"


def test_form_and_raw_bodies_carry_the_run_fields(server: Server) -> None:
    with server.client() as client:
        form = client.post(
            "/run",
            data={"type": "c", "argv": ["echo", "3"], "limits": '{"timeoutSeconds": 30}'},
            files={"main.c": RUN_MODES.encode(), "stdin": b"from a file"},
        )
        raw = client.post(
            "/run",
            params={"type": "c", "argv": ["echo"], "stdin": "from the query"},
            content=RUN_MODES.encode(),
            headers={"Content-Type": "text/plain"},
        )
        json_with_query = client.post("/run", params={"argv": "x"}, json={"code": HELLO_C})
    assert form.status_code == 200, form.text
    assert form.json()["run"]["stdout"].endswith("from a file")
    assert form.json()["run"]["exitCode"] == 3
    assert raw.status_code == 200, raw.text
    assert raw.json()["run"]["stdout"].endswith("from the query")
    assert json_with_query.status_code == 400
    assert "raw source body only" in json_with_query.json()["error"]


def test_a_run_holds_a_gate_slot_as_a_compile_does(make_server: MakeServer) -> None:
    """With one slot, a compile sent while a run sleeps waits past its queue timeout."""
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-run-gate-"))
    workdir.chmod(0o711)
    try:
        server = make_server(
            workdir=workdir / "server",
            nsjailEnabled=True,
            maxConcurrentJobs=1,
            queueTimeoutSeconds=1,
            runTimeoutSeconds=60,
        )
        answers: list[httpx.Response] = []

        def sleeper() -> None:
            with server.client() as client:
                answers.append(
                    client.post(
                        "/run",
                        json={
                            "type": "c",
                            "code": RUN_MODES,
                            "argv": ["sleep"],
                            "limits": {"timeoutSeconds": 20},
                        },
                    )
                )

        thread = threading.Thread(target=sleeper)
        thread.start()
        eventually(
            lambda: any("runner.js" in line for line in server.job_processes()),
            120,
            "the sleeping run's node",
        )
        refused = server.compile(HELLO_C)
        assert refused.status_code == 503, refused.text
        assert "no capacity became free in time" in refused.json()["error"]
        thread.join(60)
        assert answers[0].json()["run"]["limit"] == "timeout"
        server.assert_clean()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_without_the_jail_runs_are_off(server: Server, make_server: MakeServer) -> None:
    unjailed = make_server()
    with unjailed.client() as client:
        response = client.post("/run", json={"type": "c", "code": HELLO_C})
    assert response.status_code == 501
    assert "nsjailEnabled" in response.json()["error"]


def test_the_run_and_job_examples_work_verbatim(server: Server) -> None:
    """The examples page's commands, pointed at this server, give what the page shows: the
    same run (output, exit, signal, cap), the same sequence of job events and result."""
    pairs = examples("tutorial/examples.md", "Running programs and jobs")
    assert len(pairs) == 4
    for command, shown in pairs:
        answer = run_example(command, server.url)
        if shown.startswith("{"):
            expected, got = json.loads(shown)["run"], json.loads(answer)["run"]
            for key in ("stdout", "stderr", "exitCode", "signal", "limit", "message"):
                assert got[key] == expected[key], (command, key)
            continue
        names = re.findall(r"^event: (\w+)$", answer, re.M)
        assert names == re.findall(r"^event: (\w+)$", shown, re.M)
        result = json.loads(answer.rstrip().rsplit("\ndata: ", 1)[1])
        assert (
            result["body"]["diagnostics"]
            == json.loads(shown.rstrip().rsplit("\ndata: ", 1)[1])["body"]["diagnostics"]
        )
