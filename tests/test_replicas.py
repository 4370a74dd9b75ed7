"""Two real servers that share a real redis-server: any replica serves any artifact, one cache,
and a Redis outage answered with 503 and recovered from without a restart; readiness."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import httpx
import pytest
from test_lifecycle import open_compile, wait_for_compiler

from emcc_trio.compile.compiler import Compiler
from emcc_trio.compile.gate import Gate
from emcc_trio.compile.service import Service
from emcc_trio.storage.artifacts import ArtifactStore
from emcc_trio.storage.local import LocalStore
from emcc_trio.testing.harness import MakeServer, Server, build_units, eventually
from emcc_trio.testing.programs import HELLO_C, run_artifact, spin
from emcc_trio.testing.redis import REDIS_PASSWORD, RedisServer, SentinelSetup

COMPILE_SAMPLES = re.compile(r"^emcc_trio_compile_duration_seconds_count (\S+)$", re.M)


def compiles(server_url: str) -> float:
    metrics = httpx.get(f"{server_url}/metrics").text
    match = COMPILE_SAMPLES.search(metrics)
    assert match is not None, metrics
    return float(match[1])


def test_replicas_share_artifacts_and_cache(
    make_server: MakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = make_server(redisUrl=redis_server.url)
    two = make_server(redisUrl=redis_server.url)
    first = one.compile(HELLO_C)
    assert first.status_code == 200, first.text
    assert first.json()["cached"] is False
    # The other replica serves the artifacts it never built, with the same headers.
    assert run_artifact(two, first, tmp_path) == "hello from C\n"
    with two.client() as client:
        js = client.get(first.json()["js"])
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert js.headers["content-type"].startswith("application/javascript")
    # ... and answers the same request from the shared cache.
    again = two.compile(HELLO_C)
    assert again.status_code == 200, again.text
    assert again.json()["cached"] is True
    assert again.json()["id"] == first.json()["id"]
    assert compiles(one.url) == 1
    assert compiles(two.url) == 0
    # Nothing on either replica's disk: the artifacts live in Redis.
    assert not any((one.workdir / "artifacts").iterdir())
    assert not any((two.workdir / "artifacts").iterdir())
    one.assert_clean()
    # The password never reaches a log.
    assert REDIS_PASSWORD not in one.log()
    assert ":***@" in one.log()


def test_redis_outage_is_503_then_recovers(
    make_server: MakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    server = make_server(redisUrl=redis_server.url)
    with server.client() as client:
        eventually(lambda: client.get("/readyz").status_code == 200, 30, "ready")
        assert client.get("/readyz").text == "ready"
    built = server.compile(HELLO_C)
    assert built.status_code == 200, built.text
    redis_server.stop()
    with server.client() as client:
        refused = server.compile("int main(void) { return 1; }\n")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "the artifact store is unreachable; try again later"
        assert int(refused.headers["retry-after"]) > 0
        artifact = client.get(built.json()["js"])
        assert artifact.status_code == 503
        assert artifact.json()["ok"] is False
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"] == "not ready: the store is unreachable"
        assert client.get("/healthz").status_code == 200
    redis_server.start()
    with server.client() as client:
        eventually(lambda: client.get("/readyz").status_code == 200, 30, "ready again")
    recovered = server.compile(HELLO_C)
    assert recovered.status_code == 200, recovered.text
    assert run_artifact(server, recovered, tmp_path) == "hello from C\n"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert re.search(r'^emcc_trio_store_errors_total\{op="cache_get"\} [1-9]', metrics, re.M)
    server.assert_clean()


def test_a_replica_follows_the_primary_through_a_sentinel_failover(
    make_server: MakeServer, redis_sentinel: SentinelSetup, tmp_path: Path
) -> None:
    primary, replica = redis_sentinel.primary, redis_sentinel.replica
    server = make_server(redisUrl=redis_sentinel.url)
    built = server.compile(HELLO_C)
    assert built.status_code == 200, built.text
    key = f"emcc-trio:artifact:{built.json()['id']}"
    assert primary.cli("exists", key).stdout.strip() == "1"
    # Replicated before the primary goes: what was stored must outlive it.
    assert primary.cli("wait", "1", "10000").stdout.strip() == "1"
    primary.stop()
    eventually(lambda: redis_sentinel.primary_port() == replica.port, 60, "the Sentinel's failover")
    with server.client() as client:
        # The server asks the Sentinel again and follows it, without a restart.
        eventually(lambda: client.get("/readyz").status_code == 200, 30, "ready again")
    assert run_artifact(server, built, tmp_path) == "hello from C\n"
    after = server.compile("int main(void) { return 7; }\n")
    assert after.status_code == 200, after.text
    stored = replica.cli("exists", f"emcc-trio:artifact:{after.json()['id']}")
    assert stored.stdout.strip() == "1"
    assert REDIS_PASSWORD not in server.log()
    server.assert_clean()


def test_redis_url_from_the_environment_is_used(
    make_server: MakeServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMCC_TRIO_REDIS_URL provides the URL (secrets stay out of config.json)."""
    monkeypatch.setenv("EMCC_TRIO_REDIS_URL", redis_server.url)
    server = make_server()
    response = server.compile(HELLO_C)
    assert response.status_code == 200, response.text
    stored = redis_server.cli("exists", f"emcc-trio:artifact:{response.json()['id']}")
    assert stored.stdout.strip() == "1"


