"""The server end to end on cgroup v2, in the VM (`nox -s cgroup2`): the v2 driver, nsjail and
gating on, one server for the module.

Skipped elsewhere: the same paths run on v1 in test_api, test_caps, test_lifecycle and
test_sandbox. Under the VM's emulated CPU a hello world takes about 20 s, so every wait is
long, but each ends as soon as what it waits for happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gate import (
    SLOW_SECONDS,
    V2,
    budget_limit_file,
    configured,
    expected_default_budget,
    metric,
)
from test_lifecycle import open_compile

from emcc_trio.isolation.leftovers import job_cgroups
from emcc_trio.testing.harness import Server, eventually, server_config, start_server
from emcc_trio.testing.programs import HELLO_C, program, spin

MB = 1024 * 1024
# Small, so the memory bomb reaches it soon even under emulation; the CPU and wall-clock caps
# are far away, so memory is the only cap that can end the bomb.
JOB_MEMORY_MAX_MB = 160

pytestmark = [
    pytest.mark.cgroup2,
    pytest.mark.skipif(not V2, reason="the cgroup v2 VM only: nox -s cgroup2"),
]


def job_groups() -> list[Path]:
    """The job groups below <root>/jobs (in their clients' groups), and any client group left
    without a job."""
    return job_cgroups(Path(), Path(os.environ["EMCC_TRIO_TEST_V2_ROOT"]))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    os.makedirs(os.environ["EMCC_TRIO_TEST_V2_ROOT"], exist_ok=True)
    # Job dirs on a tmpfs of the guest: on the 9p share of the host (a --rwdir)
    # wasm-emscripten-finalize cannot open app.wasm. 0711: nsjail's outside user must reach it.
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-v2-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "mode=0711,size=1g", "emcc-trio-v2", str(workdir)],
        check=True,
    )
    config = server_config(
        workdir,
        nsjailEnabled=True,
        enableResourceGating=True,
        jobMemoryMaxMB=JOB_MEMORY_MAX_MB,
        jobCpuSeconds=SLOW_SECONDS,
        jobTimeoutSeconds=SLOW_SECONDS,
        # Runs: under emulation node starts slowly, so only the memory cap is near.
        runCpuSeconds=SLOW_SECONDS,
        runTimeoutSeconds=SLOW_SECONDS,
        # The memos' fills are compiles of the server's own, each as slow as a compile here;
        # they are the same on v1 and v2 and tested on v1 (test_memos.py).
        glueMemoMaxMB=0,
        pchMaxMB=0,
    )
    started = start_server(workdir, config)
    try:
        yield started
        assert started.stop() == 0
    finally:
        if started.proc.poll() is None:
            started.proc.kill()
            started.proc.wait()
        print(started.log())
        subprocess.run(["umount", str(workdir)], check=True)
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_server_runs_with_the_v2_driver_nsjail_and_a_memory_budget(server: Server) -> None:
    setup = configured(server)
    assert setup["cgroups"] == "v2"
    assert setup["nsjail"]
    assert setup["gating"] is True
    # The default budget, on <root>/jobs: 75 % of the guest's memory.
    limit_file = budget_limit_file(server)
    assert limit_file == Path(os.environ["EMCC_TRIO_TEST_V2_ROOT"]) / "jobs" / "memory.max"
    budget = expected_default_budget(limit_file)
    assert int(limit_file.read_text()) == budget
    assert setup["memory_budget_bytes"] == budget
    assert metric(server, "emcc_trio_memory_budget_bytes") == budget


def test_hello_world_answers_200_with_usage(server: Server) -> None:
    response = server.compile(HELLO_C, timeout=SLOW_SECONDS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    usage = body["usage"]
    assert 0 < usage["peakMemoryBytes"] <= JOB_MEMORY_MAX_MB * MB
    assert usage["cpuSeconds"] > 0
    assert usage["peakPids"] >= 2  # nsjail and emcc at least
    with server.client() as client:
        wasm = client.get(body["wasm"])
    assert wasm.status_code == 200
    assert wasm.content.startswith(b"\0asm")
    server.settle_memos()  # a fill is a job of the server's own
    assert job_groups() == []
    server.assert_clean()


def test_a_memory_bomb_answers_422_memory(server: Server) -> None:
    response = server.compile(program("memory_bomb.c"), timeout=SLOW_SECONDS)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["limit"] == "memory"
    assert "jobMemoryMaxMB" in body["error"]
    assert body["usage"]["peakMemoryBytes"] <= JOB_MEMORY_MAX_MB * MB
    assert metric(server, "emcc_trio_cap_kills_total", limit="memory") == 1
    server.settle_memos()  # a fill is a job of the server's own
    assert job_groups() == []
    server.assert_clean()


def runs_emxx(command_line: str) -> bool:
    """em++ as /usr/bin/em++ runs it (`python3 .../em++.py`) or as the launcher does
    (`python3 .../emcc_launch.py ROOT em++ ...`)."""
    return any(arg == "em++" or arg.endswith("/em++.py") for arg in command_line.split())


def test_a_hang_up_mid_compile_leaves_no_job_group(server: Server) -> None:
    sock = open_compile(server, spin(), "cpp")
    # Hang up as soon as emscripten runs (inside the jail, in the job's group): spin.cpp never
    # ends on its own, and stays far below the memory cap.
    eventually(
        lambda: [p for p in server.job_processes() if runs_emxx(p)],
        SLOW_SECONDS,
        "emscripten to run",
    )
    groups = job_groups()
    assert len(groups) == 1
    assert (groups[0] / "cgroup.procs").read_text().split(), "the job runs in its group"
    assert server.leftovers()["job_dirs"], "the job dir exists while compiling"
    sock.close()
    eventually(lambda: job_groups() == [], 30, f"{groups[0]} to be removed")
    server.assert_clean(timeout=30)
    hung_up = eventually(
        lambda: [e for e in server.log_events() if e.get("status") == 499],
        30,
        "the access log line of the dropped request",
    )
    assert hung_up[0]["path"] == "/compile"


def test_a_run_meets_its_own_memory_cap_in_its_own_group(server: Server) -> None:
    body = {"code": program("run_modes.c"), "argv": ["echo"], "stdin": "on v2"}
    with server.client(SLOW_SECONDS) as client:
        echoed = client.post("/run", json=body).json()
        bombed = client.post(
            "/run", json={**body, "argv": ["memory"], "limits": {"memoryMB": 96}}
        ).json()
    assert echoed["run"]["stdout"].endswith("on v2"), echoed
    assert echoed["run"]["exitCode"] == 0
    assert (bombed["run"]["limit"], bombed["run"]["signal"]) == ("memory", "SIGKILL"), bombed
    assert bombed["run"]["usage"]["peakMemoryBytes"] <= 96 * MB
    assert job_groups() == []
    server.assert_clean()
