"""The shared store for several replicas: artifacts, the result cache and single flight in Redis.

Keys (all under `emcc-trio:`):
- `artifact:<id>`: a hash holding every file of the artifact in chunks of CHUNK_BYTES
  (`<name>:<i>`, with `<name>:size` and `<name>:chunks`), so that neither publishing nor an
  answer ever holds a whole file. It is written chunk by chunk as `artifact:<id>:staging`
  (expiring in STAGING_MS, in case the writer dies) and renamed to `artifact:<id>` in one step
  once whole, so a reader finds every file or none; it expires after artifactTTLDays. (A hash
  of whole files, `<name>` alone, as earlier versions wrote, is still read.)
- `cache:<key>`: the JSON entry of a cached result. It expires a tenth earlier than the
  artifact it points at, and a hit refreshes both, so under `maxmemory-policy volatile-ttl`
  Redis evicts a cache entry before the artifact it points at.
- `quota:<hash of client>`: the artifact bytes a client stored in its current window, counted
  by INCRBY and expiring with the window (PEXPIRE) in one script: one count for every replica.
- `lock:<key>` (a random token, a few seconds' expiry renewed by its holder) and
  `outcome:<key>:<token>` (the holder's result for its waiters, kept briefly): one compile per
  key in the whole cluster; if the holder dies, its lock expires and a waiter takes over.
- `obj:<name>`: a build manifest (`m-...`) or compiled object (`o-...`) of a multi-file
  project (`compile.build`), shared by every replica; it expires as artifacts do.

Every operation has a deadline; a failure raises StoreUnavailableError, marks the store
unreachable (readiness fails) until an operation or the background ping succeeds again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit

import attrs
import coredis
import coredis.exceptions
import outcome
import trio
from coredis.commands import Script
from coredis.connection import TCPLocation
from coredis.tokens import PureToken

from emcc_trio.metrics import Metrics
from emcc_trio.models import (
    ARTIFACT_FILES,
    BOTH_FILES,
    CompileResult,
    decode_result,
    encode_result,
)
from emcc_trio.storage.artifacts import MAX_ARTIFACT_BYTES, is_valid_id, open_job_output
from emcc_trio.storage.base import (
    CHUNK_BYTES,
    Artifact,
    FlightWaitTimeoutError,
    StoreUnavailableError,
)
from emcc_trio.storage.objects import is_valid_name as is_valid_object_name
from emcc_trio.storage.quota import QuotaCharge
from emcc_trio.storage.redis_url import SENTINEL_SCHEME, parse_sentinel_url

T = TypeVar("T")
PREFIX: Final = "emcc-trio:"
OP_TIMEOUT_SECONDS: Final = 5.0
CONNECT_TIMEOUT_SECONDS: Final = 1.0
LOCK_MS: Final = 3000  # how soon a waiter takes over from a holder that died
RENEW_SECONDS: Final = 1.0
POLL_SECONDS: Final = 0.1
OUTCOME_MS: Final = 30_000
PING_SECONDS: Final = 1.0
# Objects of builds expire as artifacts do; with artifacts kept for ever, after a week.
OBJECT_TTL_MS: Final = 7 * 86_400_000
STAGING_MS: Final = 600_000  # a half-written artifact of a writer that died goes after this

# Only the holder may renew or release its lock.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

# Publish a staged artifact if it is whole (a staging key evicted midway and made anew by a
# later chunk lacks fields): rename it into place, with the artifact's expiry.
# KEYS: staging, artifact. ARGV: the number of fields, artifact TTL ms (0: no expiry).
_PUBLISH = """
if redis.call('hlen', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('rename', KEYS[1], KEYS[2])
if tonumber(ARGV[2]) > 0 then
  redis.call('pexpire', KEYS[2], ARGV[2])
else
  redis.call('persist', KEYS[2])
end
return 1
"""

# The artifact quota (see storage/quota.py): count ARGV[1] bytes unless refused.
# KEYS: the client's quota key. ARGV: bytes, limit, window ms. -> {taken, used, ms left}
_CHARGE_QUOTA = """
local used = tonumber(redis.call('get', KEYS[1]) or '0')
local n, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local left = redis.call('pttl', KEYS[1])
if left < 0 then left = tonumber(ARGV[3]) end
if used >= limit or used + n > limit then return {0, used, left} end
if n > 0 then
  used = redis.call('incrby', KEYS[1], n)
  if redis.call('pttl', KEYS[1]) < 0 then redis.call('pexpire', KEYS[1], ARGV[3]) end
end
return {1, used, left}
"""

# A cache lookup in one round trip: the entry, and for a success its artifact's expiry
# restarted (a gone artifact makes the entry a miss, and drops it); then the entry's own.
# ARGV: artifact key prefix, artifact TTL ms, entry TTL ms (0: no expiry).
_CACHE_GET = """
local raw = redis.call('get', KEYS[1])
if not raw then return false end
local ok, entry = pcall(cjson.decode, raw)
if not ok or type(entry) ~= 'table' then return false end
if entry['ok'] then
  local artifact = ARGV[1] .. tostring(entry['id'])
  local found
  if tonumber(ARGV[2]) > 0 then
    found = redis.call('pexpire', artifact, ARGV[2])
  else
    found = redis.call('exists', artifact)
  end
  if found == 0 then
    redis.call('del', KEYS[1])
    return false
  end
end
if tonumber(ARGV[3]) > 0 then redis.call('pexpire', KEYS[1], ARGV[3]) end
return raw
"""

log = logging.getLogger("emcc_trio.redis_store")


# A job's event log: the event that creates it sets its expiry (ARGV[2], ms); any later one
# is dropped once the log has expired, so a late event cannot bring a job back forever.
_JOB_APPEND = """
if ARGV[2] == '' and redis.call('exists', KEYS[1]) == 0 then
  return 0
end
local length = redis.call('rpush', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('pexpire', KEYS[1], ARGV[2])
end
return length
"""


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def artifact_key(job_id: str) -> str:
    return f"{PREFIX}artifact:{job_id}"


def staging_key(job_id: str) -> str:
    return f"{PREFIX}artifact:{job_id}:staging"


def entry_key(key: str) -> str:
    return f"{PREFIX}cache:{key}"


def object_key(name: str) -> str:
    return f"{PREFIX}obj:{name}"


def quota_key(client: str) -> str:
    """A hash, so that no address or token name shows in Redis."""
    digest = hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{PREFIX}quota:{digest[:32]}"


def lock_key(key: str) -> str:
    return f"{PREFIX}lock:{key}"


def outcome_key(key: str, token: str) -> str:
    return f"{PREFIX}outcome:{key}:{token}"


def entry_ttl_ms(artifact_ttl_ms: int) -> int:
    """Shorter than the artifact's: volatile-ttl eviction takes the entry first."""
    return artifact_ttl_ms - artifact_ttl_ms // 10


def open_client(url: str) -> coredis.Redis[bytes]:
    """A client for `url` (redis://, rediss:// or unix://, password included); it connects
    lazily, so a replica starts while Redis is down and becomes ready when it is up."""
    return coredis.Redis.from_url(
        url,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        stream_timeout=OP_TIMEOUT_SECONDS,
    )


def connect(url: str) -> tuple[coredis.Redis[bytes], coredis.Sentinel[bytes] | None]:
    """A client for any `redisUrl`; for redis+sentinel://, also the Sentinel client it asks
    where the primary is (again after a failover: the client follows the new primary)."""
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        return open_client(url), None
    target = parse_sentinel_url(url)
    timeouts = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "stream_timeout": OP_TIMEOUT_SECONDS}
    sentinel = coredis.Sentinel(
        [TCPLocation(host, port) for host, port in target.sentinels], sentinel_kwargs=timeouts
    )
    client = sentinel.primary_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        stream_timeout=OP_TIMEOUT_SECONDS,
    )
    return client, sentinel


