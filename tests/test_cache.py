"""The result cache and single-flight compiles, against a real server."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_lifecycle import open_compile, wait_for_compiler

from emcc_trio.compile.keys import cache_key
from emcc_trio.storage.cache import ResultCache
from emcc_trio.testing.harness import MakeServer, Server, eventually
from emcc_trio.testing.programs import HELLO_C, FifoGate, program, run_artifact, spin
from emcc_trio.testing.results import stored_result


def metric(server: Server, name: str) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def compiles_run(server: Server) -> float:
    return metric(server, "emcc_trio_compile_duration_seconds_count")


def read_reply(sock: socket.socket) -> dict[str, object]:
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    body = reply.read()
    assert reply.status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def test_identical_request_is_a_cache_hit_with_the_same_artifacts(
    server: Server, tmp_path: Path
) -> None:
    first = server.compile(HELLO_C).json()
    second_response = server.compile(HELLO_C)
    second = second_response.json()
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["id"] == first["id"]
    assert second["usage"] == first["usage"]
    assert run_artifact(server, second_response, tmp_path) == "hello from C\n"
    assert compiles_run(server) == 1
    assert metric(server, 'emcc_trio_cache_requests_total{result="hit"}') == 1


def compile_from(server: Server, code: str, source: str) -> dict[str, object]:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.url, timeout=180, transport=transport) as client:
        response = client.post("/compile", json={"code": code})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_with_cache_scope_client_a_hit_is_only_the_clients_own(make_server: MakeServer) -> None:
    """The issue's probe: a program with a random PIN in it, compiled by one client, is no hit
    for another (who would learn it was compiled, and its artifact id), only for the first."""
    server = make_server(cacheScope="client")
    code = HELLO_C + f"// PIN {os.urandom(4).hex()}\n"
    first = compile_from(server, code, "127.0.0.1")
    other = compile_from(server, code, "127.0.0.2")
    repeat = compile_from(server, code, "127.0.0.1")
    assert (first["cached"], other["cached"], repeat["cached"]) == (False, False, True)
    assert other["id"] != first["id"]
    assert repeat["id"] == first["id"]
    assert compile_from(server, code, "127.0.0.2")["id"] == other["id"]
    assert compiles_run(server) == 2


def test_different_args_or_type_miss(server: Server) -> None:
    ids = {
        server.compile(HELLO_C).json()["id"],
        server.compile(HELLO_C, args=["-O1"]).json()["id"],
        server.compile(HELLO_C, kind="cpp").json()["id"],
    }
    assert len(ids) == 3
    assert compiles_run(server) == 3


def test_compile_errors_are_cached_cap_kills_never(make_server: MakeServer) -> None:
    server = make_server(maxOutputBytes=4096)
    bad = "int main(void) { return nope; }\n"
    errors = [server.compile(bad) for _ in range(2)]
    assert [e.status_code for e in errors] == [400, 400]
    assert [e.json()["cached"] for e in errors] == [False, True]
    assert errors[0].json()["error"] == errors[1].json()["error"]
    floods = [server.compile(program("flood.c")) for _ in range(2)]
    assert [f.json()["limit"] for f in floods] == ["output", "output"]
    assert compiles_run(server) == 3  # one error, two floods


def test_cache_survives_a_restart(make_server: MakeServer) -> None:
    server = make_server()
    first = server.compile(HELLO_C).json()
    assert server.stop() == 0
    restarted = make_server(workdir=server.workdir)
    again = restarted.compile(HELLO_C).json()
    assert again["cached"] is True
    assert again["id"] == first["id"]
    assert compiles_run(restarted) == 0


def test_cache_can_be_disabled(make_server: MakeServer) -> None:
    server = make_server(cacheEnabled=False)
    ids = {server.compile(HELLO_C).json()["id"] for _ in range(2)}
    assert len(ids) == 2
    assert "emcc_trio_cache_bytes" not in httpx.get(server.url + "/metrics").text


def two_clients_on_one_compile(
    server: Server, code: str, kind: str = "c"
) -> tuple[socket.socket, socket.socket]:
    """Two raw requests for `code`: the first compiling, the second joined to it."""
    first = open_compile(server, code, kind)
    wait_for_compiler(server)
    second = open_compile(server, code, kind)
    eventually(
        lambda: metric(server, 'emcc_trio_cache_requests_total{result="shared"}') == 1,
        10,
        "the second request to join",
    )
    return first, second


def test_identical_requests_in_flight_share_one_compile(server: Server, tmp_path: Path) -> None:
    gate = FifoGate(tmp_path / "gate.h")
    first, second = two_clients_on_one_compile(server, gate.code)
    gate.open()
    first_reply, second_reply = read_reply(first), read_reply(second)
    first.close()
    second.close()
    assert second_reply["ok"] is True
    assert first_reply["id"] == second_reply["id"]
    assert compiles_run(server) == 1
    assert metric(server, 'emcc_trio_cache_requests_total{result="miss"}') == 1
    assert metric(server, 'emcc_trio_cache_requests_total{result="shared"}') == 1


def test_first_client_leaving_does_not_cancel_the_shared_compile(
    server: Server, tmp_path: Path
) -> None:
    gate = FifoGate(tmp_path / "gate.h")
    first, second = two_clients_on_one_compile(server, gate.code)
    first.close()
    eventually(
        lambda: metric(server, 'emcc_trio_cancellations_total{cause="client"}') == 1,
        10,
        "the first request's hang-up to be counted",
    )
    assert wait_for_compiler(server), "the shared compile goes on"
    gate.open()
    reply = read_reply(second)
    second.close()
    assert reply["ok"] is True
    assert run_artifact(server, httpx.Response(200, json=reply), tmp_path) == "gated 42\n"
    server.assert_clean()


def test_compile_shared_by_clients_who_all_leave_is_cancelled(server: Server) -> None:
    code = spin()
    first, second = two_clients_on_one_compile(server, code, "cpp")
    first.close()
    second.close()
    server.assert_clean(timeout=2.0)
    assert metric(server, 'emcc_trio_cancellations_total{cause="client"}') == 2
    assert compiles_run(server) == 0  # cancelled, so never observed as a finished compile
    assert not list(server.artifacts_dir.iterdir())


def _entry(cache: ResultCache, artifacts: Path, key: str, size: int) -> None:
    job_id = key[:32]
    (artifacts / job_id).mkdir()
    (artifacts / job_id / "app.js").write_bytes(b"j" * size)
    (artifacts / job_id / "app.wasm").write_bytes(b"w")
    cache.put(key, stored_result(job_id))


@pytest.mark.unit
def test_lru_eviction_keeps_the_recently_used(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    cache = ResultCache(tmp_path / "cache", artifacts, max_bytes=2500)
    cache.load()
    keys = [cache_key("v", ["emcc", str(i)], "code") for i in range(3)]
    _entry(cache, artifacts, keys[0], 1000)
    _entry(cache, artifacts, keys[1], 1000)
    assert cache.get(keys[0]) is not None  # now the most recently used
    _entry(cache, artifacts, keys[2], 1000)
    assert cache.get(keys[1]) is None  # the least recently used went
    assert cache.get(keys[0]) is not None
    assert cache.get(keys[2]) is not None
    assert cache.total_bytes <= 2500
    # Evicting the entry leaves its artifact to the TTL sweeper: its URL was handed out.
    assert (artifacts / keys[1][:32] / "app.js").exists()
    assert cache.live_ids() == {keys[0][:32], keys[2][:32]}


@pytest.mark.unit
def test_a_single_file_entry_survives_a_restart_and_keeps_its_file_list(tmp_path: Path) -> None:
    """A -sSINGLE_FILE artifact has no app.wasm: its entry is whole without one, across a
    restart too; a forged file list (names become paths) drops the entry."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    cache = ResultCache(tmp_path / "cache", artifacts, max_bytes=1 << 20)
    cache.load()
    key, forged = cache_key("v", ["emcc"], "one"), cache_key("v", ["emcc"], "forged")
    (artifacts / key[:32]).mkdir()
    (artifacts / key[:32] / "app.js").write_bytes(b"js with the wasm inside")
    cache.put(key, stored_result(key[:32], files=("app.js",)))
    entry = cache.get(key)
    assert entry is not None
    assert entry.files == ("app.js",)
    body = json.loads((tmp_path / "cache" / f"{key}.json").read_text())
    # A file that exists outside the artifact: only the name check refuses it.
    body["files"] = [f"../../cache/{key}.json"]
    (tmp_path / "cache" / f"{forged}.json").write_text(json.dumps(body))
    restarted = ResultCache(tmp_path / "cache", artifacts, max_bytes=1 << 20)
    restarted.load()
    reloaded = restarted.get(key)
    assert reloaded is not None
    assert (reloaded.files, restarted.entry_bytes(key)) == (("app.js",), cache.entry_bytes(key))
    assert restarted.get(forged) is None


