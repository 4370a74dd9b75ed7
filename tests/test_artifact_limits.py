"""What one request may store: `maxArtifactMB` bounds every file a compile writes while it
runs (RLIMIT_FSIZE, in the jail and outside it), `jobDiskMaxMB` what its job dir takes in all
(a project's units each write an object), and `artifactQuotaMB` what one client stores per
window, on one replica and across replicas sharing Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from emcc_trio.storage.quota import QuotaWindows
from emcc_trio.testing.harness import MakeServer, Server
from emcc_trio.testing.programs import program
from emcc_trio.testing.redis import RedisServer

MB = 1024 * 1024
# The 217-byte request: an LTO object of a few hundred bytes that makes wasm-ld write a
# 96 MiB data segment into the job dir.
BOMB_ARGS = ["-O0", "-flto", "-sINITIAL_MEMORY=160MB"]
# Caps no other than maxArtifactMB can meet first: the link stays far below 1 GiB of memory and
# a minute of time, and prints a few KiB (LLVM's stack dump).
BOMB_CAPS: dict[str, Any] = {
    "maxArtifactMB": 32,
    "jobMemoryMaxMB": 1024,
    "jobTimeoutSeconds": 300,
    "jobCpuSeconds": 300,
    "maxOutputBytes": 1 << 20,
}


def stored(server: Server) -> dict[str, list[str]]:
    """What the server keeps on disk besides its job dirs: artifacts (staging dirs included)
    and every file below the cache dir (result entries, and the object cache's files), but
    the memos' (glue, PCHs: computed from the toolchain's own files, never a request's)."""
    cache = server.artifacts_dir.parent / "cache"
    files = sorted(
        str(p.relative_to(cache))
        for p in cache.rglob("*")
        if not p.is_dir() and p.relative_to(cache).parts[0] not in ("glue", "pch")
    )
    return {
        "artifacts": sorted(p.name for p in server.artifacts_dir.iterdir()),
        "cache": files if cache.exists() else [],
    }


def assert_bomb_stopped_by_the_artifact_cap(server: Server) -> None:
    response = server.compile(program("artifact_bomb.c"), args=BOMB_ARGS)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["limit"] == "artifact", body
    assert "maxArtifactMB" in body["error"]
    assert "File too large" in body["error"]  # the write itself failed
    with server.client() as client:
        assert client.get(f"/artifacts/{body['id']}/app.wasm").status_code == 404
    server.assert_clean()
    assert stored(server) == {"artifacts": [], "cache": []}


def test_a_tiny_request_cannot_write_a_large_artifact(make_server: MakeServer) -> None:
    assert_bomb_stopped_by_the_artifact_cap(make_server(**BOMB_CAPS))


def test_the_jail_bounds_the_file_size_by_max_artifact_mb(
    make_server: MakeServer, reachable_dir: Path
) -> None:
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=True, **BOMB_CAPS)
    assert_bomb_stopped_by_the_artifact_cap(server)


# Units of 25 bytes whose objects hold 24 MiB each: below maxArtifactMB one by one, 96 MiB
# together against a jobDiskMaxMB of 40. The objects stay in the job dir until the job ends,
# so the disk cap is met whichever of the poll and the end looks first; memory (page cache,
# 1 GiB), time, CPU and output are far off.
DISK_BOMB_UNITS = {f"big{n}.c": f"char big{n}[24 << 20] = {{1}};\n" for n in range(4)}
DISK_BOMB_CAPS: dict[str, Any] = {**BOMB_CAPS, "maxProjectMB": 1, "jobDiskMaxMB": 40}


@pytest.mark.parametrize("nsjail", [False, True], ids=["unjailed", "jailed"])
def test_a_project_whose_objects_pass_the_disk_cap_is_stopped(
    make_server: MakeServer, reachable_dir: Path, nsjail: bool
) -> None:
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=nsjail, **DISK_BOMB_CAPS)
    response = server.compile("int main(void) { return 0; }\n", files=DISK_BOMB_UNITS)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["limit"] == "disk", body
    assert "jobDiskMaxMB" in body["error"]
    with server.client() as client:
        assert client.get(f"/artifacts/{body['id']}/app.wasm").status_code == 404
    server.assert_clean()
    assert stored(server)["artifacts"] == []


