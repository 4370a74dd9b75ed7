"""The memos jobs share, filled in the background: the JS memo of the glue and the JS
optimizer (compile.glue) and the precompiled standard headers (compile.pch).

Inside the jail, the launcher (`jailside/emcc_launch.py`) looks entries up in directories
mounted read-only and leaves the material of a miss in the job dir. `collect` takes those
after the job (nothing in the job dir is trusted but its bounds: a PCH's material is checked
by `pch.parse`); `run` computes each entry in a jail of its own whose job dir holds only that
material (the fill modes), never in the request's jail and never from its output. An entry is
a function of its key alone, so no request can make one that another receives with different
content. With a shared store (Redis), replicas share JS entries; PCHs stay on each replica.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Final, Literal, Protocol

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

Kind = Literal["glue", "acorn", "pch"]


class Filler(Protocol):
    """Computes entries, each in a clean jail of its own (compile.service admits them)."""

    async def fill_glue(self, material: bytes) -> bytes | None: ...

    async def fill_acorn(self, material: bytes) -> bytes | None: ...

    async def fill_pch(self, material: bytes, digest: str, header: str) -> bytes | None: ...


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


_KINDS: Final[dict[bytes, Kind]] = {glue.TAG: "glue", glue.ACORN: "acorn", pch.TAG: "pch"}
_JS_NAMES: Final = {"glue": glue.entry_name, "acorn": glue.acorn_name}


def kind_of(material: bytes) -> Kind | None:
    return _KINDS.get(material.partition(b"\0")[0])


def _valid_js(kind: Kind, data: bytes) -> bool:
    return glue.is_valid_entry(data) if kind == "glue" else glue.is_valid_acorn(data)


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

    def _shared_name(self, kind: Kind, digest: str) -> str:
        material = f"{self.toolchain}\0{kind}\0{digest}".encode()
        return "g-" + hashlib.sha256(material).hexdigest()

    def _count(self, kind: Kind, event: str) -> None:
        self.metrics.memo_events.labels(kind, event).inc()

    def _known(self, kind: Kind, digest: str) -> bool:
        if kind == "pch":
            return self.pch is not None and self.pch.contains(pch.pch_name(digest))
        return self.glue is not None and self.glue.contains(_JS_NAMES[kind](digest))

    async def collect(self, misses_dir: Path) -> None:
        """Take the misses a job left: a JS entry from the shared store when a replica has
        it, else each queued for `run` (dropped when the queue is full: a later miss asks
        again)."""
        for material in await trio.to_thread.run_sync(read_misses, misses_dir):
            kind = kind_of(material)
            if kind is None or (kind != "pch" and self.glue is None):
                continue
            if kind == "pch" and (
                self.pch is None or pch.parse(material, self.compilers, self.cwd) is None
            ):
                continue
            digest = hashlib.sha256(material).hexdigest()
            self._count(kind, "miss")
            if digest in self._pending or self._known(kind, digest):
                continue
            if kind != "pch" and await self._take_shared(kind, digest):
                self._count(kind, "shared")
                continue
            try:
                self._send.send_nowait((kind, material))
            except trio.WouldBlock:
                continue
            self._pending.add(digest)
            self.metrics.memo_pending.set(len(self._pending))

    async def _take_shared(self, kind: Kind, digest: str) -> bool:
        if self.shared is None or self.glue is None:
            return False
        try:
            data = await self.shared.object_get(self._shared_name(kind, digest))
        except StoreUnavailableError:
            return False
        if data is None or not _valid_js(kind, data):
            return False
        await trio.to_thread.run_sync(self.glue.put, _JS_NAMES[kind](digest), data)
        return True

    async def run(self, filler: Filler) -> None:
        """Compute the queued entries one at a time, each in a clean jail."""
        async for kind, material in self._receive:
            digest = hashlib.sha256(material).hexdigest()
            try:
                if kind == "pch":
                    made = await self._make_pch(material, digest, filler)
                else:
                    made = await self._make_js(kind, material, digest, filler)
                self._count(kind, "filled" if made else "failed")
            finally:
                self._pending.discard(digest)
                self.metrics.memo_pending.set(len(self._pending))

    async def _make_js(self, kind: Kind, material: bytes, digest: str, filler: Filler) -> bool:
        fill = filler.fill_glue if kind == "glue" else filler.fill_acorn
        data = await fill(material)
        if self.glue is None or data is None or not _valid_js(kind, data):
            log.info("no JS memo entry", extra={"fields": {"kind": kind, "digest": digest}})
            return False
        await trio.to_thread.run_sync(self.glue.put, _JS_NAMES[kind](digest), data)
        if self.shared is not None:
            # Unreachable: this replica keeps it; the others compute their own.
            with contextlib.suppress(StoreUnavailableError):
                await self.shared.object_put(self._shared_name(kind, digest), data)
        return True

    async def _make_pch(self, material: bytes, digest: str, filler: Filler) -> bool:
        request = pch.parse(material, self.compilers, self.cwd)
        if self.pch is None or request is None:
            return False
        header = pch.header_text(request.headers)
        built = await filler.fill_pch(material, digest, header)
        if built is None:
            log.info("no precompiled header", extra={"fields": {"headers": request.headers}})
            return False
        # The header first: the launcher uses a PCH only once both are there.
        await trio.to_thread.run_sync(self.pch.put, pch.header_name(digest), header.encode())
        await trio.to_thread.run_sync(self.pch.put, pch.pch_name(digest), built)
        return True