async def _one_chunk(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


@attrs.define
class RedisStore:
    client: coredis.Redis[bytes]
    artifact_ttl_days: float  # 0: artifacts never expire (size Redis for that)
    max_wait_seconds: float  # the longest a compile can hold a key: queue wait plus run
    metrics: Metrics = attrs.field(factory=Metrics)
    # Set when `client` follows a primary through Sentinel: entered before the client.
    sentinel: coredis.Sentinel[bytes] | None = None
    reachable: bool = False
    max_file_bytes: int = MAX_ARTIFACT_BYTES  # maxArtifactMB
    # EVALSHA, falling back to EVAL once per connection that has not seen the script.
    _cache_get: Script[bytes] = attrs.field(init=False)
    _publish: Script[bytes] = attrs.field(init=False)
    _charge_quota: Script[bytes] = attrs.field(init=False)
    _renew_lock: Script[bytes] = attrs.field(init=False)
    _release_lock: Script[bytes] = attrs.field(init=False)
    _job_append: Script[bytes] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._cache_get = self.client.register_script(_CACHE_GET)
        self._publish = self.client.register_script(_PUBLISH)
        self._charge_quota = self.client.register_script(_CHARGE_QUOTA)
        self._renew_lock = self.client.register_script(_RENEW)
        self._release_lock = self.client.register_script(_RELEASE)
        self._job_append = self.client.register_script(_JOB_APPEND)

    @property
    def artifact_ttl_ms(self) -> int:
        return round(self.artifact_ttl_days * 86_400_000)

    async def _call(self, op: str, command: Callable[[], Awaitable[T]]) -> T:
        start = time.perf_counter()
        try:
            with trio.fail_after(OP_TIMEOUT_SECONDS):
                value = await command()
        except (coredis.exceptions.RedisError, trio.TooSlowError, OSError) as exc:
            self.metrics.store_errors.labels(op).inc()
            if self.reachable:
                log.warning("store unreachable", extra={"fields": {"op": op, "error": str(exc)}})
            self.reachable = False
            raise StoreUnavailableError(f"the store is unreachable ({op}): {exc}") from exc
        finally:
            self.metrics.store_seconds.labels(op).observe(time.perf_counter() - start)
        if not self.reachable:
            log.info("store reachable", extra={"fields": {"op": op}})
        self.reachable = True
        return value

    async def publish(
        self, job_id: str, job_dir: Path, files: tuple[str, ...] = BOTH_FILES
    ) -> None:
        staging = staging_key(job_id)
        fields = 0
        try:
            for name in files:
                fields += await self._stage_file(staging, job_dir, name)
            args = (fields, self.artifact_ttl_ms)
            whole: object = await self._call(
                "publish",
                lambda: self._publish(keys=[staging, artifact_key(job_id)], args=args),
            )
            if whole != 1:
                raise StoreUnavailableError("the staged artifact was evicted before it was whole")
        except BaseException:
            deadline = trio.current_time() + OP_TIMEOUT_SECONDS
            with (
                trio.CancelScope(shield=True, deadline=deadline),
                contextlib.suppress(StoreUnavailableError),
            ):
                await self._call("publish", lambda: self.client.delete([staging]))
            raise

    async def _stage_file(self, staging: str, job_dir: Path, name: str) -> int:
        """Copy one file into the staging hash, a chunk per round trip; return the fields
        written."""
        src = await trio.to_thread.run_sync(open_job_output, job_dir, name, self.max_file_bytes)
        try:
            size = count = 0
            while chunk := await trio.to_thread.run_sync(src.read, CHUNK_BYTES):
                await self._stage(staging, {f"{name}:{count}": chunk})
                size += len(chunk)
                count += 1
        finally:
            src.close()
        await self._stage(staging, {f"{name}:size": str(size), f"{name}:chunks": str(count)})
        return count + 2

    async def _stage(self, staging: str, fields: dict[str, str | bytes]) -> None:
        async def store() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(staging, fields)
                pipe.pexpire(staging, STAGING_MS)

        await self._call("publish", store)

    async def artifact(self, job_id: str, name: str) -> Artifact | None:
        if not is_valid_id(job_id) or name not in ARTIFACT_FILES:
            return None
        key = artifact_key(job_id)
        # A whole file (`name`), as earlier versions stored it, comes whole; nothing else does.
        fields = [f"{name}:size", f"{name}:chunks", name]
        size, count, whole = await self._call("read", lambda: self.client.hmget(key, fields))
        if size is not None and count is not None:
            return Artifact(int(size), partial(self._chunks, key, name, int(count)))
        if whole is not None:
            return Artifact(len(whole), partial(_one_chunk, whole))
        return None

    async def _chunks(self, key: str, name: str, count: int) -> AsyncGenerator[bytes, None]:
        for index in range(count):
            chunk = await self._call("read", partial(self.client.hget, key, f"{name}:{index}"))
            if chunk is None:
                raise StoreUnavailableError(f"{key} expired or was evicted while being read")
            yield chunk

    async def cache_get(self, key: str) -> CompileResult | None:
        args: tuple[str, int, int] = (
            artifact_key(""),
            self.artifact_ttl_ms,
            entry_ttl_ms(self.artifact_ttl_ms),
        )
        raw: object = await self._call(
            "cache_get", lambda: self._cache_get(keys=[entry_key(key)], args=args)
        )
        if not isinstance(raw, bytes):
            return None
        try:
            return decode_result(raw)
        except ValueError:
            return None

    async def cache_put(self, key: str, result: CompileResult) -> None:
        text = encode_result(result)
        ttl = entry_ttl_ms(self.artifact_ttl_ms)
        await self._call(
            "cache_put", lambda: self.client.set(entry_key(key), text, px=ttl if ttl > 0 else None)
        )

    async def object_get(self, name: str) -> bytes | None:
        if not is_valid_object_name(name):
            return None
        found: object = await self._call("object_get", lambda: self.client.get(object_key(name)))
        return found if isinstance(found, bytes) else None

    async def object_put(self, name: str, data: bytes) -> None:
        if not is_valid_object_name(name):
            return
        ttl = self.artifact_ttl_ms or OBJECT_TTL_MS
        await self._call("object_put", lambda: self.client.set(object_key(name), data, px=ttl))

    async def charge_quota(
        self, client: str, nbytes: int, limit: int, window_seconds: float
    ) -> QuotaCharge:
        args = (nbytes, limit, max(1, round(window_seconds * 1000)))
        reply: object = await self._call(
            "quota", lambda: self._charge_quota(keys=[quota_key(client)], args=args)
        )
        if not isinstance(reply, list) or len(reply) != 3:
            raise StoreUnavailableError(f"the quota script answered {reply!r}")
        taken, used, left_ms = (int(value) for value in reply)
        return QuotaCharge(taken == 1, used, left_ms / 1000)

    async def job_append(self, job_id: str, event: bytes, ttl_seconds: float | None = None) -> None:
        ttl = "" if ttl_seconds is None else str(max(1, round(ttl_seconds * 1000)))
        await self._call(
            "job_append", lambda: self._job_append(keys=[job_key(job_id)], args=[event, ttl])
        )

    async def job_events(self, job_id: str, start: int = 0) -> list[bytes]:
        found: object = await self._call(
            "job_events", lambda: self.client.lrange(job_key(job_id), start, -1)
        )
        return (
            [item for item in found if isinstance(item, bytes)] if isinstance(found, list) else []
        )

    async def once(self, key: str, work: Callable[[], Awaitable[CompileResult]]) -> CompileResult:
        """Take the key's lock and run `work`, or wait for the holder's outcome; take over
        when the holder's lock goes without an outcome (it died or was cancelled)."""
        token = secrets.token_hex(16)
        lock = lock_key(key)
        deadline = trio.current_time() + self.max_wait_seconds
        while True:
            acquired = await self._call(
                "lock",
                lambda: self.client.set(lock, token, condition=PureToken.NX, px=LOCK_MS),
            )
            if acquired:
                return await self._hold(key, token, work)
            holder = await self._call("lock", lambda: self.client.get(lock))
            if holder is None:
                continue
            outcome = await self._wait_for(key, holder.decode(), deadline)
            if outcome is not None:
                return outcome

    async def _wait_for(self, key: str, holder: str, deadline: float) -> CompileResult | None:
        """The holder's outcome, or None once its lock is gone without one."""
        lock, outcome = lock_key(key), outcome_key(key, holder)
        while True:
            found, current = await self._call("wait", lambda: self.client.mget([outcome, lock]))
            if found is not None:
                return decode_result(found)
            if current is None or current.decode() != holder:
                return None
            if trio.current_time() > deadline:
                raise FlightWaitTimeoutError
            await trio.sleep(POLL_SECONDS)

    async def _hold(
        self, key: str, token: str, work: Callable[[], Awaitable[CompileResult]]
    ) -> CompileResult:
        lock = lock_key(key)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew, lock, token)
                # Captured, so that its exceptions leave unwrapped by the nursery.
                result = await outcome.acapture(work)
                nursery.cancel_scope.cancel()
            value = result.unwrap()
            text = encode_result(value)
            await self._call(
                "outcome", lambda: self.client.set(outcome_key(key, token), text, px=OUTCOME_MS)
            )
            return value
        finally:
            # On failure the lock expires by itself within LOCK_MS.
            deadline = trio.current_time() + OP_TIMEOUT_SECONDS
            with (
                trio.CancelScope(shield=True, deadline=deadline),
                contextlib.suppress(StoreUnavailableError),
            ):
                await self._call("unlock", lambda: self._release_lock(keys=[lock], args=[token]))

    async def _renew(self, lock: str, token: str) -> None:
        while True:
            await trio.sleep(RENEW_SECONDS)
            # On failure the compile goes on; storing its result will tell.
            with contextlib.suppress(StoreUnavailableError):
                await self._call(
                    "renew", lambda: self._renew_lock(keys=[lock], args=[token, LOCK_MS])
                )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """The client's connection pool lives as long as the server; it connects lazily."""
        async with contextlib.AsyncExitStack() as stack:
            if self.sentinel is not None:
                await stack.enter_async_context(self.sentinel)
            await stack.enter_async_context(self.client)
            yield

    async def run(self) -> None:
        """Keep `reachable` current while no request touches the store."""
        while True:
            with contextlib.suppress(StoreUnavailableError):
                await self._call("ping", self.client.ping)
            await trio.sleep(PING_SECONDS)

    def watch(self, metrics: Metrics) -> None:
        self.metrics = metrics
