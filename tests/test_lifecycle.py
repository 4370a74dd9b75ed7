"""Limits, cancellation, shutdown and sweeping, against a real server and real compiles."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from emcc_trio.storage.artifacts import ArtifactStore, UnsafeOutputError, run_sweeper
from emcc_trio.testing.harness import MakeServer, Server, eventually
from emcc_trio.testing.programs import HELLO_C, program, spin


def open_compile(server: Server, code: str, kind: str = "c") -> socket.socket:
    """Send a compile request on a raw socket, so the test can hang up mid-compile."""
    sock = socket.create_connection(server.address)
    body = json.dumps({"code": code, "type": kind}).encode()
    head = (
        f"POST /compile HTTP/1.1\r\nHost: {urlsplit(server.url).netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def wait_for_compiler(server: Server) -> list[str]:
    """Block until the job's compiler (clang, under emcc) is running."""
    return eventually(
        lambda: [p for p in server.job_processes() if "clang" in p],
        60,
        "clang to start",
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_client_disconnect_kills_every_process_and_removes_the_dir(server: Server) -> None:
    sock = open_compile(server, spin(), "cpp")
    wait_for_compiler(server)
    assert server.leftovers()["job_dirs"], "the job dir exists while compiling"
    sock.close()
    server.assert_clean(timeout=2.0)
    disconnected = eventually(
        lambda: [e for e in server.log_events() if e.get("status") == 499],
        5,
        "the access log line of the dropped request",
    )
    assert disconnected[0]["path"] == "/compile"
    assert server.compile(HELLO_C).status_code == 200


def test_timeout_kills_the_job_and_says_so(make_server: MakeServer) -> None:
    # spin.cpp stays near 90 MB and 2 s of wall time allow at most 4 CPU seconds (jobCpuMax
    # 2): only the wall-clock cap can end it, on any machine.
    server = make_server(jobTimeoutSeconds=2)
    response = server.compile(spin(), "cpp")
    assert response.status_code == 422
    body = response.json()
    assert body["limit"] == "timeout"
    assert "jobTimeoutSeconds" in body["error"]
    assert body["usage"]["durationSeconds"] >= 2
    server.assert_clean(timeout=2.0)


def test_diagnostics_flood_is_bounded_and_memory_stays_flat(make_server: MakeServer) -> None:
    server = make_server(maxOutputBytes=65536)
    assert server.compile(HELLO_C).status_code == 200
    before = rss_kib(server.proc.pid)
    for _ in range(3):
        response = server.compile(program("flood.c"))
        assert response.status_code == 422
        body = response.json()
        assert body["limit"] == "output"
        assert "maxOutputBytes" in body["error"]
        assert "warning: this is a flood of diagnostics" in body["error"]
        assert len(body["error"].encode()) < 65536 + 1024
    growth_kib = rss_kib(server.proc.pid) - before
    assert growth_kib < 20 * 1024, f"server RSS grew by {growth_kib} KiB"
    server.assert_clean()


def test_shutdown_with_a_job_running_cancels_it_and_exits_zero(server: Server) -> None:
    sock = open_compile(server, spin(), "cpp")
    wait_for_compiler(server)
    assert server.stop(signal.SIGTERM, timeout=15) == 0
    reply = sock.recv(65536).decode()
    sock.close()
    assert reply.startswith("HTTP/1.1 503"), reply
    assert "shutting down" in reply
    assert server.leftovers() == {"processes": [], "job_dirs": [], "cgroups": []}
    assert any(e["event"] == "stopped" for e in server.log_events())


def read_until(sock: socket.socket, data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """Receive until `marker`: what came before it (with it), and what came after."""
    while marker not in data:
        more = sock.recv(65536)
        if not more:
            pytest.fail(f"the server closed the connection; received {data!r}")
        data += more
    head, _, rest = data.partition(marker)
    return head + marker, rest


def read_response(sock: socket.socket) -> str:
    """One whole HTTP/1.1 response (with a Content-Length) from `sock`."""
    head, rest = read_until(sock, b"", b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            pytest.fail(f"the server closed the connection; received {head + rest!r}")
        rest += more
    return (head + rest).decode()


def connection_refused(server: Server) -> bool:
    try:
        socket.create_connection(server.address, timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_shutdown_refuses_new_connections_and_finishes_open_requests(server: Server) -> None:
    sock = socket.create_connection(server.address)
    body = json.dumps({"code": HELLO_C, "type": "c"}).encode()
    head = (
        f"POST /compile HTTP/1.1\r\nHost: {urlsplit(server.url).netloc}\r\n"
        "Expect: 100-continue\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    # The 100 Continue says the request was accepted and is open: it keeps the server draining
    # until its body arrives (a request not yet read when the server stops is dropped, as on
    # any server's idle keep-alive connection).
    sock.sendall(head)
    interim, early = read_until(sock, b"", b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100"), interim
    assert early == b""
    server.proc.send_signal(signal.SIGTERM)
    eventually(lambda: connection_refused(server), 4, "new connections to be refused")
    assert server.proc.poll() is None, "the open request should hold the server"
    sock.sendall(body)
    reply = read_response(sock)
    sock.close()
    assert reply.startswith("HTTP/1.1 503"), reply
    assert "shutting down" in reply
    assert server.proc.wait(15) == 0
    assert server.leftovers() == {"processes": [], "job_dirs": [], "cgroups": []}


def test_sweeper_removes_expired_artifacts(make_server: MakeServer) -> None:
    # A TTL of ~1 s and a sweep every 0.3 s.
    server = make_server(artifactTTLDays=1 / 86400, cleanupIntervalMins=0.005, cacheEnabled=False)
    body = server.compile(HELLO_C).json()
    artifact = server.artifacts_dir / body["id"]
    assert artifact.is_dir()
    eventually(lambda: not artifact.exists(), 10, "the sweeper to remove the artifact")
    with server.client() as client:
        assert client.get(body["js"]).status_code == 404


def _make_artifact(root: Path, name: str, age_seconds: float) -> Path:
    path = root / name
    path.mkdir()
    for file in ("app.js", "app.wasm"):
        (path / file).write_text(file)
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def test_sweep_keeps_fresh_and_removes_old_and_abandoned_staging(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    old = _make_artifact(tmp_path, "a" * 32, 3 * 86400)
    fresh = _make_artifact(tmp_path, "b" * 32, 60)
    abandoned = _make_artifact(tmp_path, ".staging-" + "c" * 32, 7200)
    in_progress = _make_artifact(tmp_path, ".staging-" + "d" * 32, 10)
    unrelated = _make_artifact(tmp_path, "not-an-artifact", 10 * 86400)
    removed = store.sweep_sync(ttl_seconds=86400)
    assert sorted(removed) == sorted([old.name, abandoned.name])
    assert fresh.exists()
    assert in_progress.exists()
    assert unrelated.exists()


async def test_sweeper_disabled_by_zero(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    old = _make_artifact(tmp_path, "a" * 32, 30 * 86400)
    with trio.fail_after(1):
        await run_sweeper(store, ttl_days=0, interval_mins=1)
        await run_sweeper(store, ttl_days=1, interval_mins=0)
    assert old.exists()


@pytest.mark.parametrize("planted", ["symlink", "fifo"])
async def test_publish_never_follows_what_the_compile_planted(tmp_path: Path, planted: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    store_root = tmp_path / "artifacts"
    store_root.mkdir()
    job = tmp_path / "job"
    job.mkdir()
    (job / "app.js").write_text("js")
    if planted == "symlink":
        (job / "app.wasm").symlink_to(secret)
    else:
        os.mkfifo(job / "app.wasm")
    with pytest.raises(UnsafeOutputError):
        await ArtifactStore(store_root).publish("e" * 32, job)
    assert list(store_root.iterdir()) == []


async def test_publish_is_all_or_nothing(tmp_path: Path) -> None:
    store_root = tmp_path / "artifacts"
    store_root.mkdir()
    store = ArtifactStore(store_root)
    job = tmp_path / "job"
    job.mkdir()
    (job / "app.js").write_text("js")
    with pytest.raises(FileNotFoundError):
        await store.publish("e" * 32, job)  # app.wasm missing
    assert list(store_root.iterdir()) == []
    (job / "app.wasm").write_bytes(b"\0asm")
    await store.publish("e" * 32, job)
    assert sorted(p.name for p in (store_root / ("e" * 32)).iterdir()) == ["app.js", "app.wasm"]
    assert [p.name for p in store_root.iterdir()] == ["e" * 32]


def test_kill_9_mid_compile_then_restart_cleans_everything(make_server: MakeServer) -> None:
    server = make_server()
    earlier = server.compile(HELLO_C).json()
    sock = open_compile(server, spin(), "cpp")
    wait_for_compiler(server)
    server.stop(signal.SIGKILL)
    sock.close()
    stale = server.leftovers()
    assert stale["job_dirs"], "SIGKILL leaves the job dir behind"
    assert stale["cgroups"], "and its cgroup"
    assert any("clang" in p for p in stale["processes"]), "and its compiler still runs"

    restarted = make_server(workdir=server.workdir)
    restarted.assert_clean(timeout=2.0)
    cleaned = next(
        e for e in restarted.log_events() if e["event"] == "cleaned up after an earlier run"
    )
    assert cleaned["job_dirs"] == stale["job_dirs"]
    assert len(cleaned["cgroups"]) == 1
    with restarted.client() as client:
        js = client.get(earlier["js"])
        wasm = client.get(earlier["wasm"])
    assert js.status_code == 200
    assert wasm.content[:4] == b"\0asm"
    assert restarted.compile(HELLO_C).status_code == 200
