"""What one request may store: `maxArtifactMB` bounds every file a compile writes while it
runs (RLIMIT_FSIZE, in the jail and outside it), and `artifactQuotaMB` bounds what one client
stores per window, on one replica and across replicas sharing Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emcc_trio.testing.harness import MakeServer, Server
from emcc_trio.testing.programs import program

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
    and cache entries."""
    cache = server.artifacts_dir.parent / "cache"
    return {
        "artifacts": sorted(p.name for p in server.artifacts_dir.iterdir()),
        "cache": sorted(p.name for p in cache.iterdir()) if cache.exists() else [],
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
