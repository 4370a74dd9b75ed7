"""Who watches a compile as it runs (a job's event stream): the compile reports its start
and its output as it is printed. A context variable, so that nothing between the job and the
compiler (cache, single flight, gate) has to pass it on; trio's tasks inherit it from the
task that starts them, so a compile shared by single flight reports to the first asker."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol


class Progress(Protocol):
    def started(self) -> None:
        """The compile (or the run) was admitted and is starting."""

    def output(self, chunk: bytes) -> None:
        """A chunk of what the compiler printed, as it was printed."""


WATCHER: ContextVar[Progress | None] = ContextVar("emcc_trio_progress", default=None)
