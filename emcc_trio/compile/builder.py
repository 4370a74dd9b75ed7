"""The side effects of a multi-unit build (`build.py` holds its pure parts): reuse objects
from the store before the run, and keep the new ones after it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from emcc_trio.compile.build import (
    CFLAGS_FILE,
    DRIVER,
    MAX_OBJECT_BYTES,
    PLAN_FILE,
    STATUS_FILE,
    SYMBOLS_FILE,
    SYMBOLS_OUT_FILE,
    Clang,
    Manifest,
    Symbols,
    Unit,
    cflags_key,
    compile_args,
    decode_cflags,
    decode_symbols,
    digest,
    early_link,
    object_path,
    plan_json,
    project_deps,
    unit_key,
)
from emcc_trio.compile.launcher import PYTHON_FLAGS
from emcc_trio.metrics import Metrics
from emcc_trio.models import CompileRequest
from emcc_trio.storage.base import Store, StoreUnavailableError

log = logging.getLogger("emcc_trio.build")
# What the link's llvm-nm read of a build's new objects: a few KB for each.
MAX_SYMBOLS_BYTES: Final = 16 * 1024 * 1024


@attrs.frozen
class PreparedBuild:
    units: tuple[Unit, ...]
    compiled: tuple[Unit, ...]  # the units without a reusable object
    digests: dict[str, str]  # every project file (the main source too) by path
    cflags_key: str
    cflags_known: bool  # whether the plan carried kept clang arguments


def read_regular(path: Path, limit: int) -> bytes | None:
    """A file the jailed build wrote, if it is a regular file of at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = stream.read(limit + 1)
    return data if len(data) <= limit else None


def _write_all(files: Sequence[tuple[Path, bytes]]) -> None:
    """In one thread hop: a project's reused objects are many and small."""
    for path, data in files:
        path.write_bytes(data)


