"""The content-addressed result cache and single-flight compiles.

A cache entry is a small JSON file `<cacheDir>/<key>.json` naming the job whose result it
holds: for a success the artifact id (the artifacts stay in the artifact store, which never
sweeps an id a live entry points at), for a compile error its output. Cap kills are never
cached. The key hashes everything that decides the output: the emscripten version, the
compiler, the final argument list and the source. Entries are written atomically and survive
restarts; the total size (entries plus the artifacts they keep) is bounded, least recently
used first out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import trio

from emcc_trio.storage.artifacts import BOTH_FILES, stored_files

T = TypeVar("T")


def cache_key(
    emscripten_version: str,
    argv: Sequence[str],
    source: str,
    files: Sequence[tuple[str, bytes]] = (),
) -> str:
    """argv is the full compile command (compiler, source names, every argument); `files`
    the project's other files, each path with its content's digest."""
    parts: list[Any] = [emscripten_version, list(argv), source]
    if files:  # keys of single-file compiles stay what they were
        parts.append([[path, hashlib.sha256(content).hexdigest()] for path, content in files])
    material = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


@attrs.frozen
class Entry:
    job_id: str
    ok: bool
    output: str
    usage: dict[str, Any]
    size: int  # bytes this entry keeps on disk (its file plus its artifacts)
    files: tuple[str, ...] = BOTH_FILES  # the artifact's files (none for a failure)


@attrs.define
class ResultCache:
    """The index of the entries on disk, in memory. Every operation costs the same whatever
    the number of entries: the byte total is kept as entries come and go, and the entries
    are kept in use order, least recently used first."""

    root: Path
    artifacts_dir: Path
    max_bytes: int
    _entries: OrderedDict[str, Entry] = attrs.field(factory=OrderedDict)
    _total: int = 0  # the sum of the entries' sizes
    _live: Counter[str] = attrs.field(factory=Counter)  # artifact id -> entries naming it
    # `put` runs in worker threads (trio.to_thread) while `get` runs on the event loop.
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def total_bytes(self) -> int:
        return self._total

    def live_ids(self) -> set[str]:
        with self._lock:
            return set(self._live)

    def load(self) -> None:
        """Rebuild the index from disk; drop entries whose artifacts are gone."""
        self.root.mkdir(parents=True, exist_ok=True)
        found = []
        for path in self.root.iterdir():
            if path.suffix != ".json" or len(path.stem) != 64:
                path.unlink(missing_ok=True)  # a torn temp file from a crash
                continue
            entry = self._read(path)
            if entry is None or (entry.ok and not self._artifact_exists(entry)):
                path.unlink(missing_ok=True)
                continue
            found.append((path.stat().st_mtime, path.stem, entry))
        # File times (kept fresh by every hit) give the order across restarts.
        with self._lock:
            for _, key, entry in sorted(found, key=lambda item: item[0]):
                self._add(key, entry)

    def get(self, key: str) -> Entry | None:
        path = self.root / f"{key}.json"
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.ok and not self._artifact_exists(entry):
            with self._lock:
                if self._entries.get(key) is entry:
                    self._forget(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
            if entry.ok:
                # Handing the id out again restarts its artifact's TTL.
                os.utime(self.artifacts_dir / entry.job_id)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return entry

    def put(
        self,
        key: str,
        job_id: str,
        ok: bool,
        output: str,
        usage: dict[str, Any],
        files: tuple[str, ...] = BOTH_FILES,
    ) -> None:
        artifact_bytes = (
            sum((self.artifacts_dir / job_id / name).stat().st_size for name in files) if ok else 0
        )
        body = {"id": job_id, "ok": ok, "output": output, "usage": usage, "files": files}
        text = json.dumps(body)
        entry = Entry(job_id, ok, output, usage, len(text) + artifact_bytes, files)
        path = self.root / f"{key}.json"
        temp = self.root / f".{key}.{os.getpid()}.tmp"
        temp.write_text(text)
        temp.rename(path)
        with self._lock:
            self._add(key, entry)
            self._evict()

    def _add(self, key: str, entry: Entry) -> None:
        """Index `entry` as the most recently used (replacing what `key` held)."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._discount(old)
        self._entries[key] = entry
        self._total += entry.size
        if entry.ok:
            self._live[entry.job_id] += 1

    def _discount(self, entry: Entry) -> None:
        self._total -= entry.size
        if entry.ok:
            self._live[entry.job_id] -= 1
            if self._live[entry.job_id] == 0:
                del self._live[entry.job_id]

    def _forget(self, key: str) -> None:
        self._discount(self._entries.pop(key))
        (self.root / f"{key}.json").unlink(missing_ok=True)

    def _evict(self) -> None:
        """Least recently used first, until the cache fits. An evicted entry's artifact is
        not deleted (its URL was handed out): it falls back under artifactTTLDays."""
        while self._total > self.max_bytes and len(self._entries) > 1:
            self._forget(next(iter(self._entries)))

    def _artifact_exists(self, entry: Entry) -> bool:
        return all((self.artifacts_dir / entry.job_id / name).is_file() for name in entry.files)

    def _read(self, path: Path) -> Entry | None:
        try:
            raw = path.read_bytes()
            body = json.loads(raw)
            size = len(raw)
            files = stored_files(body)
            if body["ok"]:
                size += sum(
                    (self.artifacts_dir / body["id"] / name).stat().st_size for name in files
                )
            return Entry(body["id"], bool(body["ok"]), body["output"], body["usage"], size, files)
        except (OSError, ValueError, KeyError, TypeError):
            return None


class FlightCancelledError(Exception):
    """The shared compile was cancelled (shutdown) before it finished."""


@attrs.define
class _Flight(Generic[T]):
    done: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    waiters: int = 0
    result: T | None = None
    error: BaseException | None = None


@attrs.define
class SingleFlight(Generic[T]):
    """Identical work in flight runs once, in the server's nursery, for every waiter.

    The work belongs to no single request: if the first client goes away the others still
    get the result; when the last waiter goes away the work is cancelled.
    """

    nursery: trio.Nursery
    scopes: set[trio.CancelScope]  # the service's running jobs, cancelled at shutdown
    _flights: dict[str, _Flight[T]] = attrs.field(factory=dict)

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            self.nursery.start_soon(self._fly, key, flight, work)
        flight.waiters += 1
        try:
            await flight.done.wait()
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.done.is_set():
                # Nobody is left to answer: stop the work, and let a newcomer start afresh.
                self._flights.pop(key, None)
                flight.scope.cancel()
        if flight.error is not None:
            raise flight.error
        if flight.result is None:
            raise FlightCancelledError
        return flight.result

    async def _fly(self, key: str, flight: _Flight[T], work: Callable[[], Awaitable[T]]) -> None:
        self.scopes.add(flight.scope)
        try:
            with flight.scope:
                flight.result = await work()
        except Exception as exc:
            flight.error = exc
        finally:
            self.scopes.discard(flight.scope)
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def is_flying(self, key: str) -> bool:
        return key in self._flights
