"""The result cache on local disk.

A cache entry is a small JSON file `<cacheDir>/<key>.json` (`models.encode_result`) naming
the job whose result it
holds: for a success the artifact id (the artifacts stay in the artifact store, which never
sweeps an id a live entry points at), for a compile error its output. Cap kills are never
cached. The key (`compile.keys.cache_key`) hashes everything that decides the output.
Entries are written atomically and survive
restarts; the total size (entries plus the artifacts they keep) is bounded, least recently
used first out.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter, OrderedDict
from pathlib import Path

import attrs

from emcc_trio.models import CompileResult, decode_result, encode_result


@attrs.frozen
class _Entry:
    result: CompileResult
    size: int  # bytes this entry keeps on disk (its file plus its artifacts)


@attrs.define
class ResultCache:
    """The index of the entries on disk, in memory. Every operation costs the same whatever
    the number of entries: the byte total is kept as entries come and go, and the entries
    are kept in use order, least recently used first."""

    root: Path
    artifacts_dir: Path
    max_bytes: int
    _entries: OrderedDict[str, _Entry] = attrs.field(factory=OrderedDict)
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
            if path.is_dir():
                continue  # not an entry (the object cache lives below: storage.objects)
            if path.suffix != ".json" or len(path.stem) != 64:
                path.unlink(missing_ok=True)  # a torn temp file from a crash
                continue
            entry = self._read(path)
            if entry is None or (entry.result.ok and not self._artifact_exists(entry.result)):
                path.unlink(missing_ok=True)
                continue
            found.append((path.stat().st_mtime, path.stem, entry))
        # File times (kept fresh by every hit) give the order across restarts.
        with self._lock:
            for _, key, entry in sorted(found, key=lambda item: item[0]):
                self._add(key, entry)

    def entry_bytes(self, key: str) -> int | None:
        """What the entry for `key` keeps on disk (its file and its artifact), if indexed."""
        entry = self._entries.get(key)
        return None if entry is None else entry.size

    def get(self, key: str) -> CompileResult | None:
        path = self.root / f"{key}.json"
        entry = self._entries.get(key)
        if entry is None:
            return None
        result = entry.result
        if result.ok and not self._artifact_exists(result):
            with self._lock:
                if self._entries.get(key) is entry:
                    self._forget(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
            if result.ok:
                # Handing the id out again restarts its artifact's TTL.
                os.utime(self.artifacts_dir / result.job_id)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return result

    def put(self, key: str, result: CompileResult) -> None:
        text = encode_result(result)
        entry = _Entry(result, len(text) + self._artifact_bytes(result))
        path = self.root / f"{key}.json"
        temp = self.root / f".{key}.{os.getpid()}.tmp"
        temp.write_text(text)
        temp.rename(path)
        with self._lock:
            self._add(key, entry)
            self._evict()

    def _add(self, key: str, entry: _Entry) -> None:
        """Index `entry` as the most recently used (replacing what `key` held)."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._discount(old)
        self._entries[key] = entry
        self._total += entry.size
        if entry.result.ok:
            self._live[entry.result.job_id] += 1

    def _discount(self, entry: _Entry) -> None:
        self._total -= entry.size
        job_id = entry.result.job_id
        if entry.result.ok:
            self._live[job_id] -= 1
            if self._live[job_id] == 0:
                del self._live[job_id]

    def _forget(self, key: str) -> None:
        self._discount(self._entries.pop(key))
        (self.root / f"{key}.json").unlink(missing_ok=True)

    def _evict(self) -> None:
        """Least recently used first, until the cache fits. An evicted entry's artifact is
        not deleted (its URL was handed out): it falls back under artifactTTLDays."""
        while self._total > self.max_bytes and len(self._entries) > 1:
            self._forget(next(iter(self._entries)))

    def _artifact_exists(self, result: CompileResult) -> bool:
        return all((self.artifacts_dir / result.job_id / name).is_file() for name in result.files)

    def _artifact_bytes(self, result: CompileResult) -> int:
        folder = self.artifacts_dir / result.job_id
        return sum((folder / name).stat().st_size for name in result.files)

    def _read(self, path: Path) -> _Entry | None:
        try:
            raw = path.read_bytes()
            result = decode_result(raw)
            return _Entry(result, len(raw) + self._artifact_bytes(result))
        except (OSError, ValueError):
            return None
