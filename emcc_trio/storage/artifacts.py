"""The artifact store: `artifacts/<id>/app.js` + `app.wasm` (only `app.js` for a
`-sSINGLE_FILE` build, whose wasm is inside it; `app.worker.js` too for `-pthread`),
published atomically, swept by age.

Publishing copies the files into a hidden staging dir inside the store (same filesystem)
and renames it to `<id>` in one step, so a reader sees no artifact or a whole one. Files are
copied and read in chunks of CHUNK_BYTES: the server never holds a whole artifact.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import AsyncGenerator, Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO, Final

import attrs
import trio

from emcc_trio.models import ARTIFACT_FILES, BOTH_FILES
from emcc_trio.storage.base import CHUNK_BYTES, Artifact

_ID = re.compile(r"^[0-9a-f]{32}\Z")
_STAGING_PREFIX: Final = ".staging-"
# maxArtifactMB's default: the compile's RLIMIT_FSIZE, so no file it writes reaches it.
MAX_ARTIFACT_BYTES: Final = 32 * 1024 * 1024
_STALE_STAGING_SECONDS: Final = 3600.0

log = logging.getLogger("emcc_trio.artifacts")


def is_valid_id(job_id: str) -> bool:
    return bool(_ID.match(job_id))


class UnsafeOutputError(Exception):
    """A job output is not a plain file (a symlink could point the server at a host file)."""


def _open_job_output(source: Path, max_bytes: int = MAX_ARTIFACT_BYTES) -> BinaryIO:
    """Open a file the jailed compile wrote, never following a link it may have planted;
    refuse one of `max_bytes` or more (the compile's file size limit stops it there)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeOutputError(f"{source.name} is a symbolic link") from exc
        raise
    try:
        # Before fdopen, which refuses a directory with an OSError of its own.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeOutputError(f"{source.name} is not a regular file")
        if info.st_size >= max_bytes:
            raise UnsafeOutputError(f"{source.name} is {max_bytes} bytes or larger")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _copy_job_output(source: Path, target: Path, max_bytes: int) -> None:
    with _open_job_output(source, max_bytes) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK_BYTES)


def job_outputs(job_dir: Path) -> tuple[str, ...]:
    """The artifact files the compile wrote (links included: publishing refuses them)."""
    return tuple(name for name in ARTIFACT_FILES if os.path.lexists(job_dir / name))


def output_bytes(job_dir: Path, files: tuple[str, ...]) -> int:
    """What the artifact `files` hold together (a link counts as itself: publishing refuses
    it anyway)."""
    return sum(os.lstat(job_dir / name).st_size for name in files)


def open_job_output(job_dir: Path, name: str, max_bytes: int) -> BinaryIO:
    """One artifact file of a job, opened as safely as `publish` copies it."""
    return _open_job_output(job_dir / name, max_bytes)


async def _file_chunks(path: Path, size: int) -> AsyncGenerator[bytes, None]:
    async with await trio.open_file(path, "rb") as file:
        left = size
        while left > 0:
            chunk = await file.read(min(CHUNK_BYTES, left))
            if not chunk:
                raise OSError(f"{path} ended {left} bytes before its size")
            left -= len(chunk)
            yield chunk


@attrs.frozen
class ArtifactStore:
    root: Path
    max_file_bytes: int = MAX_ARTIFACT_BYTES  # maxArtifactMB: a second lock behind the rlimit

    def path_of(self, job_id: str, name: str) -> Path | None:
        """The file for a well-formed id and name, or None (never a path outside the store)."""
        if not is_valid_id(job_id) or name not in ARTIFACT_FILES:
            return None
        return self.root / job_id / name

    def _publish_sync(self, job_id: str, job_dir: Path, files: tuple[str, ...]) -> None:
        staging = self.root / f"{_STAGING_PREFIX}{job_id}"
        staging.mkdir(mode=0o755)
        try:
            for name in files:
                _copy_job_output(job_dir / name, staging / name, self.max_file_bytes)
            staging.rename(self.root / job_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    async def publish(
        self, job_id: str, job_dir: Path, files: tuple[str, ...] = BOTH_FILES
    ) -> None:
        await trio.to_thread.run_sync(self._publish_sync, job_id, job_dir, files)

    async def artifact(self, job_id: str, name: str) -> Artifact | None:
        path = self.path_of(job_id, name)
        if path is None:
            return None
        try:
            size = (await trio.Path(path).stat()).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Artifact(size, partial(_file_chunks, path, size))

    def sweep_sync(
        self, ttl_seconds: float, keep: frozenset[str] = frozenset(), now: float | None = None
    ) -> list[str]:
        """Remove artifacts older than `ttl_seconds` (except the ids in `keep`, which live
        cache entries point at) and abandoned staging dirs."""
        now = time.time() if now is None else now
        removed = []
        for entry in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                age = now - entry.stat().st_mtime
                stale_staging = (
                    entry.name.startswith(_STAGING_PREFIX) and age > _STALE_STAGING_SECONDS
                )
                expired = is_valid_id(entry.name) and age > ttl_seconds and entry.name not in keep
                if stale_staging or expired:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed


async def run_sweeper(
    store: ArtifactStore,
    ttl_days: float,
    interval_mins: float,
    keep: Callable[[], set[str]] = set,
) -> None:
    """Sweep every `interval_mins`; returns at once if either setting is 0 (disabled)."""
    if ttl_days <= 0 or interval_mins <= 0:
        return
    while True:
        removed = await trio.to_thread.run_sync(
            store.sweep_sync, ttl_days * 86400.0, frozenset(keep())
        )
        if removed:
            log.info("swept artifacts", extra={"fields": {"removed": len(removed)}})
        await trio.sleep(interval_mins * 60.0)
