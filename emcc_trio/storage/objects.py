"""The object cache on local disk: blobs by name (build manifests and compiled objects),
bounded in size, least recently used out. Names are hex digests (`m-<key>`, `o-<digest>`; and
`g-`, `a-`, `h-`, `p-<digest>` in the memos' own caches, see compile.memos)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Final

import attrs

_NAME: Final = re.compile(r"^[moaghp]-[0-9a-f]{64}\Z")


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


@attrs.define
class ObjectCache:
    """`get` runs on the event loop (a small read), `put` in a worker thread: the index is
    guarded by a lock. Load the index with `load` before use."""

    root: Path
    max_bytes: int
    _sizes: OrderedDict[str, int] = attrs.field(factory=OrderedDict)
    _total: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def total_bytes(self) -> int:
        return self._total

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        found = []
        for path in self.root.iterdir():
            if not is_valid_name(path.name):
                path.unlink(missing_ok=True)  # a torn temp file from a crash
                continue
            stat = path.stat()
            found.append((stat.st_mtime, path.name, stat.st_size))
        with self._lock:
            for _, name, size in sorted(found):
                self._sizes[name] = size
                self._total += size

    def contains(self, name: str) -> bool:
        return name in self._sizes

    def get(self, name: str) -> bytes | None:
        if not is_valid_name(name) or name not in self._sizes:
            return None
        path = self.root / name
        try:
            data = path.read_bytes()
        except OSError:
            with self._lock:
                self._drop(name)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        with self._lock:
            if name in self._sizes:
                self._sizes.move_to_end(name)
        return data

    def put(self, name: str, data: bytes) -> None:
        if not is_valid_name(name) or len(data) > self.max_bytes:
            return
        temp = self.root / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        temp.write_bytes(data)
        temp.rename(self.root / name)
        with self._lock:
            self._drop(name)
            self._sizes[name] = len(data)
            self._total += len(data)
            while self._total > self.max_bytes and self._sizes:
                oldest = next(iter(self._sizes))
                self._drop(oldest)
                (self.root / oldest).unlink(missing_ok=True)

    def _drop(self, name: str) -> None:
        size = self._sizes.pop(name, None)
        if size is not None:
            self._total -= size