def test_readyz_fails_while_the_queue_is_full(make_server: MakeServer) -> None:
    """No Redis here: readiness is also about this replica's own queue."""
    server = make_server(maxConcurrentJobs=1, queueMax=1)
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        running = open_compile(server, spin(), "cpp")
        wait_for_compiler(server)
        # A different source: an identical one would join the first compile, not queue.
        waiting = open_compile(server, spin() + "/* another */\n", "cpp")
        eventually(
            lambda: "emcc_trio_queue_waiting 1.0" in client.get("/metrics").text,
            10,
            "the second request to wait in the queue",
        )
        full = client.get("/readyz")
        assert full.status_code == 503
        assert full.json()["error"] == "not ready: the queue is full"
        assert full.headers["retry-after"] == "5"
        waiting.close()
        running.close()
        eventually(lambda: client.get("/readyz").status_code == 200, 30, "ready again")
    server.assert_clean(timeout=3)


def test_not_ready_while_shutting_down(tmp_path: Path) -> None:
    service = Service(
        driver=None,
        compiler=cast(Compiler, None),  # readiness only: nothing is compiled
        gate=Gate(
            estimate_bytes=1, max_concurrent=1, queue_max=1, queue_timeout_seconds=1, budget=None
        ),
        store=LocalStore(ArtifactStore(tmp_path), None, 3, 30),
    )
    assert service.not_ready() is None
    service.shutdown()
    assert service.not_ready() == "the server is shutting down"


def test_replicas_share_compiled_objects(
    make_server: MakeServer, redis_server: RedisServer
) -> None:
    """A project built on one replica: after a one-file change, the other replica compiles
    only that file, with the other objects from Redis."""
    one = make_server(redisUrl=redis_server.url)
    two = make_server(redisUrl=redis_server.url)
    files = {f"src/u{i}.c": f"int u{i}(void) {{ return {i}; }}\n" for i in range(5)}
    calls = " + ".join(f"u{i}()" for i in range(5))
    code = (
        "".join(f"int u{i}(void);\n" for i in range(5)) + f"int main(void) {{ return {calls}; }}\n"
    )

    def post(server: Server, project: dict[str, str]) -> httpx.Response:
        with server.client() as client:
            return client.post("/compile", json={"code": code, "files": project})

    assert post(one, files).json()["ok"] is True
    changed = {**files, "src/u3.c": "int u3(void) { return 33; }\n"}
    assert post(two, changed).json()["ok"] is True
    assert build_units(two.url) == {"compiled": 1.0, "reused": 5.0}
    assert redis_server.cli("--scan", "--pattern", "emcc-trio:obj:*").stdout.count("\n") >= 12
    two.assert_clean()