@pytest.mark.unit
def test_entries_without_artifacts_are_dropped_at_load(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    cache = ResultCache(tmp_path / "cache", artifacts, max_bytes=1 << 20)
    cache.load()
    key = cache_key("v", ["emcc"], "x")
    _entry(cache, artifacts, key, 10)
    (tmp_path / "cache" / ".torn.123.tmp").write_text("{")
    for name in ("app.js", "app.wasm"):
        (artifacts / key[:32] / name).unlink()
    reloaded = ResultCache(tmp_path / "cache", artifacts, max_bytes=1 << 20)
    reloaded.load()
    assert reloaded.get(key) is None
    assert list((tmp_path / "cache").iterdir()) == []


def test_sweeper_keeps_what_a_live_entry_points_at(make_server: MakeServer) -> None:
    server = make_server(artifactTTLDays=1 / 86400, cleanupIntervalMins=0.005)
    kept = server.compile(HELLO_C).json()
    # An artifact no entry points at: the same program compiled with the cache off earlier.
    orphan = server.artifacts_dir / ("0" * 32)
    orphan.mkdir()
    for name in ("app.js", "app.wasm"):
        (orphan / name).write_text(name)
    eventually(lambda: not orphan.exists(), 10, "the sweeper to remove the orphan")
    assert (server.artifacts_dir / kept["id"] / "app.wasm").exists()
    assert server.compile(HELLO_C).json()["cached"] is True


@pytest.mark.unit
def test_a_hit_refreshes_the_entry_and_its_artifact_for_the_next_start(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    cache = ResultCache(tmp_path / "cache", artifacts, max_bytes=1 << 20)
    cache.load()
    key = cache_key("v", ["emcc"], "x")
    _entry(cache, artifacts, key, 10)
    stale = [tmp_path / "cache" / f"{key}.json", artifacts / key[:32]]
    for path in stale:
        os.utime(path, ns=(0, 0))
    assert cache.get(key) is not None
    assert all(path.stat().st_mtime_ns > 0 for path in stale)


@pytest.mark.unit
def test_a_restart_keeps_the_use_order_by_file_time(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    cache = ResultCache(tmp_path / "cache", artifacts, max_bytes=3500)
    cache.load()
    keys = [cache_key("v", ["emcc", str(i)], "code") for i in range(5)]
    for key in keys[:3]:
        _entry(cache, artifacts, key, 1000)
    # Used last to first, a second apart.
    for second, key in enumerate(reversed(keys[:3]), start=1):
        os.utime(tmp_path / "cache" / f"{key}.json", (second, second))
    restarted = ResultCache(tmp_path / "cache", artifacts, max_bytes=3500)
    restarted.load()
    assert restarted.total_bytes == cache.total_bytes
    _entry(restarted, artifacts, keys[3], 1000)
    assert restarted.get(keys[2]) is None, "the least recently used (oldest file) went first"
    _entry(restarted, artifacts, keys[4], 1000)
    assert restarted.get(keys[1]) is None
    assert restarted.get(keys[0]) is not None


CACHE_MAX = 2000
KEYS = [cache_key("v", ["emcc", str(i)], "code") for i in range(4)]


class CacheBookkeeping(RuleBasedStateMachine):
    """ResultCache against a plain model: a dict of key -> (size, artifact id or None), least
    recently used first, whose sizes are measured on disk when an entry is written."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="emcc-trio-cache-"))
        self.artifacts = self.dir / "artifacts"
        self.artifacts.mkdir()
        self.cache = self._open()
        self.model: dict[str, tuple[int, str | None]] = {}
        self.serial = 0

    def teardown(self) -> None:
        shutil.rmtree(self.dir)

    def _open(self) -> ResultCache:
        cache = ResultCache(self.dir / "cache", self.artifacts, max_bytes=CACHE_MAX)
        cache.load()
        return cache

    def _size_on_disk(self, key: str, job_id: str | None) -> int:
        size = (self.dir / "cache" / f"{key}.json").stat().st_size
        if job_id is not None:
            size += sum(f.stat().st_size for f in (self.artifacts / job_id).iterdir())
        return size

    @rule(
        k=st.sampled_from(KEYS),
        ok=st.booleans(),
        js_bytes=st.integers(300, 1000),
        output=st.text(max_size=40),
    )
    def put(self, k: str, ok: bool, js_bytes: int, output: str) -> None:
        self.serial += 1
        job_id = f"{self.serial:032x}"
        if ok:
            (self.artifacts / job_id).mkdir()
            (self.artifacts / job_id / "app.js").write_bytes(b"j" * js_bytes)
            (self.artifacts / job_id / "app.wasm").write_bytes(b"w")
        self.cache.put(k, stored_result(job_id, ok, output, cpu_seconds=0.5))
        self.model.pop(k, None)
        self.model[k] = (self._size_on_disk(k, job_id if ok else None), job_id if ok else None)
        while sum(size for size, _ in self.model.values()) > CACHE_MAX and len(self.model) > 1:
            del self.model[next(iter(self.model))]

    @rule(k=st.sampled_from(KEYS))
    def get(self, k: str) -> None:
        entry = self.cache.get(k)
        if k not in self.model:
            assert entry is None
            return
        _, job_id = self.model[k]
        if job_id is not None and not (self.artifacts / job_id).exists():
            assert entry is None
            del self.model[k]
            return
        assert entry is not None
        assert entry.job_id == job_id or not entry.ok
        self.model[k] = self.model.pop(k)

    @precondition(lambda self: any(job_id for _, job_id in self.model.values()))
    @rule(data=st.data())
    def lose_an_artifact(self, data: st.DataObject) -> None:
        ids = [job_id for _, job_id in self.model.values() if job_id is not None]
        shutil.rmtree(self.artifacts / data.draw(st.sampled_from(ids)), ignore_errors=True)

    @rule()
    def restart(self) -> None:
        # Time passes between uses: give the files distinct times in use order.
        for second, key in enumerate(self.model, start=1):
            os.utime(self.dir / "cache" / f"{key}.json", (second, second))
        self.cache = self._open()
        lost = [k for k, (_, j) in self.model.items() if j and not (self.artifacts / j).exists()]
        for key in lost:
            del self.model[key]

    @invariant()
    def bookkeeping_matches(self) -> None:
        assert self.cache.total_bytes == sum(size for size, _ in self.model.values())
        on_disk = {p.stem for p in (self.dir / "cache").iterdir()}
        assert on_disk == set(self.model)
        assert self.cache.live_ids() == {j for _, j in self.model.values() if j is not None}


CacheBookkeeping.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None
)
TestCacheBookkeeping = CacheBookkeeping.TestCase
