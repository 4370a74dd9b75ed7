"""Running jobs: each in the manager's nursery (not the submitting request's, so a job
outlives its submitter's connection), its events appended to the store as they happen.

A job ends when its work does, when it is deleted (DELETE on any replica appends a cancel
event, which the running replica sees within CANCEL_POLL_SECONDS), when it expires
(`jobTTLSeconds` after its submission; its log expires with it), or when the server shuts
down. However it ends, its cleanup (the compile's processes, job dir, reservation) runs as on
a hang-up today, and its last event says how it ended.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from typing import Any, Final, Literal

import attrs
import trio

from emcc_trio.compile import diagnostics
from emcc_trio.compile.compiler import new_job_id
from emcc_trio.compile.progress import WATCHER
from emcc_trio.errors import ServiceError, ShuttingDownError
from emcc_trio.jobs import events
from emcc_trio.jobs.events import FINAL_STATES, JobView, State
from emcc_trio.metrics import Metrics
from emcc_trio.storage.base import Store, StoreUnavailableError

log = logging.getLogger("emcc_trio.jobs")
# How often a follower on another replica (or a remote job's runner) looks at the store.
POLL_SECONDS: Final = 0.25
CANCEL_POLL_SECONDS: Final = 0.5
_CLEANUP_SECONDS: Final = 10.0
# The longest DELETE waits for the job to record that it ended.
CANCEL_WAIT_SECONDS: Final = 15.0
Answer = tuple[int, dict[str, Any]]
Work = Callable[[], Awaitable[Answer]]
Ending = Literal["deleted", "expired", "shutdown"]

_ENDINGS: Final[dict[Ending, tuple[State, int, str]]] = {
    "deleted": ("cancelled", 409, "the job was cancelled (DELETE)"),
    "expired": ("failed", 504, "the job did not finish within jobTTLSeconds"),
    "shutdown": ("failed", 503, "the server shut down before the job finished; submit it again"),
}


class JobNotFoundError(ServiceError):
    """No such job: never submitted, expired, or another API token's."""

    status = 404
    public = "no such job (unknown, expired, or submitted with another API token)"


@attrs.define
class _Watcher:
    """compile.progress.Progress for one job: its events go to the job's writer."""

    send: trio.MemorySendChannel[bytes]
    pending: bytearray = attrs.field(factory=bytearray)
    running: bool = False

    def started(self) -> None:
        if not self.running:
            self.running = True
            self.send.send_nowait(events.state("running"))

    def output(self, chunk: bytes) -> None:
        self.pending += chunk
        *lines, rest = self.pending.split(b"\n")
        self.pending = bytearray(rest)
        for line in lines:
            self._line(line.decode("utf-8", "replace") + "\n")

    def _line(self, text: str) -> None:
        self.send.send_nowait(events.encode({"event": "output", "text": text}))
        for found in diagnostics.parse(text):
            self.send.send_nowait(events.encode({"event": "diagnostic", **found.to_json()}))

    def close(self) -> None:
        if self.pending:
            self._line(self.pending.decode("utf-8", "replace"))
            self.pending.clear()
        self.send.close()


