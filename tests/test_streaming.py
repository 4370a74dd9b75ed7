"""The server's memory does not grow with artifact size times readers: publishing copies in
chunks, and artifact answers stream chunk by chunk from disk or from Redis.

The measure is the kernel's high-water mark of the server's resident memory (VmHWM, reset
before each phase), so a peak cannot slip between two samples. The bound is a few chunks per
reader plus SLACK_BYTES: what the Python heap, the worker threads reading files and the
store's client may keep from one phase to the next. Before this change publishing a 24 MiB
artifact grew it by a whole copy, and every stalled reader by a copy more."""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import pytest

from emcc_trio.storage.base import CHUNK_BYTES
from emcc_trio.testing.harness import MakeServer, Server, eventually

MB = 1024 * 1024
ARTIFACT_MB = 24  # well within maxArtifactMB (32), far above the chunk
WARM_UP_MB = 8  # large enough that a reader that never reads stalls the server's writes
READERS = 6
# A chunk being sent, one being read, and the copies the HTTP layer and the store's client may
# make of it.
CHUNKS_PER_READER = 4
SLACK_BYTES = 8 * MB
ARGS = ["-O0", "-flto", "-sINITIAL_MEMORY=64MB"]
WAIT_SECONDS = 120.0  # only a failure bound: each wait ends at an event


def big_program(megabytes: int) -> str:
    """A few hundred bytes of C whose app.wasm holds `megabytes` MiB of initialised data."""
    return (
        f"#include <stdio.h>\nchar big[{megabytes} << 20] = {{1}};\n"
        'int main(int argc, char **argv) { (void)argv; printf("%d\\n", big[argc]); }\n'
    )


def bound_mb(readers: int) -> float:
    return (readers * CHUNKS_PER_READER * CHUNK_BYTES + SLACK_BYTES) / MB


def send_queue(server: Server, client_port: int) -> int:
    """Bytes the server has written to its connection with `client_port` that the client has
    not taken yet (the kernel's TCP table), or -1 while there is no such connection."""
    server_port = server.address[1]
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
            if ports == (server_port, client_port):
                return int(fields[4].split(":")[0], 16)
    return -1


def stalled_readers(server: Server, path: str, count: int) -> list[socket.socket]:
    """`count` connections that ask for `path` and never read, each returned once the server
    has begun writing the answer to it."""
    readers = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(server.address)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        readers.append(sock)
    for sock in readers:
        port: int = sock.getsockname()[1]
        eventually(partial(writing_to, server, port), WAIT_SECONDS, "the server to write")
    return readers


def writing_to(server: Server, client_port: int) -> bool:
    return send_queue(server, client_port) > 0


def closed_to(server: Server, client_port: int) -> bool:
    return send_queue(server, client_port) == -1


def close_all(server: Server, readers: list[socket.socket]) -> None:
    ports = [sock.getsockname()[1] for sock in readers]
    for sock in readers:
        sock.close()
    for port in ports:
        eventually(partial(closed_to, server, port), WAIT_SECONDS, "the server to close")


def compile_big(server: Server, megabytes: int) -> dict[str, str]:
    response = server.compile(big_program(megabytes), args=ARGS)
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


@pytest.mark.parametrize("store", ["local", "redis"])
def test_publishing_and_stalled_readers_hold_chunks_not_artifacts(
    make_server: MakeServer, request: pytest.FixtureRequest, store: str
) -> None:
    config: dict[str, object] = {"sendTimeoutSeconds": 600}
    if store == "redis":
        config["redisUrl"] = request.getfixturevalue("redis_server").url
    server = make_server(**config)

    # Every path the measured requests take, once: a compile, a publish, a whole read, and
    # stalled readers (the worker threads and buffers they leave are the server's baseline).
    warm = compile_big(server, WARM_UP_MB)
    with server.client() as client:
        assert len(client.get(warm["wasm"]).content) > WARM_UP_MB * MB
    close_all(server, stalled_readers(server, warm["wasm"], READERS))

    before = server.rss_mb()
    server.reset_peak_rss()
    built = compile_big(server, ARTIFACT_MB)
    published = server.peak_rss_mb() - before
    assert published <= bound_mb(1), f"publishing grew the server by {published:.1f} MiB"

    before = server.rss_mb()
    server.reset_peak_rss()
    readers = stalled_readers(server, built["wasm"], READERS)
    stalled = server.peak_rss_mb() - before
    assert stalled <= bound_mb(READERS), f"{READERS} stalled readers grew it by {stalled:.1f} MiB"

    # Streamed whole meanwhile, and byte for byte what the build wrote.
    with server.client() as client:
        wasm = client.get(built["wasm"])
    assert wasm.status_code == 200
    assert int(wasm.headers["content-length"]) == len(wasm.content)
    assert ARTIFACT_MB * MB < len(wasm.content) < (ARTIFACT_MB + 1) * MB
    assert wasm.content.startswith(b"\0asm")
    if store == "local":
        on_disk = server.artifacts_dir / built["id"] / "app.wasm"
        assert wasm.content == on_disk.read_bytes()
    close_all(server, readers)
    server.assert_clean()
