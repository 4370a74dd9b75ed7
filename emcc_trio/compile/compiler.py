"""One compile from start to end: job dir, source file, run, bounded output, publish, cleanup.

`Compiler.compile` is cancellation-safe: whether it returns, raises or is cancelled (client
gone, shutdown), the job's processes are dead and its cgroup is gone before control leaves
it; its dir is removed too, unless that overruns its deadline (see `_remove_job_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs
import trio

from emcc_trio.compile.build import OBJECT_DIR
from emcc_trio.compile.builder import Builder, PreparedBuild, read_regular
from emcc_trio.compile.glue import MAX_ENTRY_BYTES
from emcc_trio.compile.launcher import (
    JAIL_GLUE_DIR,
    JAIL_LAUNCHER_DIR,
    JAIL_PCH_DIR,
    Launcher,
    Mode,
)
from emcc_trio.compile.memos import MISSES_SUBDIR, Memos
from emcc_trio.compile.pch import header_name, pch_name
from emcc_trio.compile.policy import compiler_argv
from emcc_trio.compile.progress import WATCHER
from emcc_trio.compile.quota import ArtifactQuota
from emcc_trio.errors import InternalError, RequestError
from emcc_trio.isolation.cgroups import Driver
from emcc_trio.isolation.runner import JobResult, Limits, limit_file_size, run_job
from emcc_trio.isolation.sandbox import JOB_MOUNT, Sandbox
from emcc_trio.models import MAIN_FILE, CompileRequest, CompileResult, Limit
from emcc_trio.storage.artifacts import (
    MAX_ARTIFACT_BYTES,
    UnsafeOutputError,
    job_outputs,
    output_bytes,
)
from emcc_trio.storage.base import Store

log = logging.getLogger("emcc_trio.jobs")
_CLEANUP_SECONDS: Final = 10.0
TMP_SUBDIR: Final = ".tmp"
# A memo fill's job dir: the material in, the entry out (a PCH's in its own dir).
_MATERIAL_FILE: Final = "material"
_ENTRY_FILE: Final = "entry.json"
_PCH_OUT: Final = "pch"
MAX_PCH_BYTES: Final = 256 * 1024 * 1024
# What emsdk installs need to find their config, cache and tools when not jailed.
_PASSED_ENV_PREFIXES: Final = ("EM_", "EMSDK")
MB: Final = 1024 * 1024
# Errors writing a request's files that are the server's, not the request's: a 5xx, never a 400.
_SERVER_ERRNOS: Final = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
        errno.EIO,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
    }
)
# How a write past RLIMIT_FSIZE shows in a failed compile's output: strerror(EFBIG) from
# wasm-ld, clang or Python, node's EFBIG, or emcc naming the SIGXFSZ a tool died of.
_FILE_TOO_LARGE: Final = re.compile(r"file too large|\bEFBIG\b|\bSIGXFSZ\b", re.IGNORECASE)


def new_job_id() -> str:
    """128 random bits: artifact URLs are capabilities."""
    return secrets.token_hex(16)


def compile_env(
    job_dir: Path,
    node_path: str,
    environ: Mapping[str, str],
    compiler_dir: str = "/usr/bin",
    emscripten_cache: Path | None = None,
) -> dict[str, str]:
    """A small, fixed environment: the server's PATH may hold slow shims (pyenv) or a venv.
    `emscripten_cache` replaces emscripten's own (its ports built in)."""
    env = {
        "PATH": f"{compiler_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(job_dir),
        "LANG": "C.UTF-8",
        "NODE_PATH": node_path,
        # emcc's temp dirs land in the job dir, so a killed job leaves none in /tmp.
        "TMPDIR": str(job_dir / TMP_SUBDIR),
        # emcc's per-call sanity check re-validates its toolchain (about 15 ms of a 300 ms
        # hello world); the toolchain is fixed while the server runs. Artifacts are identical.
        "EMCC_SKIP_SANITY_CHECK": "1",
    }
    env.update({k: v for k, v in environ.items() if k.startswith(_PASSED_ENV_PREFIXES)})
    if emscripten_cache is not None:
        env["EM_CACHE"] = str(emscripten_cache)
    return env


