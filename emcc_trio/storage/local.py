"""The store on this machine's disk: artifacts and the result cache, one replica."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from emcc_trio.metrics import Metrics
from emcc_trio.models import BOTH_FILES, CompileResult
from emcc_trio.storage.artifacts import ArtifactStore, run_sweeper
from emcc_trio.storage.base import Artifact
from emcc_trio.storage.cache import ResultCache
from emcc_trio.storage.joblogs import JobLogs
from emcc_trio.storage.objects import ObjectCache
from emcc_trio.storage.quota import QuotaCharge, QuotaWindows


@attrs.define
class LocalStore:
    artifacts: ArtifactStore
    cache: ResultCache | None
    artifact_ttl_days: float
    cleanup_interval_mins: float
    objects: ObjectCache | None = None
    quota: QuotaWindows = attrs.field(factory=QuotaWindows)
    # Job logs live in memory: without a shared store a job dies with its process anyway.
    jobs: JobLogs = attrs.field(factory=JobLogs)

    @property
    def reachable(self) -> bool:
        return True

    async def publish(
        self, job_id: str, job_dir: Path, files: tuple[str, ...] = BOTH_FILES
    ) -> None:
        await self.artifacts.publish(job_id, job_dir, files)

    async def artifact(self, job_id: str, name: str) -> Artifact | None:
        return await self.artifacts.artifact(job_id, name)

    async def cache_get(self, key: str) -> CompileResult | None:
        return None if self.cache is None else self.cache.get(key)

    async def cache_put(self, key: str, result: CompileResult) -> None:
        if self.cache is not None:
            await trio.to_thread.run_sync(self.cache.put, key, result)

    async def object_get(self, name: str) -> bytes | None:
        return None if self.objects is None else self.objects.get(name)

    async def object_put(self, name: str, data: bytes) -> None:
        if self.objects is not None:
            await trio.to_thread.run_sync(self.objects.put, name, data)

    async def charge_quota(
        self, client: str, nbytes: int, limit: int, window_seconds: float
    ) -> QuotaCharge:
        return self.quota.charge(client, nbytes, limit, window_seconds)

    async def job_append(self, job_id: str, event: bytes, ttl_seconds: float | None = None) -> None:
        self.jobs.append(job_id, event, ttl_seconds)

    async def job_events(self, job_id: str, start: int = 0) -> list[bytes]:
        return self.jobs.events(job_id, start)

    async def once(self, key: str, work: Callable[[], Awaitable[CompileResult]]) -> CompileResult:
        return await work()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def run(self) -> None:
        await run_sweeper(
            self.artifacts,
            self.artifact_ttl_days,
            self.cleanup_interval_mins,
            self.cache.live_ids if self.cache else set,
        )

    def watch(self, metrics: Metrics) -> None:
        if self.cache is not None:
            metrics.watch_cache(self.cache)
