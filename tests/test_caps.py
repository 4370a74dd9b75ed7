"""Hard per-job caps, enforced by the kernel: v1 here, v2 in the VM (`nox -s cgroup2`).

The driver under test comes from EMCC_TRIO_TEST_DRIVER ("v1" by default, "v2" in the VM,
where EMCC_TRIO_TEST_V2_ROOT names a delegated group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from emcc_trio.isolation import runner
from emcc_trio.isolation.cgroups import (
    Caps,
    JobGroup,
    V1Driver,
    V2Driver,
    client_group_name,
    instance_tag,
    open_driver,
    read_budget,
)
from emcc_trio.isolation.runner import JobStartError, Limits, disk_usage, run_job
from emcc_trio.testing.harness import MakeServer, eventually
from emcc_trio.testing.programs import HELLO_C, program

MB = 1024 * 1024
DRIVER_KIND = os.environ.get("EMCC_TRIO_TEST_DRIVER", "v1")


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[V1Driver | V2Driver]:
    root = Path(os.environ.get("EMCC_TRIO_TEST_V2_ROOT", "/nonexistent"))
    if DRIVER_KIND == "v2":
        os.makedirs(root, exist_ok=True)
    opened = open_driver(DRIVER_KIND, root, instance_tag(tmp_path))
    assert opened is not None
    yield opened
    assert await opened.recover() == [], "a test left a job group behind"
    opened.close()


def limits(**caps: float) -> Limits:
    return Limits(
        timeout_seconds=float(caps.get("timeout", 60)),
        cpu_seconds=float(caps.get("cpu_seconds", 60)),
        max_output_bytes=65536,
        disk_bytes=int(caps["disk_mb"] * MB) if "disk_mb" in caps else None,
        caps=Caps(
            memory_bytes=int(caps.get("memory_mb", 256)) * MB,
            cpu_max=float(caps.get("cpu_max", 1.0)),
            pids_max=int(caps.get("pids_max", 64)),
        ),
    )


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.cgroup2
async def test_memory_cap_oom_kills(driver: V1Driver | V2Driver, tmp_path: Path) -> None:
    result = await run_job(
        python("b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"),
        job_id="mem",
        cwd=tmp_path,
        env={},
        limits=limits(memory_mb=64),
        driver=driver,
    )
    assert result.exit_code != 0
    assert result.limit == "memory"
    assert result.usage.oom_kills >= 1
    assert result.usage.peak_memory_bytes is not None
    assert result.usage.peak_memory_bytes <= 64 * MB


@pytest.mark.cgroup2
async def test_pids_cap_stops_a_fork_loop(driver: V1Driver | V2Driver, tmp_path: Path) -> None:
    fork_loop = (
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as exc:\n"
        "    print('fork failed after', children, exc)\n"
        "    raise SystemExit(1)\n"
    )
    result = await run_job(
        python(fork_loop),
        job_id="pids",
        cwd=tmp_path,
        env={},
        limits=limits(pids_max=8),
        driver=driver,
    )
    assert "fork failed after" in result.output
    assert result.limit == "pids"
    assert result.usage.pids_limit_hits >= 1
    assert result.usage.peak_pids is not None
    assert result.usage.peak_pids <= 8


@pytest.mark.cgroup2
async def test_cpu_quota_throttles(driver: V1Driver | V2Driver, tmp_path: Path) -> None:
    spin = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\n"
    result = await run_job(
        python(spin),
        job_id="cpu",
        cwd=tmp_path,
        env={},
        limits=limits(cpu_max=0.2),
        driver=driver,
    )
    assert result.exit_code == 0
    assert result.usage.cpu_throttled > 0
    assert result.usage.cpu_seconds is not None
    # 0.2 CPUs over ~1.5 s of wall time: far below the 1.5 s an uncapped spin would use.
    assert result.usage.cpu_seconds < 0.2 * result.duration_seconds + 0.3


@pytest.mark.cgroup2
async def test_cpu_seconds_cap_kills(driver: V1Driver | V2Driver, tmp_path: Path) -> None:
    result = await run_job(
        python("while True: pass"),
        job_id="cpusec",
        cwd=tmp_path,
        env={},
        limits=limits(cpu_seconds=0.5, timeout=30),
        driver=driver,
    )
    assert result.limit == "cpu"


@pytest.mark.cgroup2
async def test_whole_group_is_killed_even_outside_the_process_group(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    # A grandchild that starts its own session escapes a process-group kill, not the cgroup.
    escape = (
        "import os, subprocess, sys\n"
        "subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print('spawned', flush=True)\n"
    )
    result = await run_job(
        python(escape),
        job_id="escape",
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        limits=limits(),
        driver=driver,
    )
    assert result.output == "spawned\n"
    assert _processes_running("sleep 300") == []


async def test_timeout_kills_the_whole_group(driver: V1Driver | V2Driver, tmp_path: Path) -> None:
    result = await run_job(
        python(_ESCAPE_AND_HANG),
        job_id="timeout",
        cwd=tmp_path,
        env={},
        limits=limits(timeout=1),
        driver=driver,
    )
    assert result.limit == "timeout"
    assert _processes_naming(tmp_path) == []


async def test_output_cap_kills_and_keeps_the_first_bytes(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    result = await run_job(
        python("import sys\nwhile True: sys.stdout.write('y' * 4096)"),
        job_id="output",
        cwd=tmp_path,
        env={},
        limits=limits(),
        driver=driver,
    )
    assert result.limit == "output"
    assert result.output_truncated
    assert result.output == "y" * 65536


def write_mb(count: int, then: str = "") -> list[str]:
    """A job that writes `count` files of 1 MiB into its dir, one folder down, then runs `then`."""
    return python(
        "import os\nos.mkdir('sub')\n"
        f"for i in range({count}):\n    open(f'sub/{{i}}', 'wb').write(b'x' * (1 << 20))\n" + then
    )


@pytest.mark.parametrize(
    ("count", "then", "disk_mb", "polled", "limit"),
    [
        # Only the poll can stop it: it never ends by itself (else the timeout would).
        (32, "import time\ntime.sleep(3600)", 16, True, "disk"),
        # With no poll in its lifetime, only the look at the end can see it.
        (32, "", 16, False, "disk"),
        (4, "", 16, True, None),
        (32, "", None, True, None),  # no cap
    ],
    ids=["stopped", "ended", "within", "unwatched"],
)
async def test_the_disk_cap_counts_the_job_dirs_files(
    driver: V1Driver | V2Driver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    then: str,
    disk_mb: int | None,
    polled: bool,
    limit: str | None,
) -> None:
    if not polled:
        monkeypatch.setattr(runner, "_POLL_SECONDS", 3600.0)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    caps = {} if disk_mb is None else {"disk_mb": disk_mb}
    result = await run_job(
        write_mb(count, then),
        job_id="disk",
        cwd=job_dir,
        env={},
        limits=limits(**caps),
        driver=driver,
    )
    assert result.limit == limit, result.output
    assert (result.exit_code == 0) == (then == ""), result.exit_code  # only "stopped" is killed
    assert disk_usage(job_dir) >= min(count, 16) * MB
    assert _processes_naming(tmp_path) == []


def test_disk_usage_counts_blocks_below_the_root_and_follows_no_links(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "data").write_bytes(b"x" * (3 << 20))
    (tmp_path / "sparse").touch()
    os.truncate(tmp_path / "sparse", 1 << 30)  # a hole takes no blocks
    (tmp_path / "link").symlink_to("/usr")
    used = disk_usage(tmp_path)
    assert 3 << 20 <= used < 4 << 20
    assert disk_usage(tmp_path / "missing") == 0


async def test_cancelled_caller_kills_the_whole_group_and_removes_it(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    returned = False
    # A guard against a hang, not a verdict: under the VM's emulated CPU Python starts slowly.
    with trio.fail_after(300), trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def job() -> None:
                nonlocal returned
                await run_job(
                    python(_ESCAPE_AND_HANG),
                    job_id="cancelled",
                    cwd=tmp_path,
                    env={},
                    limits=limits(),
                    driver=driver,
                )
                returned = True

            nursery.start_soon(job)
            while not _processes_naming(tmp_path):
                await trio.sleep(0.01)
            scope.cancel()
    assert scope.cancelled_caught
    assert not returned
    # The group is gone (the fixture checks), so every member has exited.
    assert _processes_naming(tmp_path) == []


async def test_what_a_feed_returns_is_the_jobs_stdin(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    async def feed() -> bytes:
        return b"laid out\n"

    result = await run_job(
        python("import sys; print(sys.stdin.read().upper(), end='')"),
        job_id="fed",
        cwd=tmp_path,
        env={},
        limits=limits(),
        driver=driver,
        feed=feed,
    )
    assert (result.exit_code, result.output) == (0, "LAID OUT\n")


async def test_a_feed_that_fails_ends_the_job_and_is_raised(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    """As a build whose files cannot be laid out after its driver started: the whole job
    goes (a process outside its process group too), then the feed's error is raised."""

    async def feed() -> bytes:
        with trio.fail_after(300):  # a guard against a hang, not a verdict
            while not _processes_naming(tmp_path):
                await trio.sleep(0.01)
        raise ValueError("cannot lay out")

    with pytest.raises(ValueError, match="cannot lay out"):
        await run_job(
            python(_ESCAPE_AND_HANG),
            job_id="feedfails",
            cwd=tmp_path,
            env={},
            limits=limits(),
            driver=driver,
            feed=feed,
        )
    # The group is gone (the fixture checks), so every member has exited.
    assert _processes_naming(tmp_path) == []


