"""Run one command as a job: own process group, own cgroup, bounded output, hard limits.

`run_job` returns when the command ends, a limit ends it, or its caller is cancelled. The
command runs under `trio.run_process` in the job's nursery, whose cancellation (a limit, a
caller gone) kills the whole process group and cgroup. In every case, before `run_job`
returns or re-raises, every process the command spawned is killed and its cgroup removed,
under a shielded cancel scope with its own deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import trio

from emcc_trio.errors import InternalError
from emcc_trio.isolation.cgroups import (
    ENTER_FAILED_STATUS,
    Caps,
    CgroupError,
    Driver,
    JobGroup,
    enter_argv,
)
from emcc_trio.models import Limit, Usage

_POLL_SECONDS: Final = 0.1
_CLEANUP_SECONDS: Final = 10.0
_READ_CHUNK: Final = 65536
# After the main process exits, how long its output may take to drain.
_DRAIN_SECONDS: Final = 1.0
# What a job may write on its status pipe (a small JSON object), and the placeholder an
# argument names the pipe's fd number with.
MAX_STATUS_BYTES: Final = 4096
STATUS_FD: Final = "{status-fd}"


@attrs.frozen
class Limits:
    timeout_seconds: float
    cpu_seconds: float
    max_output_bytes: int
    caps: Caps
    # What the job's dir (its cwd) may take on disk: RLIMIT_FSIZE bounds each file, not how
    # many there are (a project's units write an object each). None: not watched.
    disk_bytes: int | None = None


@attrs.frozen
class JobResult:
    exit_code: int | None
    output: str  # stdout (and stderr, unless kept apart) as text
    output_truncated: bool
    limit: Limit | None
    usage: Usage
    duration_seconds: float
    stdout: bytes = b""  # `output`'s bytes
    stderr: bytes | None = None  # with `separate_stderr`: the job's stderr
    stderr_truncated: bool = False
    status: bytes | None = None  # with `status_pipe`: what the job wrote to the pipe's fd


class JobStartError(InternalError):
    """The job could not be started (its cgroup or its process)."""


def classify(exit_code: int | None, killed_for: Limit | None, usage: Usage) -> Limit | None:
    """Which cap ended the job, if any. Our own kills come first: they are certain."""
    if killed_for is not None:
        return killed_for
    if usage.oom_kills > 0:
        return "memory"
    if usage.pids_limit_hits > 0 and exit_code != 0:
        return "pids"
    return None


@attrs.define
class _BoundedOutput:
    """What a job printed, up to `limit` bytes; `overflowed` once it tried to print more."""

    limit: int
    data: bytearray = attrs.field(factory=bytearray)
    overflowed: bool = False

    async def fill_from(
        self, stream: trio.abc.ReceiveStream, on_chunk: Callable[[bytes], None] | None = None
    ) -> None:
        """Read to EOF, or until the limit is passed."""
        while chunk := await stream.receive_some(_READ_CHUNK):
            kept = chunk[: self.limit + 1 - len(self.data)]
            self.data += kept
            if on_chunk is not None:
                on_chunk(bytes(kept[: self.limit + len(kept) - len(self.data)]))
            if len(self.data) > self.limit:
                del self.data[self.limit :]
                self.overflowed = True
                return


def limit_file_size(argv: Sequence[str], max_bytes: int, prlimit: str = "prlimit") -> list[str]:
    """`argv` run under util-linux's `prlimit` with RLIMIT_FSIZE (soft and hard) at
    `max_bytes`, for a job outside the jail: a write that would make any file larger fails
    with EFBIG (and SIGXFSZ) at once, so the file is never written past it. The jail sets
    the same limit itself (`Sandbox.wrap`)."""
    return [prlimit, f"--fsize={max_bytes}", "--", *argv]


def disk_usage(root: Path) -> int:
    """The bytes the tree under `root` takes on disk (its blocks, links not followed); what
    vanishes while it is read counts for nothing."""
    total = 0
    for folder, dirs, files in os.walk(root):  # skips what it cannot list
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def _kill_process_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_job(
    argv: Sequence[str],
    *,
    job_id: str,
    cwd: Path,
    env: Mapping[str, str],
    limits: Limits,
    driver: Driver | None,
    client: str = "",
    separate_stderr: bool = False,
    status_pipe: bool = False,
    on_output: Callable[[bytes], None] | None = None,
    feed: Callable[[], Awaitable[bytes]] | None = None,
) -> JobResult:
    """Run `argv` in a new session and (with a driver) a new capped cgroup named `job_id`,
    in the group of `client` (see cgroups: the CPU is shared between clients).

    `separate_stderr`: stderr is read apart from stdout, each bounded by `max_output_bytes`.
    `status_pipe`: the job also gets the write end of a pipe, whose fd number replaces every
    `STATUS_FD` in `argv`; what it writes there (at most MAX_STATUS_BYTES) is `status`.
    `on_output` sees each chunk of stdout as it is read (what is kept, within the bound).
    `feed` runs once the job has started: what it returns is the job's stdin (else there is
    none); an exception from it ends the job and is raised, once the job is gone.
    """
    try:
        group: JobGroup | None = driver.create(job_id, limits.caps, client) if driver else None
    except (CgroupError, OSError) as exc:
        raise JobStartError(f"cannot create the job's cgroup: {exc}") from exc
    start = trio.current_time()
    killed_for: Limit | None = None
    output = _BoundedOutput(limits.max_output_bytes)
    errors = _BoundedOutput(limits.max_output_bytes)
    status = _BoundedOutput(MAX_STATUS_BYTES)
    usage = Usage()
    process: trio.Process | None = None
    start_error: OSError | None = None
    feed_error: Exception | None = None
    work = trio.CancelScope(deadline=start + limits.timeout_seconds)
    streams_open = 1 + separate_stderr + status_pipe  # the pipes read to their end
    streams_done = trio.Event()

    async def kill_job(job: trio.Process) -> None:
        """run_process's deliver_cancel: the whole job goes, not only its first process."""
        _kill_process_group(job.pid)
        if group is not None:
            group.kill()

    async def read_output(
        stream: trio.abc.ReceiveStream,
        into: _BoundedOutput,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        nonlocal killed_for, streams_open
        async with stream:
            await into.fill_from(stream, on_chunk)
        if into.overflowed:
            killed_for = "output"
            work.cancel()
        streams_open -= 1
        if not streams_open:
            streams_done.set()

    async def read_status(stream: trio.abc.ReceiveStream) -> None:
        nonlocal streams_open
        async with stream:
            await status.fill_from(stream)
        streams_open -= 1
        if not streams_open:
            streams_done.set()

    async def feed_stdin(stream: trio.abc.SendStream, feed: Callable[[], Awaitable[bytes]]) -> None:
        nonlocal feed_error
        async with stream:
            try:
                data = await feed()
            except Exception as exc:  # raised below, where no nursery wraps it in a group
                feed_error = exc
                work.cancel()
                return
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(data)  # a job that has ended reads no more

    async def over_disk(disk_bytes: int) -> bool:
        return await trio.to_thread.run_sync(disk_usage, cwd) > disk_bytes

    async def watch_disk(disk_bytes: int) -> None:
        nonlocal killed_for
        while True:
            await trio.sleep(_POLL_SECONDS)
            if await over_disk(disk_bytes):
                killed_for = "disk"
                work.cancel()

    async def watch_cpu(job_group: JobGroup) -> None:
        nonlocal killed_for
        while True:
            await trio.sleep(_POLL_SECONDS)
            cpu = job_group.usage().cpu_seconds
            if cpu is not None and cpu > limits.cpu_seconds:
                killed_for = "cpu"
                work.cancel()

    status_read, status_write = os.pipe() if status_pipe else (-1, -1)
    command = [str(status_write) if arg == STATUS_FD else arg for arg in argv]
    run = partial(
        trio.run_process,
        enter_argv(group.procs_files, command) if group else command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if separate_stderr else subprocess.STDOUT,
        start_new_session=True,
        check=False,
        deliver_cancel=kill_job,
        pass_fds=(status_write,) if status_pipe else (),
    )
    try:
        with work:
            async with trio.open_nursery() as nursery:
                try:
                    process = await nursery.start(run)
                except OSError as exc:
                    start_error = exc  # raised below, where no nursery wraps it in a group
                else:
                    assert process.stdout is not None
                    if feed is not None:
                        assert process.stdin is not None
                        nursery.start_soon(feed_stdin, process.stdin, feed)
                    nursery.start_soon(read_output, process.stdout, output, on_output)
                    if process.stderr is not None:
                        nursery.start_soon(read_output, process.stderr, errors)
                    if status_pipe:
                        os.close(status_write)  # the job holds the only write end now
                        status_write = -1
                        nursery.start_soon(read_status, trio.lowlevel.FdStream(status_read))
                        status_read = -1  # the stream owns it
                    if group is not None:
                        nursery.start_soon(watch_cpu, group)
                    if limits.disk_bytes is not None:
                        nursery.start_soon(watch_disk, limits.disk_bytes)
                    await process.wait()
                    # A job that ends between two looks is judged by what it left.
                    disk_bytes = limits.disk_bytes
                    if (
                        killed_for is None
                        and disk_bytes is not None
                        and await over_disk(disk_bytes)
                    ):
                        killed_for = "disk"
                    # The job is over: stragglers go now, which also closes the pipes.
                    await kill_job(process)
                    with trio.move_on_after(_DRAIN_SECONDS):
                        await streams_done.wait()
                    nursery.cancel_scope.cancel()
        if work.cancelled_caught and killed_for is None:
            killed_for = "timeout"
    finally:
        for fd in (status_read, status_write):
            if fd >= 0:
                os.close(fd)
        # run_process has already killed and reaped the job's first process; stragglers
        # outside its process group die with the cgroup.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLEANUP_SECONDS):
            if group is not None:
                usage = group.usage()
                await group.kill_and_remove()
    if feed_error is not None:
        raise feed_error
    if start_error is not None:
        raise JobStartError(f"cannot start {argv[0]}: {start_error.strerror}") from start_error
    assert process is not None
    text = output.data.decode("utf-8", errors="replace")
    if process.returncode == ENTER_FAILED_STATUS and text.startswith("emcc-trio-enter:"):
        raise JobStartError(f"the job could not join its cgroup: {text}")
    return JobResult(
        exit_code=process.returncode,
        output=text,
        output_truncated=output.overflowed,
        limit=classify(process.returncode, killed_for, usage),
        usage=usage,
        duration_seconds=trio.current_time() - start,
        stdout=bytes(output.data),
        stderr=bytes(errors.data) if separate_stderr else None,
        stderr_truncated=errors.overflowed,
        status=bytes(status.data) if status_pipe else None,
    )