def write_file(root: Path, path: str, content: bytes) -> None:
    """Create `root/path` and its parent dirs without following any link on the way: the
    path was checked by sources.check_files, this is the second lock."""
    *dirs, name = path.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in dirs:
            with contextlib.suppress(FileExistsError):  # made for an earlier file
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        out = os.open(name, flags, 0o644, dir_fd=fd)
        with os.fdopen(out, "wb") as stream:
            stream.write(content)
    finally:
        os.close(fd)


class InternalJobError(InternalError):
    """The service, not the submitted code, failed (sandbox or cgroup trouble)."""


@attrs.frozen
class Compiler:
    emcc: str
    emxx: str
    default_args: tuple[str, ...]
    node_path: str
    jobs_dir: Path
    store: Store
    limits: Limits
    driver: Driver | None
    sandbox: Sandbox | None
    # Projects of several units: separate steps, objects reused (None: one emcc call).
    builder: Builder | None = None
    objects_per_client: bool = False  # cacheScope "client": no object serves another client
    # maxArtifactMB: RLIMIT_FSIZE of every process of the job (a whole number of MiB, the
    # unit nsjail takes), and the bound of an artifact's files together.
    max_artifact_bytes: int = MAX_ARTIFACT_BYTES
    prlimit: str = "prlimit"  # bounds the file size of a job outside the jail
    quota: ArtifactQuota | None = None  # artifactQuotaMB; None: no quota
    launcher: Launcher | None = None  # emccLauncher; None: /usr/bin/emcc as it is
    memos: Memos | None = None  # glueMemoMaxMB, pchMaxMB; need the launcher and the jail
    # emscriptenCacheDir outside the jail (EM_CACHE); in it, the sandbox mounts it instead.
    emscripten_cache: Path | None = None

    @property
    def _memos(self) -> Memos | None:
        return self.memos if self.launcher is not None and self.sandbox is not None else None

    def _make_dirs(self, job_dir: Path, multi_unit: bool) -> None:
        """The job dir and the service's own folders in it, handed to the jail's user."""
        job_dir.mkdir(mode=0o700)
        (job_dir / TMP_SUBDIR).mkdir()
        if multi_unit:
            (job_dir / OBJECT_DIR).mkdir()
        if self._memos is not None:
            (job_dir / MISSES_SUBDIR).mkdir()
        if self.sandbox is not None:
            self.sandbox.prepare(job_dir)

    def _write_files(self, job_dir: Path, request: CompileRequest) -> None:
        """Lay out the request's files. A layout the request asks for that cannot exist (a
        file where a directory goes, a name too long for the filesystem) is a RequestError
        naming the path; the server's own trouble (disk full, out of descriptors) an
        InternalJobError."""
        (job_dir / request.source_name).write_text(request.code, encoding="utf-8")
        for path, content in request.files:
            try:
                write_file(job_dir, path, content)
            except OSError as exc:
                if exc.errno in _SERVER_ERRNOS:
                    raise InternalJobError(f"cannot write {path!r}: {exc.strerror}") from exc
                raise RequestError(
                    f"file {path!r} cannot be laid out in the job dir: {exc.strerror}"
                ) from exc
        if self.sandbox is not None:
            self.sandbox.prepare(job_dir)

    def command(self, request: CompileRequest) -> list[str]:
        """The compile command, before sandboxing: what decides the output. em++ would compile
        a `.c` file as C++, so a project with any C file goes to emcc, which compiles each file
        by its extension and still links libc++ (emscripten's DEFAULT_TO_CXX)."""
        all_cxx = not any(path.endswith(".c") for path in request.sources)
        compiler = self.emxx if request.language == "cpp" and all_cxx else self.emcc
        return compiler_argv(compiler, request, self.default_args)

    def _launch(self, compiler: str) -> list[str]:
        """The command that runs `compiler` in this job: the launcher, or the compiler."""
        if self.launcher is None:
            return [compiler]
        mode: Mode = "em++" if compiler == self.emxx else "emcc"
        return self.launcher.argv(mode, jailed=self.sandbox is not None)

    def _jail_extras(self) -> tuple[list[tuple[Path, str]], dict[str, str]]:
        """The read-only mounts and variables the launcher and the memos need."""
        mounts: list[tuple[Path, str]] = []
        env: dict[str, str] = {}
        if self.launcher is not None:
            mounts.append((self.launcher.directory, JAIL_LAUNCHER_DIR))
        memos = self._memos
        if memos is not None:
            env["EMCC_TRIO_MISSES"] = f"{JOB_MOUNT}/{MISSES_SUBDIR}"
            if memos.glue is not None:
                mounts.append((memos.glue.root, JAIL_GLUE_DIR))
                env["EMCC_TRIO_GLUE"] = JAIL_GLUE_DIR
            if memos.pch is not None:
                mounts.append((memos.pch.root, JAIL_PCH_DIR))
                env["EMCC_TRIO_PCH"] = JAIL_PCH_DIR
        return mounts, env

    async def compile(
        self, request: CompileRequest, job_id: str | None = None, client: str = ""
    ) -> CompileResult:
        job_id = job_id or new_job_id()
        job_dir = self.jobs_dir / job_id
        watcher = WATCHER.get()
        if watcher is not None:
            watcher.started()
        argv = self.command(request)
        compiler = argv[0]
        argv = [*self._launch(compiler), *argv[1:]]
        builds: list[PreparedBuild] = []
        feed = None
        try:
            multi_unit = self.builder is not None and len(request.sources) > 1
            await trio.to_thread.run_sync(self._make_dirs, job_dir, multi_unit)
            if multi_unit and self.builder is not None:
                builder, launch = self.builder, self._launch(compiler)
                argv = builder.command(request, self.default_args, launch)
                scope = client if self.objects_per_client else ""

                async def lay_out() -> bytes:
                    """The job dir, while the driver and its link start (see build.DRIVER)."""
                    await trio.to_thread.run_sync(self._write_files, job_dir, request)
                    builds.append(
                        await builder.prepare(
                            request, job_dir, compiler, self.default_args, scope, launch
                        )
                    )
                    return b"go\n"

                feed = lay_out
            else:
                await trio.to_thread.run_sync(self._write_files, job_dir, request)
            if self.sandbox is not None:
                mounts, extra_env = self._jail_extras()
                argv = self.sandbox.wrap(
                    argv,
                    job_dir,
                    self.limits.timeout_seconds,
                    self.max_artifact_bytes // MB,
                    read_only=mounts,
                    env=extra_env,
                )
            else:
                argv = limit_file_size(argv, self.max_artifact_bytes, self.prlimit)
            result = await run_job(
                argv,
                job_id=job_id,
                cwd=job_dir,
                env=compile_env(
                    job_dir,
                    self.node_path,
                    os.environ,
                    os.path.dirname(compiler),
                    self.emscripten_cache,
                ),
                limits=self.limits,
                driver=self.driver,
                client=client,
                on_output=None if watcher is None else watcher.output,
                feed=feed,
            )
            if self.sandbox is not None and self.sandbox.failed(result):
                raise InternalJobError(
                    f"the sandbox failed to start: {result.output.strip()}", job_id=job_id
                )
            if builds and self.builder is not None:
                await self.builder.keep(builds[0], job_dir)
            if self._memos is not None:
                await self._memos.collect(job_dir / MISSES_SUBDIR)
            ok = result.exit_code == 0 and result.limit is None
            output = result.output
            limit = result.limit
            if limit is None and not ok and _FILE_TOO_LARGE.search(output):
                limit = "artifact"  # a write failed at RLIMIT_FSIZE
            files = await trio.to_thread.run_sync(job_outputs, job_dir) if ok else ()
            if ok and MAIN_FILE not in files:
                ok, output = False, output + f"\nemcc exited 0 but wrote no {MAIN_FILE}"
            if ok:
                ok, output, limit = await self._publish(job_id, job_dir, files, client, output)
            return _result(job_id, ok, output, result, files if ok else (), limit)
        finally:
            await _remove_job_dir(job_dir)

    async def fill_glue(self, material: bytes) -> bytes | None:
        """A glue memo entry computed from `material` alone, in a jail and cgroup of its own
        whose job dir holds nothing else; None when it cannot be (see compile.memos)."""
        if self.launcher is None:
            return None
        argv = self.launcher.fill_glue_argv(_MATERIAL_FILE, _ENTRY_FILE)
        return await self._fill(material, argv, _ENTRY_FILE, MAX_ENTRY_BYTES)

    async def fill_acorn(self, material: bytes) -> bytes | None:
        """A JS optimizer memo entry computed from `material` alone, as `fill_glue`."""
        if self.launcher is None:
            return None
        argv = self.launcher.fill_acorn_argv(_MATERIAL_FILE, _ENTRY_FILE)
        return await self._fill(material, argv, _ENTRY_FILE, MAX_ENTRY_BYTES)

    async def fill_pch(self, material: bytes, digest: str, header: str) -> bytes | None:
        """The precompiled header `material` asks for, built from `header` (the service's
        own text) in a jail and cgroup of its own, where the PCH dir is the only other
        writable place and lies where compiles see it (the PCH names its header's path)."""
        if self.launcher is None:
            return None
        name = pch_name(digest)
        argv = self.launcher.fill_pch_argv(
            _MATERIAL_FILE, f"{JAIL_PCH_DIR}/{header_name(digest)}", f"{JAIL_PCH_DIR}/{name}"
        )
        return await self._fill(
            material, argv, f"{_PCH_OUT}/{name}", MAX_PCH_BYTES, {header_name(digest): header}
        )

    async def _fill(
        self,
        material: bytes,
        argv: list[str],
        output: str,
        limit: int,
        pch_files: Mapping[str, str] | None = None,
    ) -> bytes | None:
        if self.sandbox is None or self.launcher is None:
            return None
        job_id = new_job_id()
        job_dir = self.jobs_dir / job_id
        try:
            await trio.to_thread.run_sync(self._prepare_fill, job_dir, material, pch_files)
            read_write = [] if pch_files is None else [(job_dir / _PCH_OUT, JAIL_PCH_DIR)]
            wrapped = self.sandbox.wrap(
                argv,
                job_dir,
                self.limits.timeout_seconds,
                max(self.max_artifact_bytes, limit) // MB,
                read_only=[(self.launcher.directory, JAIL_LAUNCHER_DIR)],
                read_write=read_write,
            )
            result = await run_job(
                wrapped,
                job_id=job_id,
                cwd=job_dir,
                env=compile_env(
                    job_dir, self.node_path, os.environ, emscripten_cache=self.emscripten_cache
                ),
                limits=self.limits,
                driver=self.driver,
            )
            if result.exit_code != 0 or result.limit is not None:
                log.info("memo fill failed", extra={"fields": {"output": result.output[-500:]}})
                return None
            return await trio.to_thread.run_sync(read_regular, job_dir / output, limit)
        finally:
            await _remove_job_dir(job_dir)

    def _prepare_fill(
        self, job_dir: Path, material: bytes, pch_files: Mapping[str, str] | None
    ) -> None:
        job_dir.mkdir(mode=0o700)
        (job_dir / _MATERIAL_FILE).write_bytes(material)
        if pch_files is not None:
            (job_dir / _PCH_OUT).mkdir()
            for name, text in pch_files.items():
                (job_dir / _PCH_OUT / name).write_text(text)
        if self.sandbox is not None:
            self.sandbox.prepare(job_dir)

    async def _publish(
        self, job_id: str, job_dir: Path, files: tuple[str, ...], client: str, output: str
    ) -> tuple[bool, str, Limit | None]:
        """Store a built artifact if it is below maxArtifactMB and within its client's quota
        (ArtifactQuotaError otherwise): whether it was stored, the output, the limit met."""
        size = await trio.to_thread.run_sync(output_bytes, job_dir, files)
        if size >= self.max_artifact_bytes:
            return False, output + f"\nthe artifact's files hold {size} bytes together", "artifact"
        if self.quota is not None:
            await self.quota.charge(client, size, job_id)
        try:
            await self.store.publish(job_id, job_dir, files)
        except UnsafeOutputError as exc:
            return False, output + f"\nrefused to publish the output: {exc}", None
        return True, output, None


async def _remove_job_dir(job_dir: Path) -> None:
    """Remove the job dir, shielded from the request's cancellation, within a deadline trio
    can enforce: past it the worker thread is abandoned (it finishes the removal on its own)
    and the job's slot is freed; the next start's recovery removes anything left."""
    with trio.move_on_after(_CLEANUP_SECONDS, shield=True) as scope:
        await trio.to_thread.run_sync(shutil.rmtree, job_dir, True, abandon_on_cancel=True)
    if scope.cancelled_caught:
        log.warning("job dir removal overran", extra={"fields": {"dir": str(job_dir)}})


def _result(
    job_id: str,
    ok: bool,
    output: str,
    result: JobResult,
    files: tuple[str, ...],
    limit: Limit | None,
) -> CompileResult:
    return CompileResult(
        job_id=job_id,
        ok=ok,
        output=output,
        output_truncated=result.output_truncated,
        limit=limit,
        usage=result.usage,
        duration_seconds=result.duration_seconds,
        files=files,
    )