@attrs.frozen
class Builder:
    """Builds projects of several units as separate steps (`build.DRIVER`); with `reuse`,
    objects are looked up in `store` before and kept there after."""

    store: Store
    toolchain: str
    python: str  # the python3 the driver runs with (an absolute path: nsjail does not search)
    clang: Clang | None
    parallel: int
    reuse: bool
    job_mount: str | None  # where the job dir is inside the jail (None: not jailed)
    metrics: Metrics = attrs.field(factory=Metrics)

    def command(
        self,
        request: CompileRequest,
        default_args: Sequence[str],
        launch: Sequence[str] = (),
    ) -> list[str]:
        """The driver's command, before sandboxing. It starts before the job dir is laid out
        and reads the plan once "go" comes on its stdin, which its caller writes after
        `prepare` (see build.DRIVER). With `launch` (the launcher's command), its link
        starts at once."""
        argv = [self.python, *PYTHON_FLAGS, "-c", DRIVER, PLAN_FILE]
        if launch:
            objects = [object_path(index) for index in range(len(request.sources))]
            argv += early_link(launch, objects, [*default_args, *request.args])
        return argv

    async def prepare(
        self,
        request: CompileRequest,
        job_dir: Path,
        compiler: str,
        default_args: Sequence[str],
        scope: str = "",
        launch: Sequence[str] = (),
    ) -> PreparedBuild:
        """Place reusable objects in the job dir and write the plan; the job dir exists.
        `scope`: reuse only objects built under the same scope (see build.unit_key);
        `launch`: the command that runs `compiler` (default: the compiler itself)."""
        contents = {path: content for path, content in request.files}
        contents[request.source_name] = request.code.encode("utf-8")
        digests = {path: digest(content) for path, content in contents.items()}
        all_args = [*default_args, *request.args]
        args = compile_args(all_args)
        debug = any(arg.startswith("-g") for arg in args)
        workdir = self.job_mount or (str(job_dir) if debug else "")
        units = tuple(
            Unit(
                path,
                index,
                unit_key(
                    self.toolchain,
                    compiler,
                    args,
                    path,
                    contents[path],
                    sorted(digests),
                    workdir,
                    scope,
                ),
            )
            for index, path in enumerate(request.sources)
        )
        compiled = []
        reused: list[tuple[Path, bytes]] = []
        symbols: dict[str, Symbols] = {}
        for unit in units:
            found = await self._reusable(unit, digests) if self.reuse else None
            if found is None:
                compiled.append(unit)
                continue
            data, manifest = found
            reused.append((job_dir / unit.object, data))
            if manifest.symbols is not None:
                symbols[unit.object] = manifest.symbols
        if symbols:
            reused.append((job_dir / SYMBOLS_FILE, json.dumps(symbols).encode()))
        key = cflags_key(self.toolchain, compiler, args)
        cflags = None
        if self.reuse and self.clang is not None and compiled:
            cflags = decode_cflags(await self._get(f"m-{key}"))
        plan = plan_json(
            compiler=list(launch) or [compiler],
            clang=self.clang,
            cflags=cflags,
            args=args,
            to_compile=compiled,
            objects=[unit.object for unit in units],
            link_args=all_args,
            parallel=self.parallel,
        )
        await trio.to_thread.run_sync(_write_all, [*reused, (job_dir / PLAN_FILE, plan.encode())])
        self.metrics.build_units.labels("compiled").inc(len(compiled))
        self.metrics.build_units.labels("reused").inc(len(units) - len(compiled))
        return PreparedBuild(units, tuple(compiled), digests, key, cflags is not None)

    async def _get(self, name: str) -> bytes | None:
        try:
            return await self.store.object_get(name)
        except StoreUnavailableError as exc:
            log.warning("object cache unreachable", extra={"fields": {"error": str(exc)}})
            return None

    async def _reusable(self, unit: Unit, digests: dict[str, str]) -> tuple[bytes, Manifest] | None:
        """The unit's object and its manifest, if it was built from these files."""
        raw = await self._get(f"m-{unit.key}")
        manifest = None if raw is None else Manifest.decode(raw)
        if manifest is None or not manifest.holds_for(digests):
            return None
        data = await self._get(f"o-{manifest.object_digest}")
        if data is None or digest(data) != manifest.object_digest:
            return None
        return data, manifest

    async def keep(self, build: PreparedBuild, job_dir: Path) -> int:
        """Store the objects of the units that compiled (the link may still have failed);
        return how many. What the build wrote is read as untrusted: regular files only."""
        if not self.reuse or not build.compiled:
            return 0
        status_raw = await trio.to_thread.run_sync(read_regular, job_dir / STATUS_FILE, 1 << 20)
        status = _status(status_raw)
        if not build.cflags_known:
            found = await trio.to_thread.run_sync(read_regular, job_dir / CFLAGS_FILE, 1 << 20)
            if found is not None and decode_cflags(found) is not None:
                with contextlib.suppress(OSError, StoreUnavailableError):
                    await self.store.object_put(f"m-{build.cflags_key}", found)
        kept = 0
        roots = [root for root in (self.job_mount, str(job_dir)) if root]
        symbols_read = await trio.to_thread.run_sync(
            read_regular, job_dir / SYMBOLS_OUT_FILE, MAX_SYMBOLS_BYTES
        )
        read_by_link = _symbols_by_path(symbols_read)
        for unit in build.compiled:
            if status.get(unit.path) != 0:
                continue
            depfile = await trio.to_thread.run_sync(read_regular, job_dir / unit.depfile, 1 << 22)
            data = await trio.to_thread.run_sync(
                read_regular, job_dir / unit.object, MAX_OBJECT_BYTES
            )
            deps = (
                None if depfile is None else project_deps(depfile.decode(errors="replace"), roots)
            )
            if data is None or deps is None or not all(dep in build.digests for dep in deps):
                continue
            paths = (f"{root}/{unit.object}" for root in roots)
            symbols = next((read_by_link[path] for path in paths if path in read_by_link), None)
            manifest = Manifest(digest(data), {dep: build.digests[dep] for dep in deps}, symbols)
            try:
                await self.store.object_put(f"o-{manifest.object_digest}", data)
                await self.store.object_put(f"m-{unit.key}", manifest.encode())
            except (OSError, StoreUnavailableError) as exc:
                log.warning("cannot keep an object", extra={"fields": {"error": str(exc)}})
                return kept
            kept += 1
        return kept


def _symbols_by_path(raw: bytes | None) -> dict[str, Symbols]:
    """What the link's llvm-nm read (SYMBOLS_OUT_FILE), by the object's path in the jail;
    entries not of that shape are left out (the file is the job's to write)."""
    if raw is None:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    return {
        str(path): symbols
        for path, value in body.items()
        if (symbols := decode_symbols(value)) is not None
    }


def _status(raw: bytes | None) -> dict[str, int]:
    """The driver's exit code of each unit it compiled (nothing when unreadable)."""
    if raw is None:
        return {}
    with contextlib.suppress(ValueError, AttributeError):
        body = json.loads(raw)
        if isinstance(body, dict):
            return {str(k): v for k, v in body.items() if isinstance(v, int)}
    return {}
