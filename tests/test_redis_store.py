"""The Redis store against a real redis-server: artifacts, the shared cache, single flight
across clients (as across replicas), and outages."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import pytest
import trio

from emcc_trio.compile.glue import entry_name
from emcc_trio.compile.memos import Memos
from emcc_trio.metrics import Metrics
from emcc_trio.models import CompileResult
from emcc_trio.storage.artifacts import UnsafeOutputError
from emcc_trio.storage.base import (
    CHUNK_BYTES,
    FlightWaitTimeoutError,
    StoreUnavailableError,
    read_artifact,
)
from emcc_trio.storage.objects import ObjectCache
from emcc_trio.storage.redis import (
    LOCK_MS,
    RedisStore,
    artifact_key,
    entry_key,
    lock_key,
    open_client,
    staging_key,
)
from emcc_trio.testing.fillers import GlueOnly
from emcc_trio.testing.harness import free_port
from emcc_trio.testing.redis import REDIS_PASSWORD, RedisServer
from emcc_trio.testing.results import stored_result

JOB = "a" * 32
DAY_MS = 86_400_000


@asynccontextmanager
async def redis_store(server: RedisServer, ttl_days: float = 3) -> AsyncIterator[RedisStore]:
    async with open_client(server.url) as client:
        yield RedisStore(client, artifact_ttl_days=ttl_days, max_wait_seconds=60)


def job_dir(tmp_path: Path, js: bytes = b"js", wasm: bytes | None = b"\0asm") -> Path:
    directory = tmp_path / "job"
    directory.mkdir()
    (directory / "app.js").write_bytes(js)
    if wasm is not None:
        (directory / "app.wasm").write_bytes(wasm)
    return directory


async def test_publish_then_read_with_the_artifact_ttl(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with redis_store(redis_server, ttl_days=2) as store:
        await store.publish(JOB, job_dir(tmp_path, b"console.log(1)", b"\0asm\1"))
        assert await read_artifact(store, JOB, "app.js") == b"console.log(1)"
        assert await read_artifact(store, JOB, "app.wasm") == b"\0asm\1"
        assert await read_artifact(store, "b" * 32, "app.js") is None
        assert await read_artifact(store, JOB, "other.txt") is None
        assert await read_artifact(store, "../../etc", "app.js") is None
        assert store.reachable
    ttl = int(redis_server.cli("pttl", artifact_key(JOB)).stdout)
    assert 0 < ttl <= 2 * DAY_MS


async def test_a_single_file_artifact_is_app_js_alone_in_store_and_cache(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """-sSINGLE_FILE: app.js alone is published, and the cache entry says so, so that a hit
    on any replica answers `wasm: null`."""
    key = "s" * 64
    async with redis_store(redis_server) as store:
        await store.publish(JOB, job_dir(tmp_path, b"one file", wasm=None), ("app.js",))
        assert await read_artifact(store, JOB, "app.js") == b"one file"
        assert await read_artifact(store, JOB, "app.wasm") is None
        await store.cache_put(key, stored_result(JOB, files=("app.js",)))
        entry = await store.cache_get(key)
        assert entry is not None
        assert entry.files == ("app.js",)
    fields = redis_server.cli("hkeys", artifact_key(JOB)).stdout.split()
    assert sorted(fields) == ["app.js:0", "app.js:chunks", "app.js:size"]


async def test_publish_is_all_or_nothing(redis_server: RedisServer, tmp_path: Path) -> None:
    async with redis_store(redis_server) as store:
        with pytest.raises(FileNotFoundError):
            await store.publish(JOB, job_dir(tmp_path, wasm=None))
        link_dir = tmp_path / "linked"
        link_dir.mkdir()
        (link_dir / "app.js").write_bytes(b"js")
        (link_dir / "app.wasm").symlink_to("/etc/passwd")
        with pytest.raises(UnsafeOutputError):
            await store.publish(JOB, link_dir)
        assert await read_artifact(store, JOB, "app.js") is None
    assert redis_server.cli("exists", artifact_key(JOB)).stdout.strip() == "0"
    # The chunks staged before the failure are gone too.
    assert redis_server.cli("exists", staging_key(JOB)).stdout.strip() == "0"


async def test_a_file_is_stored_and_read_in_chunks(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    wasm = os.urandom(2 * CHUNK_BYTES + 1000)
    async with redis_store(redis_server) as store:
        await store.publish(JOB, job_dir(tmp_path, b"js", wasm))
        found = await store.artifact(JOB, "app.wasm")
        assert found is not None
        assert found.size == len(wasm)
        async with aclosing(found.chunks()) as chunks:
            sizes = [len(chunk) async for chunk in chunks]
        assert sizes == [CHUNK_BYTES, CHUNK_BYTES, 1000]
        assert await read_artifact(store, JOB, "app.wasm") == wasm
    key = artifact_key(JOB)
    assert redis_server.cli("hget", key, "app.wasm:chunks").stdout.strip() == "3"
    assert redis_server.cli("exists", staging_key(JOB)).stdout.strip() == "0"


async def test_an_artifact_of_whole_files_as_earlier_versions_stored_is_read(
    redis_server: RedisServer,
) -> None:
    redis_server.cli("hset", artifact_key(JOB), "app.js", "whole js")
    async with redis_store(redis_server) as store:
        assert await read_artifact(store, JOB, "app.js") == b"whole js"
        assert await read_artifact(store, JOB, "app.wasm") is None


async def test_cache_hit_refreshes_the_artifact_and_outlives_no_artifact(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key = "k" * 64
    async with redis_store(redis_server, ttl_days=1) as store:
        await store.publish(JOB, job_dir(tmp_path))
        stored = stored_result(JOB, True, "warning: x", duration_seconds=0.5)
        await store.cache_put(key, stored)
        entry_ttl = int(redis_server.cli("pttl", entry_key(key)).stdout)
        artifact_ttl = int(redis_server.cli("pttl", artifact_key(JOB)).stdout)
        # Entries expire before the artifacts they point at (volatile-ttl evicts them first).
        assert 0 < entry_ttl < artifact_ttl
        redis_server.cli("pexpire", artifact_key(JOB), "60000")
        entry = await store.cache_get(key)
        assert entry is not None
        assert entry == stored
        assert int(redis_server.cli("pttl", artifact_key(JOB)).stdout) > 60000
        # The artifact gone (evicted, expired): the entry is a miss and is dropped.
        redis_server.cli("del", artifact_key(JOB))
        assert await store.cache_get(key) is None
        assert redis_server.cli("exists", entry_key(key)).stdout.strip() == "0"
        # Compile errors have no artifact and are cached too.
        await store.cache_put(key, stored_result(JOB, False, "error: nope"))
        failed = await store.cache_get(key)
        assert failed is not None
        assert (failed.ok, failed.output) == (False, "error: nope")


async def test_one_flight_across_clients(redis_server: RedisServer) -> None:
    """Six callers on three clients (as on three replicas): the work runs once."""
    runs = 0
    release = trio.Event()
    outcomes: list[CompileResult] = []
    the_outcome = stored_result(JOB, True, "the outcome")

    async def work() -> CompileResult:
        nonlocal runs
        runs += 1
        await release.wait()
        return the_outcome

    async with (
        redis_store(redis_server) as one,
        redis_store(redis_server) as two,
        redis_store(redis_server) as three,
    ):

        async def call(store: RedisStore) -> None:
            outcomes.append(await store.once("f" * 64, work))

        async with trio.open_nursery() as nursery:
            for store in (one, two, three, one, two, three):
                nursery.start_soon(call, store)
            # Wait until the lock is held and the others wait, then let the holder finish.
            while redis_server.cli("exists", lock_key("f" * 64)).stdout.strip() != "1":
                await trio.sleep(0.01)
            release.set()
    assert runs == 1
    assert outcomes == [the_outcome] * 6
    assert redis_server.cli("exists", lock_key("f" * 64)).stdout.strip() == "0"


async def test_a_waiter_takes_over_from_a_holder_that_died(redis_server: RedisServer) -> None:
    """A lock whose holder is gone (no renewals, no outcome) expires; a waiter then runs."""
    key = "d" * 64
    redis_server.cli("set", lock_key(key), "dead-holder", "px", str(LOCK_MS))
    async with redis_store(redis_server) as store:
        mine = stored_result(JOB, False, "mine")

        async def work() -> CompileResult:
            return mine

        assert await store.once(key, work) == mine
    assert redis_server.cli("exists", lock_key(key)).stdout.strip() == "0"


async def test_a_cancelled_holder_releases_its_lock(redis_server: RedisServer) -> None:
    key = "c" * 64
    started = trio.Event()

    async def never() -> CompileResult:
        started.set()
        await trio.sleep_forever()
        raise AssertionError

    async with redis_store(redis_server) as store, trio.open_nursery() as nursery:

        async def hold() -> None:
            await store.once(key, never)

        nursery.start_soon(hold)
        await started.wait()
        assert redis_server.cli("exists", lock_key(key)).stdout.strip() == "1"
        nursery.cancel_scope.cancel()
    assert redis_server.cli("exists", lock_key(key)).stdout.strip() == "0"


async def test_an_outage_is_an_error_then_recovers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    metrics = Metrics()
    async with open_client(redis_server.url) as client:
        store = RedisStore(client, artifact_ttl_days=3, max_wait_seconds=60, metrics=metrics)
        await store.publish(JOB, job_dir(tmp_path))
        assert store.reachable
        redis_server.stop()
        with pytest.raises(StoreUnavailableError):
            await read_artifact(store, JOB, "app.js")
        with pytest.raises(StoreUnavailableError):
            await store.cache_get("k" * 64)
        assert not store.reachable
        errors = metrics.registry.get_sample_value("emcc_trio_store_errors_total", {"op": "read"})
        assert errors == 1
        redis_server.start()
        # Nothing kept (no persistence in the test server): the store answers again.
        assert await read_artifact(store, JOB, "app.js") is None
        assert store.reachable
        timed = metrics.registry.get_sample_value(
            "emcc_trio_store_duration_seconds_count", {"op": "read"}
        )
        assert timed == 2


async def test_a_holder_that_loses_the_store_gets_the_store_error(
    redis_server: RedisServer,
) -> None:
    """Not wrapped in an exception group: the service answers it with a 503."""

    async def work() -> CompileResult:
        redis_server.stop()
        return stored_result(JOB, False, "done, but nowhere to put it")

    async def failing() -> CompileResult:
        raise KeyError("the work's own error")

    async with redis_store(redis_server) as store:
        with pytest.raises(KeyError):
            await store.once("e" * 64, failing)
        with pytest.raises(StoreUnavailableError):
            await store.once("e" * 64, work)


async def test_waiters_give_up_on_a_holder_that_never_finishes(redis_server: RedisServer) -> None:
    """A lock renewed forever (a stuck holder elsewhere): the wait is bounded."""
    key = "w" * 64
    redis_server.cli("set", lock_key(key), "stuck-holder", "px", "600000")
    async with open_client(redis_server.url) as client:
        store = RedisStore(client, artifact_ttl_days=3, max_wait_seconds=0.5)

        async def work() -> CompileResult:
            raise AssertionError("the lock is held elsewhere")

        with pytest.raises(FlightWaitTimeoutError):
            await store.once(key, work)


def test_tls_and_a_password(tmp_path: Path) -> None:
    """rediss:// with the CA in the URL (coredis's ssl_ca_certs) against a TLS-only Redis."""
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    openssl += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*openssl, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    command = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    command += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    command += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    command += ["--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    published: list[bytes | None] = []

    async def roundtrip() -> None:
        async with open_client(url) as client:
            store = RedisStore(client, artifact_ttl_days=1, max_wait_seconds=60)
            while True:  # until redis-server listens
                try:
                    await store.publish(JOB, job_dir(tmp_path, b"over tls"))
                    break
                except StoreUnavailableError:
                    await trio.sleep(0.05)
            published.append(await read_artifact(store, JOB, "app.js"))

    try:
        trio.run(trio_fail_after, 30, roundtrip)
    finally:
        proc.kill()
        proc.wait()
    assert published == [b"over tls"]


async def trio_fail_after(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
    with trio.fail_after(seconds):
        await work()


async def test_objects_round_trip_and_expire_as_artifacts_do(redis_server: RedisServer) -> None:
    name, data = "o-" + "a" * 64, b"\0asm object"
    async with redis_store(redis_server, ttl_days=1) as store:
        assert await store.object_get(name) is None
        await store.object_put(name, data)
        assert await store.object_get(name) == data
        # Names become keys: anything but a manifest or object digest is refused.
        await store.object_put("../../etc", b"x")
        assert await store.object_get("../../etc") is None
    ttl = int(redis_server.cli("pttl", "emcc-trio:obj:" + name).stdout)
    assert 0 < ttl <= DAY_MS
    assert redis_server.cli("exists", "emcc-trio:obj:../../etc").stdout.strip() == "0"


async def test_replicas_share_glue_entries_and_toolchains_do_not(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """One replica computes a glue entry; another with the same toolchain takes it from Redis
    without computing it; one of another toolchain computes its own."""
    entry = b'{"stdout": "glue//FORWARDED_DATA:{}", "stderr": ""}'
    material = b"emcc-trio-glue-1\0/job\0settings"
    misses = tmp_path / "misses"
    misses.mkdir()
    (misses / "m").write_bytes(material)
    digest = hashlib.sha256(material).hexdigest()
    fills: list[str] = []

    def replica(name: str, toolchain: str, store: RedisStore) -> tuple[Memos, Metrics]:
        entries = ObjectCache(tmp_path / name, 1024 * 1024)
        entries.load()
        metrics = Metrics()
        memos = Memos(glue=entries, pch=None, toolchain=toolchain, shared=store, metrics=metrics)
        return memos, metrics

    async def fill_as(name: str, memo: Memos) -> None:
        async def fill(material: bytes) -> bytes | None:
            fills.append(name)
            return entry

        async with trio.open_nursery() as nursery:
            nursery.start_soon(memo.run, GlueOnly(fill))
            await memo.collect(misses)
            with trio.fail_after(10):
                while not entries_of(memo).contains(entry_name(digest)):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    async with redis_store(redis_server) as store:
        first, _ = replica("a", "toolchain-1", store)
        await fill_as("a", first)
        second, metrics = replica("b", "toolchain-1", store)
        await second.collect(misses)
        assert entries_of(second).get(entry_name(digest)) == entry
        shared = metrics.registry.get_sample_value(
            "emcc_trio_memo_total", {"memo": "glue", "event": "shared"}
        )
        assert shared == 1
        other, _ = replica("c", "toolchain-2", store)
        await fill_as("c", other)
    assert fills == ["a", "c"]


def entries_of(memos: Memos) -> ObjectCache:
    assert memos.glue is not None
    return memos.glue