@pytest.mark.parametrize("nsjail", [False, True], ids=["unjailed", "jailed"])
def test_an_artifact_below_the_cap_is_stored(
    make_server: MakeServer, reachable_dir: Path, nsjail: bool
) -> None:
    """The same shape of program, 8 MiB of data: the cap is what stopped the bomb."""
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=nsjail, **BOMB_CAPS)
    code = program("artifact_bomb.c").replace("96 << 20", "8 << 20")
    response = server.compile(code, args=BOMB_ARGS)
    assert response.status_code == 200, response.text
    with server.client() as client:
        wasm = client.get(response.json()["wasm"])
    assert wasm.status_code == 200
    assert 8 * MB < len(wasm.content) < 9 * MB


# One client may store 1 MiB per hour; each program below stores about 390 KB (its app.js and
# 300 KiB of data in its app.wasm): two fit, the third does not.
QUOTA: dict[str, Any] = {
    "maxArtifactMB": 1,
    "artifactQuotaMB": 1,
    "artifactQuotaWindowMinutes": 60,
}


def data_program(tag: str) -> str:
    return (
        f"#include <stdio.h>\nchar big[300 << 10] = {{1}};\nint main(int argc, char **argv) "
        f'{{ (void)argv; printf("{tag} %d\\n", big[argc]); return 0; }}\n'
    )


def compile_from(server: Server, code: str, source: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.url, timeout=180, transport=transport) as client:
        return client.post("/compile", json={"code": code})


def assert_quota_refusal(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert 3500 < int(response.headers["retry-after"]) <= 3600
    body = response.json()
    assert "would take this client past its quota" in body["error"]
    assert "artifactQuotaMB allows 1 MB of artifacts per client every 60 minutes" in body["error"]
    assert "nothing was stored" in body["error"]


def test_a_client_past_its_artifact_quota_gets_a_429_and_nothing_is_stored(
    make_server: MakeServer,
) -> None:
    server = make_server(**QUOTA)
    first, second = (compile_from(server, data_program(tag)) for tag in ("one", "two"))
    assert (first.status_code, second.status_code) == (200, 200), second.text
    third = compile_from(server, data_program("three"))
    assert_quota_refusal(third)
    kept = {first.json()["id"], second.json()["id"]}
    assert set(stored(server)["artifacts"]) == kept
    # A cache hit stores nothing: still answered. Another client has a quota of its own.
    hit = compile_from(server, data_program("one"))
    assert (hit.status_code, hit.json()["cached"]) == (200, True)
    other = compile_from(server, data_program("three"), source="127.0.0.2")
    assert other.status_code == 200, other.text
    server.assert_clean()
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'emcc_trio_client_rejections_total{reason="artifact_quota"} 1.0' in metrics


def test_the_artifact_quota_is_held_across_replicas(
    make_server: MakeServer, redis_server: RedisServer
) -> None:
    one = make_server(redisUrl=redis_server.url, **QUOTA)
    two = make_server(redisUrl=redis_server.url, **QUOTA)
    assert compile_from(one, data_program("one")).status_code == 200
    assert compile_from(two, data_program("two")).status_code == 200
    # Replica one stored only the first artifact itself: the count is Redis's.
    assert_quota_refusal(compile_from(one, data_program("three")))
    assert_quota_refusal(compile_from(two, data_program("three")))
    [key] = redis_server.cli("--scan", "--pattern", "emcc-trio:quota:*").stdout.split()
    assert 0 < int(redis_server.cli("pttl", key).stdout) <= 3600 * 1000
    assert compile_from(two, data_program("three"), source="127.0.0.2").status_code == 200
    one.assert_clean()
    two.assert_clean()


@pytest.mark.unit
def test_a_quota_window_starts_with_the_first_charge_and_then_starts_again() -> None:
    now = [100.0]
    windows = QuotaWindows(clock=lambda: now[0])
    assert windows.charge("a", 600, 1000, 60).allowed
    now[0] = 130.0
    refused = windows.charge("a", 600, 1000, 60)
    assert (refused.allowed, refused.used, refused.reset_seconds) == (False, 600, 30.0)
    assert windows.charge("a", 400, 1000, 60).allowed  # exactly the limit
    assert not windows.charge("a", 0, 1000, 60).allowed  # reached: nothing more
    assert windows.charge("b", 1000, 1000, 60).allowed  # every client has its own
    now[0] = 160.0  # a's window ended
    again = windows.charge("a", 600, 1000, 60)
    assert (again.allowed, again.used, again.reset_seconds) == (True, 600, 60.0)
