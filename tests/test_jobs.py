"""Jobs: POST /jobs answers 202 at once; the job runs on without its submitter, its events
stream over SSE (followed here by a real httpx client), GET answers its state and result,
DELETE cancels it, and it is gone after jobTTLSeconds. With Redis, any replica answers for
any job. Compiles that must stay in flight wait on a FIFO (FifoGate): no timing here."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emcc_trio.api.tokens import new_token
from emcc_trio.testing.harness import MakeServer, Server
from emcc_trio.testing.programs import HELLO_C, FifoGate, program
from emcc_trio.testing.redis import RedisServer

WARNS = '#include <stdio.h>\n#warning careful\nint main(void) { puts("warned"); return 0; }\n'


def submit(server: Server, body: dict[str, Any], token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with server.client() as client:
        response = client.post("/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert response.headers["Location"] == answer["url"] == f"/jobs/{answer['id']}"
    assert answer["state"] == "queued"
    job_id: str = answer["id"]
    return job_id


def events(server: Server, job_id: str, until: str | None = None) -> Iterator[dict[str, Any]]:
    """The job's SSE events as {"id", "event", "data"}, read with httpx as they come; the
    stream ends after the result (or, with `until`, the caller stops at that state)."""
    with server.client() as client, client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        for line in stream.iter_lines():
            if not line:
                if event:
                    yield event
                    if until is not None and event["data"].get("state") == until:
                        return
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = json.loads(value) if name == "data" else value


def result_of(server: Server, job_id: str) -> dict[str, Any]:
    *_, last = events(server, job_id)
    assert last["event"] == "result", last
    data: dict[str, Any] = last["data"]
    return data


def state(server: Server, job_id: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with server.client() as client:
        return client.get(f"/jobs/{job_id}", headers=headers)


@pytest.fixture
def jailed(make_server: MakeServer) -> Iterator[Server]:
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-jobs-"))
    workdir.chmod(0o711)
    try:
        yield make_server(workdir=workdir / "server", nsjailEnabled=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_compile_job_streams_its_states_and_diagnostics_then_the_sync_answer(
    server: Server,
) -> None:
    job_id = submit(server, {"code": WARNS})
    seen = list(events(server, job_id))
    names = [(e["event"], e["data"].get("state")) for e in seen]
    assert names[0] == ("state", "queued")
    assert names[1] == ("state", "running")
    assert names[-1] == ("result", "done")
    warning = next(e["data"] for e in seen if e["event"] == "diagnostic")
    assert (warning["file"], warning["line"], warning["severity"]) == ("main.c", 2, "warning")
    assert any("careful" in e["data"]["text"] for e in seen if e["event"] == "output")
    assert [int(e["id"]) for e in seen] == sorted(int(e["id"]) for e in seen)
    result = seen[-1]["data"]
    synchronous = server.compile(WARNS).json()  # the cached compile the job made
    assert result["status"] == 200
    assert {**result["body"], "cached": True} == synchronous
    shown = state(server, job_id).json()
    assert (shown["state"], shown["kind"], shown["status"]) == ("done", "compile", 200)
    assert shown["result"] == result["body"]
    server.assert_clean()


def test_a_failed_compile_is_a_failed_job_with_the_400_body(server: Server) -> None:
    job_id = submit(server, {"code": "int main(void) { nope }"})
    result = result_of(server, job_id)
    assert (result["state"], result["status"]) == ("failed", 400)
    with server.client() as client:
        synchronous = client.post("/compile", json={"code": "int main(void) { nope }"}).json()
    assert {**result["body"], "cached": True} == synchronous


def test_a_run_job_answers_what_post_run_answers(jailed: Server) -> None:
    body = {"kind": "run", "code": program("run_modes.c"), "argv": ["echo", "5"], "stdin": "in"}
    result = result_of(jailed, submit(jailed, body))
    with jailed.client() as client:
        synchronous = client.post("/run", json={k: v for k, v in body.items() if k != "kind"})
    assert (result["state"], result["status"]) == ("done", 200)
    ran, again = result["body"]["run"], synchronous.json()["run"]
    assert ran["stdout"] == again["stdout"] == "argv[0]=./this.program\nargv[1]=echo\nargv[2]=5\nin"
    assert ran["exitCode"] == again["exitCode"] == 5
    jailed.assert_clean()


def test_delete_cancels_a_compile_mid_flight_and_leaves_nothing(
    server: Server, tmp_path: Path
) -> None:
    gate = FifoGate(tmp_path / "gate.h")
    job_id = submit(server, {"code": gate.code})
    *_, running = events(server, job_id, until="running")
    assert running["data"]["state"] == "running"
    with server.client() as client:
        cancelled = client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200
    assert (cancelled.json()["state"], cancelled.json()["status"]) == ("cancelled", 409)
    server.assert_clean()
    assert state(server, job_id).json()["state"] == "cancelled"
    assert result_of(server, job_id)["state"] == "cancelled"


def test_a_job_outlives_its_submitter_and_its_followers(server: Server, tmp_path: Path) -> None:
    gate = FifoGate(tmp_path / "gate.h")
    job_id = submit(server, {"code": gate.code})  # the submitting connection is closed
    *_, running = events(server, job_id, until="running")  # a follower that leaves
    assert running["data"]["state"] == "running"
    gate.open()
    result = result_of(server, job_id)
    assert (result["state"], result["body"]["ok"]) == ("done", True)


def test_a_job_past_its_ttl_is_gone(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server(jobTTLSeconds=2)
    gate = FifoGate(tmp_path / "gate.h")
    job_id = submit(server, {"code": gate.code})
    seen = list(events(server, job_id))  # ends when the job's log expires, without a result
    assert [e["event"] for e in seen] == ["state", "state"]
    gone = state(server, job_id)
    assert gone.status_code == 404
    assert "no such job" in gone.json()["error"]
    server.assert_clean()  # the expired compile was cancelled: nothing left


def test_jobs_count_against_the_per_client_limit(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server(maxJobsPerClient=1)
    gate = FifoGate(tmp_path / "gate.h")
    first = submit(server, {"code": gate.code})
    with server.client() as client:
        refused = client.post("/jobs", json={"code": HELLO_C})
        also_refused = client.post("/compile", json={"code": HELLO_C})
    assert refused.status_code == also_refused.status_code == 429
    assert "maxJobsPerClient" in refused.json()["error"]
    gate.open()
    assert result_of(server, first)["state"] == "done"
    assert submit(server, {"code": HELLO_C})


def test_with_tokens_a_job_is_its_tokens_alone(make_server: MakeServer, tmp_path: Path) -> None:
    alice, alice_line = new_token("alice")
    bob, bob_line = new_token("bob")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{alice_line}\n{bob_line}\n")
    server = make_server(apiTokensFile=str(tokens))
    job_id = submit(server, {"code": HELLO_C}, token=alice)
    with server.client() as client:
        anonymous = client.get(f"/jobs/{job_id}")
        as_bob = client.delete(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {bob}"})
    assert anonymous.status_code == 401
    assert as_bob.status_code == 404
    assert state(server, job_id, token=alice).json()["kind"] == "compile"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"code": HELLO_C, "kind": "bake"}, '"kind" must be "compile" or "run"'),
        ({"code": HELLO_C, "stdin": "x"}, 'only a run takes these (send "kind": "run")'),
        ({"code": HELLO_C, "kind": "run"}, "this server does not run programs"),
        ({"code": HELLO_C, "args": ["-Wl,--x"]}, "-Wl,--x"),
    ],
)
def test_bad_job_bodies_are_refused_before_a_job_exists(
    server: Server, body: dict[str, Any], message: str
) -> None:
    with server.client() as client:
        response = client.post("/jobs", json=body)
    assert response.status_code in (400, 501), response.text
    assert message in response.json()["error"]


def test_unknown_jobs_are_404s(server: Server) -> None:
    with server.client() as client:
        for method, path in (
            ("GET", "/jobs/" + "0" * 32),
            ("GET", "/jobs/not-an-id"),
            ("DELETE", "/jobs/" + "f" * 32),
            ("GET", "/jobs/" + "0" * 32 + "/events"),
        ):
            response = client.request(method, path)
            assert response.status_code == 404, (method, path)
            assert response.json()["ok"] is False


def test_any_replica_answers_for_and_cancels_any_job(
    make_server: MakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = make_server(redisUrl=redis_server.url)
    two = make_server(redisUrl=redis_server.url)
    job_id = submit(one, {"code": WARNS})
    result = result_of(two, job_id)  # followed on the other replica
    assert (result["state"], result["body"]["ok"]) == ("done", True)
    assert state(two, job_id).json()["result"] == result["body"]

    gate = FifoGate(tmp_path / "gate.h")
    gated = submit(one, {"code": gate.code})
    *_, running = events(two, gated, until="running")
    assert running["data"]["state"] == "running"
    with two.client() as client:
        cancelled = client.delete(f"/jobs/{gated}")  # runs on one, deleted on two
    assert cancelled.json()["state"] == "cancelled"
    one.assert_clean()


def test_a_replica_shutting_down_fails_its_jobs_for_the_others_to_see(
    make_server: MakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = make_server(redisUrl=redis_server.url)
    two = make_server(redisUrl=redis_server.url)
    gate = FifoGate(tmp_path / "gate.h")
    job_id = submit(one, {"code": gate.code})
    *_, running = events(two, job_id, until="running")
    assert running["data"]["state"] == "running"
    assert one.stop() == 0
    result = result_of(two, job_id)
    assert (result["state"], result["status"]) == ("failed", 503)
    assert "shut" in result["body"]["error"]  # down, or "shutting down" (its compile)


def test_a_follower_does_not_hold_up_its_replicas_shutdown(
    make_server: MakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Following a job another replica runs: at SIGTERM the stream ends (a client resumes
    elsewhere) and the replica exits; the job runs on."""
    one = make_server(redisUrl=redis_server.url)
    two = make_server(redisUrl=redis_server.url)
    gate = FifoGate(tmp_path / "gate.h")
    job_id = submit(one, {"code": gate.code})
    *_, running = events(two, job_id, until="running")
    assert running["data"]["state"] == "running"
    seen: list[dict[str, Any]] = []
    following = threading.Event()

    def follow() -> None:
        for event in events(two, job_id):
            seen.append(event)
            following.set()  # the replayed events came: the stream is open

    follower = threading.Thread(target=follow)
    follower.start()
    assert following.wait(60)
    assert two.stop() == 0
    follower.join(30)
    assert not follower.is_alive()
    assert "result" not in [e["event"] for e in seen]
    gate.open()
    assert result_of(one, job_id)["state"] == "done"