async def test_unstartable_job_is_a_start_error_and_leaves_no_group(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    with pytest.raises(JobStartError, match="No such file or directory"):
        await run_job(
            ["true"],
            job_id="nocwd",
            cwd=tmp_path / "missing",
            env={},
            limits=limits(),
            driver=driver,
        )


async def test_a_job_that_cannot_join_its_group_is_a_start_error(
    driver: V1Driver | V2Driver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = type(driver).create

    def create_then_remove_one(
        self: V1Driver | V2Driver, job_id: str, caps: Caps, client: str = ""
    ) -> JobGroup:
        group = create(self, job_id, caps, client)  # type: ignore[arg-type]
        group.procs_files[-1].parent.rmdir()
        return group

    monkeypatch.setattr(type(driver), "create", create_then_remove_one)
    with pytest.raises(JobStartError, match="could not join its cgroup: emcc-trio-enter:"):
        await run_job(
            python("print('never runs')"),
            job_id="nojoin",
            cwd=tmp_path,
            env={},
            limits=limits(),
            driver=driver,
        )


async def test_without_cgroups_stragglers_do_not_hold_the_job(tmp_path: Path) -> None:
    # One child stays in the job's process group, one starts its own session and keeps
    # the output pipe open: the job still ends when its main process does.
    stragglers = (
        "import subprocess, sys\n"
        f"hang = [sys.executable, '-c', 'import time; time.sleep(300)', {str(tmp_path)!r}]\n"
        "subprocess.Popen(hang + ['group'])\n"
        "subprocess.Popen(hang + ['session'], start_new_session=True)\n"
        "print('done', flush=True)\n"
    )
    try:
        result = await run_job(
            python(stragglers),
            job_id="nogroup",
            cwd=tmp_path,
            env={},
            limits=limits(timeout=60),
            driver=None,
        )
        assert result.exit_code == 0
        assert result.limit is None
        assert result.output == "done\n"
        eventually(
            lambda: not any(c.endswith(" group") for c in _processes_naming(tmp_path)),
            10,
            "the straggler in the job's process group to die",
        )
    finally:
        for pid in _pids_naming(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_without_cgroups_an_unknown_command_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(JobStartError, match="cannot start /nonexistent/emcc"):
        await run_job(
            ["/nonexistent/emcc"],
            job_id="nocommand",
            cwd=tmp_path,
            env={},
            limits=limits(),
            driver=None,
        )


# Starts a child in its own session (out of the process group), says so, then hangs.
_ESCAPE_AND_HANG = (
    "import os, subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', os.getcwd()],\n"
    "                 start_new_session=True)\n"
    "print('escaped', flush=True)\n"
    "time.sleep(300)\n"
)


def _pids_naming(path: Path) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and str(path) in _cmdline(p)
    ]


def _processes_naming(path: Path) -> list[str]:
    """Command lines that name `path`: the test's own processes, told apart from others'."""
    return [_cmdline(Path(f"/proc/{pid}")) for pid in _pids_naming(path)]


@pytest.mark.cgroup2
async def test_the_budget_group_bounds_every_job_together(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    # The job's own cap (256 MB) would allow 200 MB: the budget group above it (64 MB) does not.
    group = driver.budget_group()
    limit_file, _ = group.files
    group.set_limit(64 * MB)
    try:
        assert int(limit_file.read_text()) == 64 * MB
        result = await run_job(
            python("b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"),
            job_id="budget",
            cwd=tmp_path,
            env={},
            limits=limits(memory_mb=256),
            driver=driver,
        )
    finally:
        group.set_limit(None)
    assert result.limit == "memory"
    assert result.usage.oom_kills >= 1
    assert result.usage.peak_memory_bytes is not None
    # The kernel lets the dying OOM victim charge past the limit so that it can exit: the peak
    # may pass 64 MB by a little, far from the 200 MB asked for and the job's own 256 MB.
    assert result.usage.peak_memory_bytes < 128 * MB
    assert read_budget(*group.files) is None, "set_limit(None) lifts the limit"


def _processes_running(command: str) -> list[Path]:
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == command]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_memory_bomb_compile_is_reported_as_memory(make_server: MakeServer) -> None:
    # Generous CPU and time caps: under the VM's emulated CPU the bomb grows slowly.
    server = make_server(jobMemoryMaxMB=128, jobCpuSeconds=900, jobTimeoutSeconds=900)
    response = server.compile(program("memory_bomb.c"))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["limit"] == "memory"
    assert "jobMemoryMaxMB" in body["error"]
    assert body["usage"]["peakMemoryBytes"] <= 128 * MB
    server.assert_clean()
    assert server.compile(HELLO_C).status_code == 200


def _job_cpu_seconds(driver: V1Driver | V2Driver, client: str, job_id: str) -> float:
    """CPU time used so far by a running job's group."""
    if isinstance(driver, V2Driver):
        stat = driver.jobs / client_group_name(client) / job_id / "cpu.stat"
        usec = next(x for x in stat.read_text().splitlines() if x.startswith("usage_usec "))
        return int(usec.split()[1]) / 1e6
    usage = driver.bases["cpuacct"] / client_group_name(client) / job_id / "cpuacct.usage"
    return int(usage.read_text()) / 1e9


@pytest.mark.cgroup2
async def test_cpu_is_shared_between_clients_not_jobs(
    driver: V1Driver | V2Driver, tmp_path: Path
) -> None:
    """Client a runs three CPU spinners per core and client b one: once all of them spin, the
    per-client level gives each client half of the CPU, so b's one job gets about six times the
    CPU of each of a's (job-level sharing alone would give every job the same). Measured over
    a window that starts when every spinner has started, so slow starts (a VM) do not count."""
    cores = len(os.sched_getaffinity(0))
    jobs = {f"a{n}": "a" for n in range(3 * cores)} | {"b0": "b"}
    spin = "import sys\nopen(sys.argv[1], 'w').close()\nwhile True: pass\n"

    async def run(client: str, name: str) -> None:
        await run_job(
            [*python(spin), str(tmp_path / f"ready-{name}")],
            job_id=name,
            cwd=tmp_path,
            env={},
            limits=limits(cpu_max=float(cores), timeout=600, cpu_seconds=600),
            driver=driver,
            client=client,
        )

    async with trio.open_nursery() as nursery:
        for name, client in jobs.items():
            nursery.start_soon(run, client, name)
        while not all((tmp_path / f"ready-{name}").exists() for name in jobs):
            await trio.sleep(0.05)
        before = {name: _job_cpu_seconds(driver, client, name) for name, client in jobs.items()}
        await trio.sleep(3)  # the measuring window
        used = {
            name: _job_cpu_seconds(driver, client, name) - before[name]
            for name, client in jobs.items()
        }
        nursery.cancel_scope.cancel()
    a_mean = sum(v for k, v in used.items() if k.startswith("a")) / (3 * cores)
    assert used["b0"] > 2 * a_mean, used