@attrs.define
class JobManager:
    store: Store
    ttl_seconds: float
    metrics: Metrics = attrs.field(factory=Metrics)
    shutting_down: bool = False
    _nursery: trio.Nursery | None = None
    _scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    _endings: dict[str, Ending] = attrs.field(factory=dict)
    _changed: dict[str, trio.Event] = attrs.field(factory=dict)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the jobs submitted while the block runs; leaving it ends those still running
        (as a shutdown does)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None
                self.shutdown()

    def shutdown(self) -> None:
        """Take no new job, and end the running ones (each records that the server shut
        down)."""
        self.shutting_down = True
        for job_id, scope in self._scopes.items():
            self._endings.setdefault(job_id, "shutdown")
            scope.cancel()
        for changed in self._changed.values():  # followers of other replicas' jobs leave
            changed.set()
        self._changed.clear()

    async def submit(self, kind: str, owner: str | None, work: Work, hold: ExitStack) -> str:
        """Record a new job and start it; `hold` (the client's slot and held bytes) is
        released when the job ends, or now if it cannot start."""
        try:
            if self._nursery is None or self.shutting_down:
                raise ShuttingDownError
            job_id = new_job_id()
            created = events.created(kind, owner, time.time(), self.ttl_seconds)
            await self.store.job_append(job_id, created, self.ttl_seconds)
            await self.store.job_append(job_id, events.state("queued"))
            scope = trio.CancelScope(deadline=trio.current_time() + self.ttl_seconds)
            self._scopes[job_id] = scope
            self._nursery.start_soon(self._run, job_id, work, hold, scope)
        except BaseException:
            hold.close()
            raise
        self.metrics.jobs.labels("submitted").inc()
        return job_id

    async def view(self, job_id: str, owner: str | None) -> JobView:
        found = events.fold(await self.store.job_events(job_id))
        if found is None or (found.owner is not None and found.owner != owner):
            raise JobNotFoundError
        return found

    async def cancel(self, job_id: str, owner: str | None) -> JobView:
        """Ask for the job's end and wait (a bounded time) until it has recorded it."""
        found = await self.view(job_id, owner)
        if found.state in FINAL_STATES:
            return found
        await self.store.job_append(job_id, events.CANCEL)
        self._end(job_id, "deleted")
        with trio.move_on_after(CANCEL_WAIT_SECONDS):
            async for _, event in self.follow(job_id):
                if event["event"] == "result":
                    break
        return await self.view(job_id, owner)

    async def follow(
        self, job_id: str, start: int = 0, idle_seconds: float = math.inf
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """The job's events from index `start` as they are appended, each with its index,
        up to its result; ends early if the job's log expires, or when this server shuts down
        and the job does not run here (an EventSource then resumes on another replica with
        Last-Event-ID). After `idle_seconds` without an event, an `{"event": "idle"}` (index
        -1) comes instead (an SSE keep-alive)."""
        index = start
        quiet_since = trio.current_time()
        while True:
            if trio.current_time() - quiet_since >= idle_seconds:
                quiet_since = trio.current_time()
                yield -1, {"event": "idle"}
            # One event before `index` too: an empty answer then means the log is gone.
            overlap = 1 if index > 0 else 0
            found = await self.store.job_events(job_id, index - overlap)
            if not found:
                return
            for data in found[overlap:]:
                event = events.decode(data)
                index += 1
                quiet_since = trio.current_time()
                if event is None:
                    continue
                yield index - 1, event
                if event["event"] == "result":
                    return
            if len(found) == overlap:
                if self.shutting_down and job_id not in self._scopes:
                    return
                await self._wait_for_change(job_id)

    def _end(self, job_id: str, why: Ending) -> None:
        scope = self._scopes.get(job_id)
        if scope is not None:
            self._endings.setdefault(job_id, why)
            scope.cancel()

    def _notify(self, job_id: str) -> None:
        changed = self._changed.pop(job_id, None)
        if changed is not None:
            changed.set()

    async def _wait_for_change(self, job_id: str) -> None:
        """Until this replica appends to the job's log, or POLL_SECONDS (another replica's)."""
        changed = self._changed.setdefault(job_id, trio.Event())
        with trio.move_on_after(POLL_SECONDS):
            await changed.wait()

    async def _append(self, job_id: str, event: bytes) -> None:
        try:
            await self.store.job_append(job_id, event)
        except StoreUnavailableError as exc:
            log.warning("job event lost", extra={"fields": {"job": job_id, "error": str(exc)}})
        self._notify(job_id)

    async def _write(self, job_id: str, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        async with receive:
            async for event in receive:
                await self._append(job_id, event)

    async def _watch_for_cancel(self, job_id: str) -> None:
        """A DELETE on another replica: its cancel event in the log."""
        seen = 0
        while True:
            await trio.sleep(CANCEL_POLL_SECONDS)
            try:
                found = await self.store.job_events(job_id, seen)
            except StoreUnavailableError:
                continue
            seen += len(found)
            if any((events.decode(data) or {}).get("event") == "cancel" for data in found):
                self._end(job_id, "deleted")
                return

    async def _run(self, job_id: str, work: Work, hold: ExitStack, scope: trio.CancelScope) -> None:
        answer: Answer | None = None
        send, receive = trio.open_memory_channel[bytes](math.inf)
        watcher = _Watcher(send)
        try:
            with hold, scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, job_id, receive)
                    watching = trio.CancelScope()
                    nursery.start_soon(self._watch_cancel_in, watching, job_id)
                    token = WATCHER.set(watcher)
                    try:
                        answer = await work()
                    except Exception as exc:  # the job's own failure must not end the server
                        log.error("job failed", exc_info=exc, extra={"fields": {"job": job_id}})
                        answer = 500, {"ok": False, "error": "internal server error"}
                    finally:
                        WATCHER.reset(token)
                        watcher.close()  # the writer drains what is left, then ends
                        watching.cancel()
        finally:
            del self._scopes[job_id]
            ending = self._endings.pop(job_id, None)
            if answer is None:
                state, status, message = _ENDINGS[
                    ending or ("expired" if scope.cancelled_caught else "shutdown")
                ]
                final = events.result(state, status, {"ok": False, "error": message})
            else:
                state = "done" if answer[0] < 300 else "failed"
                final = events.result(state, *answer)
            self.metrics.jobs.labels(state).inc()
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLEANUP_SECONDS):
                await self._append(job_id, final)

    async def _watch_cancel_in(self, scope: trio.CancelScope, job_id: str) -> None:
        with scope:
            await self._watch_for_cancel(job_id)
