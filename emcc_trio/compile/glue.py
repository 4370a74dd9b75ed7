"""The JS glue memo (`glueMemoMaxMB`): the output of emscripten's `src/compiler.js`, kept under a
digest of everything it reads, so that a compile whose settings were seen before skips the
about 0.2 s node spends on it. Distinct programs share entries (five different C programs at
`-O0` share one); the output is byte for byte what emcc makes without it.

The launcher (`jailside/emcc_launch.py`) looks entries up inside the jail, in a directory
mounted read-only, and leaves the material of a miss (the settings and the working dir) in
the job dir. `collect` takes those after the job; `run` computes each entry in a jail of its
own whose job dir holds only that material (`--fill`), never in the request's jail, and never
from its output: an entry is a function of its key alone, so no request can make one that
another receives with different content. With a shared store (Redis) replicas share entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import attrs
import trio

from emcc_trio.metrics import Metrics
from emcc_trio.storage.base import Store, StoreUnavailableError
from emcc_trio.storage.objects import ObjectCache

log = logging.getLogger("emcc_trio.glue")
MISSES_SUBDIR: Final = ".glue"  # in the job dir, where the launcher leaves misses
MAX_MISSES: Final = 4  # the launcher's own bound: emcc runs compiler.js once a link
MAX_MATERIAL_BYTES: Final = 4 * 1024 * 1024  # settings JSON is about 15 KB
MAX_ENTRY_BYTES: Final = 16 * 1024 * 1024
_PENDING_FILLS: Final = 16
_FORWARDED: Final = "//FORWARDED_DATA:"

Fill = Callable[[bytes], Awaitable[bytes | None]]


def entry_name(digest: str) -> str:
    """The entry's file name in the memo directory, as the launcher opens it."""
    return "g-" + digest


def is_valid_entry(data: bytes) -> bool:
    """What the launcher accepts: {"stdout": glue with its forwarded data, "stderr": str}."""
    try:
        entry = json.loads(data)
    except ValueError:
        return False
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("stdout"), str)
        and isinstance(entry.get("stderr"), str)
        and _FORWARDED in entry["stdout"]
    )


def read_misses(misses_dir: Path) -> list[bytes]:
    """The materials a job left, at most MAX_MISSES, each bounded (the job dir is the job's
    to write: nothing here is trusted but the bounds)."""
    found: list[bytes] = []
    try:
        names = sorted(path.name for path in misses_dir.iterdir())
    except OSError:
        return found
    for name in names[:MAX_MISSES]:
        path = misses_dir / name
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_MATERIAL_BYTES:
                continue
            found.append(path.read_bytes())
        except OSError:
            continue
    return found


@attrs.define
class GlueMemo:
    """`entries` is the directory every jail sees read-only; `shared` the store replicas
    share (None: this server's own). `run` must run in the service's nursery."""

    entries: ObjectCache
    toolchain: str  # part of the shared key: replicas of other toolchains share the store
    shared: Store | None = None
    metrics: Metrics = attrs.field(factory=Metrics)
    _pending: set[str] = attrs.field(factory=set)
    _send: trio.MemorySendChannel[bytes] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[bytes] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[bytes](_PENDING_FILLS)

    @property
    def directory(self) -> Path:
        return self.entries.root

    def _shared_name(self, digest: str) -> str:
        return "g-" + hashlib.sha256(f"{self.toolchain}\0{digest}".encode()).hexdigest()

    async def collect(self, misses_dir: Path) -> None:
        """Take the misses a job left: from the shared store when a replica has the entry,
        else queued for `run` (dropped when the queue is full: a later miss asks again)."""
        for material in await trio.to_thread.run_sync(read_misses, misses_dir):
            digest = hashlib.sha256(material).hexdigest()
            self.metrics.glue_memo.labels("miss").inc()
            if digest in self._pending or self.entries.contains(entry_name(digest)):
                continue
            if await self._take_shared(digest):
                self.metrics.glue_memo.labels("shared").inc()
                continue
            try:
                self._send.send_nowait(material)
            except trio.WouldBlock:
                continue
            self._pending.add(digest)
            self.metrics.glue_pending.set(len(self._pending))

    async def _take_shared(self, digest: str) -> bool:
        if self.shared is None:
            return False
        try:
            data = await self.shared.object_get(self._shared_name(digest))
        except StoreUnavailableError:
            return False
        if data is None or not is_valid_entry(data):
            return False
        await trio.to_thread.run_sync(self.entries.put, entry_name(digest), data)
        return True

    async def run(self, fill: Fill) -> None:
        """Compute queued entries one at a time with `fill` (a clean jail; None: no entry)."""
        async for material in self._receive:
            digest = hashlib.sha256(material).hexdigest()
            try:
                data = await fill(material)
                if data is None or len(data) > MAX_ENTRY_BYTES or not is_valid_entry(data):
                    log.info("no glue entry", extra={"fields": {"digest": digest}})
                    self.metrics.glue_memo.labels("failed").inc()
                    continue
                await trio.to_thread.run_sync(self.entries.put, entry_name(digest), data)
                self.metrics.glue_memo.labels("filled").inc()
                if self.shared is not None:
                    # Unreachable: this replica keeps it; the others compute their own.
                    with contextlib.suppress(StoreUnavailableError):
                        await self.shared.object_put(self._shared_name(digest), data)
            finally:
                self._pending.discard(digest)
                self.metrics.glue_pending.set(len(self._pending))
