"""The memos jobs share, filled in the background: the JS glue memo (compile.glue) and the
precompiled standard headers (compile.pch).

Inside the jail, the launcher (`jailside/emcc_launch.py`) looks entries up in directories
mounted read-only and leaves the material of a miss in the job dir. `collect` takes those
after the job (nothing in the job dir is trusted but its bounds: a PCH's material is checked
by `pch.parse`); `run` computes each entry in a jail of its own whose job dir holds only that
material (the fill modes), never in the request's jail and never from its output. An entry is
a function of its key alone, so no request can make one that another receives with different
content. With a shared store (Redis), replicas share glue entries; PCHs stay on each replica.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Final, Literal

import attrs
import trio

from emcc_trio.compile import glue, pch
from emcc_trio.compile.jailside.emcc_launch import MAX_MISSES
from emcc_trio.metrics import Metrics
from emcc_trio.storage.base import Store, StoreUnavailableError
from emcc_trio.storage.objects import ObjectCache

log = logging.getLogger("emcc_trio.memos")
MISSES_SUBDIR: Final = ".memo-misses"  # in the job dir, where the launcher leaves misses
MAX_MATERIAL_BYTES: Final = 4 * 1024 * 1024  # settings JSON is about 15 KB
_PENDING_FILLS: Final = 16

Kind = Literal["glue", "pch"]
FillGlue = Callable[[bytes], Awaitable[bytes | None]]
FillPch = Callable[[bytes, str, str], Awaitable[bytes | None]]  # material, digest, header


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


def kind_of(material: bytes) -> Kind | None:
    tag = material.partition(b"\0")[0]
    return "glue" if tag == glue.TAG else "pch" if tag == pch.TAG else None


@attrs.define
class Memos:
    """`glue` and `pch` are the directories every jail sees read-only (None: that memo is
    off); `shared` the store replicas share (None: this server's own). `run` must run in the
    service's nursery."""

    glue: ObjectCache | None
    pch: ObjectCache | None
    toolchain: str  # part of the shared key: replicas of other toolchains share the store
    compilers: Collection[str] = ()  # the clang programs a PCH may be built with
    cwd: str = "/job"  # the jail's working dir, which a PCH's material must name
    shared: Store | None = None
    metrics: Metrics = attrs.field(factory=Metrics)
    _pending: set[str] = attrs.field(factory=set)
    _send: trio.MemorySendChannel[tuple[Kind, bytes]] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[tuple[Kind, bytes]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[Kind, bytes]](_PENDING_FILLS)

    def _shared_name(self, digest: str) -> str:
        return "g-" + hashlib.sha256(f"{self.toolchain}\0{digest}".encode()).hexdigest()

    def _count(self, kind: Kind, event: str) -> None:
        self.metrics.memo_events.labels(kind, event).inc()

    def _known(self, kind: Kind, digest: str) -> bool:
        if kind == "glue":
            return self.glue is not None and self.glue.contains(glue.entry_name(digest))
        return self.pch is not None and self.pch.contains(pch.pch_name(digest))

    async def collect(self, misses_dir: Path) -> None:
        """Take the misses a job left: a glue entry from the shared store when a replica has
        it, else each queued for `run` (dropped when the queue is full: a later miss asks
        again)."""
        for material in await trio.to_thread.run_sync(read_misses, misses_dir):
            kind = kind_of(material)
            if kind is None or (kind == "glue" and self.glue is None):
                continue
            if kind == "pch" and (
                self.pch is None or pch.parse(material, self.compilers, self.cwd) is None
            ):
                continue
            digest = hashlib.sha256(material).hexdigest()
            self._count(kind, "miss")
            if digest in self._pending or self._known(kind, digest):
                continue
            if kind == "glue" and await self._take_shared(digest):
                self._count(kind, "shared")
                continue
            try:
                self._send.send_nowait((kind, material))
            except trio.WouldBlock:
                continue
            self._pending.add(digest)
            self.metrics.memo_pending.set(len(self._pending))

    async def _take_shared(self, digest: str) -> bool:
        if self.shared is None or self.glue is None:
            return False
        try:
            data = await self.shared.object_get(self._shared_name(digest))
        except StoreUnavailableError:
            return False
        if data is None or not glue.is_valid_entry(data):
            return False
        await trio.to_thread.run_sync(self.glue.put, glue.entry_name(digest), data)
        return True

    async def run(self, fill_glue: FillGlue, fill_pch: FillPch) -> None:
        """Compute the queued entries one at a time, each in a clean jail."""
        async for kind, material in self._receive:
            digest = hashlib.sha256(material).hexdigest()
            try:
                made = await (
                    self._make_glue(material, digest, fill_glue)
                    if kind == "glue"
                    else self._make_pch(material, digest, fill_pch)
                )
                self._count(kind, "filled" if made else "failed")
            finally:
                self._pending.discard(digest)
                self.metrics.memo_pending.set(len(self._pending))

    async def _make_glue(self, material: bytes, digest: str, fill: FillGlue) -> bool:
        data = await fill(material)
        if self.glue is None or data is None or not glue.is_valid_entry(data):
            log.info("no glue entry", extra={"fields": {"digest": digest}})
            return False
        await trio.to_thread.run_sync(self.glue.put, glue.entry_name(digest), data)
        if self.shared is not None:
            # Unreachable: this replica keeps it; the others compute their own.
            with contextlib.suppress(StoreUnavailableError):
                await self.shared.object_put(self._shared_name(digest), data)
        return True

    async def _make_pch(self, material: bytes, digest: str, fill: FillPch) -> bool:
        request = pch.parse(material, self.compilers, self.cwd)
        if self.pch is None or request is None:
            return False
        header = pch.header_text(request.headers)
        built = await fill(material, digest, header)
        if built is None:
            log.info("no precompiled header", extra={"fields": {"headers": request.headers}})
            return False
        # The header first: the launcher uses a PCH only once both are there.
        await trio.to_thread.run_sync(self.pch.put, pch.header_name(digest), header.encode())
        await trio.to_thread.run_sync(self.pch.put, pch.pch_name(digest), built)
        return True
