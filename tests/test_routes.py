"""The routes in-process, with a stand-in compiler: routing and error mapping only (every
answer's status and body, for each refusal the service can raise). Whatever involves emcc,
nsjail or cgroups is tested with the real parts elsewhere. No root, no emcc: `nox -s unit`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers

from emcc_trio.api.app import ApiOptions, create_app
from emcc_trio.api.tokens import new_token, parse_tokens
from emcc_trio.compile.compiler import InternalJobError
from emcc_trio.compile.gate import Gate
from emcc_trio.compile.quota import ArtifactQuota
from emcc_trio.compile.service import Service
from emcc_trio.errors import ServiceError, all_errors
from emcc_trio.models import CompileRequest, CompileResult, Usage
from emcc_trio.storage.artifacts import ArtifactStore
from emcc_trio.storage.base import StoreUnavailableError
from emcc_trio.storage.cache import ResultCache
from emcc_trio.storage.local import LocalStore

pytestmark = pytest.mark.unit

OK_CODE = "int main(void) { return 0; }"


@attrs.define
class StandInCompiler:
    """Answers by what the source says: `error` a compile error, `memory` a cap kill,
    `internal` the service's own failure, `hang` never (until cancelled), `wait` once
    `release` is set; else a success whose artifact is published to the real store."""

    store: LocalStore
    root: Path
    started: trio.Event = attrs.field(factory=trio.Event)
    release: trio.Event = attrs.field(factory=trio.Event)  # lets every `wait` compile end
    cancelled: int = 0
    runs: int = 0
    last: CompileRequest | None = None

    def command(self, request: CompileRequest) -> list[str]:
        return ["emcc", *request.sources, *request.args, "-o", "app.js"]

    async def fill_glue(self, material: bytes) -> bytes | None:
        return None

    async def fill_acorn(self, material: bytes) -> bytes | None:
        return None

    async def fill_pch(self, material: bytes, digest: str, header: str) -> bytes | None:
        return None

    async def compile(self, request: CompileRequest, job_id: str, client: str) -> CompileResult:
        self.runs += 1
        self.last = request
        self.started.set()
        if "hang" in request.code:
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled += 1
        if "wait" in request.code:
            await self.release.wait()
        if "internal" in request.code:
            raise InternalJobError("the sandbox failed to start: stand-in")
        if "error" in request.code:
            output = f"{request.source_name}:1:5: error: expected ';'\n"
            return _result(job_id, False, output)
        if "memory" in request.code:
            return attrs.evolve(_result(job_id, False, ""), limit="memory")
        job_dir = self.root / job_id
        job_dir.mkdir(parents=True)
        (job_dir / "app.js").write_text("// js")
        (job_dir / "app.wasm").write_bytes(b"\0asm")
        await self.store.publish(job_id, job_dir)
        return _result(job_id, True, "", ("app.js", "app.wasm"))


def _result(job_id: str, ok: bool, output: str, files: tuple[str, ...] = ()) -> CompileResult:
    return CompileResult(job_id, ok, output, False, None, Usage(), 0.25, files)


@attrs.define
class Harness:
    app: QuartTrio
    service: Service
    compiler: StandInCompiler
    store: LocalStore

    async def post_from(self, address: str, body: Any) -> tuple[int, Headers, Any]:
        """A JSON POST /compile from a client at `address`."""
        return await self.post(body, scope_base={"client": (address, 40000)})

    async def post(self, body: Any, **kwargs: Any) -> tuple[int, Headers, Any]:
        """Status, headers (case-insensitive) and JSON body of a POST /compile."""
        client = self.app.test_client()
        if isinstance(body, bytes | str):
            response = await client.post("/compile", data=body, **kwargs)
        else:
            response = await client.post("/compile", json=body, **kwargs)
        return response.status_code, response.headers, json.loads(await response.get_data())


@asynccontextmanager
async def harness(
    tmp_path: Path,
    *,
    queue_max: int = 4,
    max_jobs_per_client: int = 8,
    store_class: type[LocalStore] = LocalStore,
    quota_bytes: int = 0,
    cache_scope: str = "global",
    **options: Any,
) -> AsyncIterator[Harness]:
    for name in ("artifacts", "cache", "jobs"):
        (tmp_path / name).mkdir()
    store = store_class(
        ArtifactStore(tmp_path / "artifacts"),
        ResultCache(tmp_path / "cache", tmp_path / "artifacts", 1 << 20),
        artifact_ttl_days=3,
        cleanup_interval_mins=30,
    )
    compiler = StandInCompiler(store, tmp_path / "jobs")
    gate = Gate(
        estimate_bytes=1,
        max_concurrent=2,
        queue_max=queue_max,
        queue_timeout_seconds=5,
        budget=None,
    )
    service = Service(
        driver=None,
        compiler=compiler,
        gate=gate,
        store=store,
        cache_enabled=True,
        emscripten_version="stand-in",
        max_jobs_per_client=max_jobs_per_client,
        quota=ArtifactQuota(store, quota_bytes, 3600) if quota_bytes else None,
        cache_scope=cache_scope,
    )
    app = create_app(service, ApiOptions(max_body_bytes=4096, **options))
    async with service.running():
        yield Harness(app, service, compiler, store)


async def test_a_success_names_its_artifact_and_a_second_one_is_a_cache_hit(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path) as h:
        status, _, body = await h.post({"code": OK_CODE})
        assert status == 200
        job = body["id"]
        assert body["js"] == f"/artifacts/{job}/app.js"
        assert body["wasm"] == f"/artifacts/{job}/app.wasm"
        assert (body["ok"], body["cached"], body["usage"]["durationSeconds"]) == (True, False, 0.25)
        again = await h.post({"code": OK_CODE})
        assert (again[0], again[2]["id"], again[2]["cached"]) == (200, job, True)
        assert h.compiler.runs == 1
        artifact = await h.app.test_client().get(body["wasm"])
        assert artifact.status_code == 200
        assert await artifact.get_data() == b"\0asm"
        assert artifact.headers["Content-Type"] == "application/wasm"
        assert artifact.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_a_compile_error_is_a_400_with_its_diagnostics(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        status, _, body = await h.post({"code": "int main(void) { error }"})
        assert status == 400
        assert body["ok"] is False
        assert "main.c:1:5: error: expected ';'" in body["error"]
        [found] = body["diagnostics"]
        assert (found["file"], found["line"], found["severity"]) == ("main.c", 1, "error")


async def test_a_cap_kill_is_a_422_naming_the_cap(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        status, _, body = await h.post({"code": "memory"})
        assert (status, body["limit"]) == (422, "memory")
        assert body["error"].startswith("the compile exceeded its memory cap (jobMemoryMaxMB)")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "the body is not valid JSON"),
        ({"code": 5}, '"code" must be a string'),
        ({"code": OK_CODE, "args": ["-o", "/etc/x"]}, "'-o'"),
        ({"code": OK_CODE, "extra": 1}, "unknown field(s): extra"),
        ([1, 2], "the body must be a JSON object"),
    ],
)
async def test_a_bad_request_is_a_400_that_names_the_fault(
    tmp_path: Path, body: Any, message: str
) -> None:
    async with harness(tmp_path) as h:
        headers = {"Content-Type": "application/json"}
        status, _, answer = await h.post(body, headers=headers)
        assert status == 400
        assert answer["ok"] is False
        assert message in answer["error"]
        assert h.compiler.runs == 0


async def test_http_refusals_are_json(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        client = h.app.test_client()
        big = await client.post("/compile", json={"code": "x" * 5000})
        assert big.status_code == 413
        assert json.loads(await big.get_data())["error"] == (
            "request body too large (maxBodyBytes is 4096)"
        )
        assert big.headers["Connection"] == "close"
        wrong = await client.get("/compile")
        assert wrong.status_code == 405
        assert wrong.headers["Allow"] == "OPTIONS, POST"
        assert json.loads(await wrong.get_data())["error"] == (
            "method GET not allowed for /compile"
        )
        missing = await client.get("/nowhere")
        assert (missing.status_code, json.loads(await missing.get_data())["error"]) == (
            404,
            "not found",
        )
        gone = await client.get(f"/artifacts/{'0' * 32}/app.js")
        assert (gone.status_code, json.loads(await gone.get_data())["error"]) == (
            404,
            "no such artifact",
        )


async def test_a_client_over_its_job_bound_gets_a_429(tmp_path: Path) -> None:
    async with harness(tmp_path, max_jobs_per_client=1) as h, trio.open_nursery() as nursery:
        nursery.start_soon(h.post, {"code": "hang"})
        await h.compiler.started.wait()
        status, headers, body = await h.post({"code": OK_CODE})
        assert status == 429
        assert headers["Retry-After"] == "5"
        assert "already has 1 compiles running or waiting (maxJobsPerClient)" in body["error"]
        nursery.cancel_scope.cancel()


async def test_a_client_that_used_its_artifact_quota_gets_a_429_but_still_its_hits(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, quota_bytes=1000) as h:
        assert (await h.post({"code": OK_CODE}))[0] == 200
        # What the compiler charges for artifacts this client (Quart's test client has the
        # address "<local>") stored meanwhile.
        assert (await h.store.charge_quota("<local>", 1000, 1000, 3600)).allowed
        status, headers, body = await h.post({"code": OK_CODE + " // another"})
        assert status == 429
        assert 3590 < int(headers["Retry-After"]) <= 3600
        assert body["error"].startswith(
            "this client has stored 1000 bytes of artifacts in this window: artifactQuotaMB "
            "allows 0.000953674 MB of artifacts per client every 60 minutes; try again in "
        )
        assert h.compiler.runs == 1  # refused before it ran
        # A cache hit stores nothing: still answered.
        hit = await h.post({"code": OK_CODE})
        assert (hit[0], hit[2]["cached"]) == (200, True)
        rejected = h.service.metrics.registry.get_sample_value(
            "emcc_trio_client_rejections_total", {"reason": "artifact_quota"}
        )
        assert rejected == 1


@pytest.mark.parametrize(("scope", "shared"), [("global", True), ("client", False)])
async def test_identical_compiles_in_flight_are_shared_only_within_the_cache_scope(
    tmp_path: Path, scope: str, shared: bool
) -> None:
    async with harness(tmp_path, cache_scope=scope) as h:
        answers: dict[str, Any] = {}

        async def post(address: str) -> None:
            answers[address] = (await h.post_from(address, {"code": OK_CODE + " // wait"}))[2]

        async with trio.open_nursery() as nursery:
            for address in ("10.0.0.1", "10.0.0.2"):
                nursery.start_soon(post, address)
            await h.compiler.started.wait()
            await trio.testing.wait_all_tasks_blocked()  # both are waiting now
            h.compiler.release.set()
        ids = {body["id"] for body in answers.values()}
        assert h.compiler.runs == (1 if shared else 2)
        assert len(ids) == (1 if shared else 2)
        # And the cache: a repeat is a hit for the client that compiled it, in either scope.
        again = (await h.post_from("10.0.0.2", {"code": OK_CODE + " // wait"}))[2]
        assert (again["cached"], again["id"]) == (True, answers["10.0.0.2"]["id"])


async def test_a_hang_up_cancels_the_compile(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.post, {"code": "hang"})
            await h.compiler.started.wait()
            nursery.cancel_scope.cancel()
        assert h.compiler.cancelled == 1
        cancelled = h.service.metrics.registry.get_sample_value(
            "emcc_trio_cancellations_total", {"cause": "client"}
        )
        assert cancelled == 1
        status, _, _ = await h.post({"code": OK_CODE})
        assert status == 200


async def test_a_full_queue_is_a_503_with_retry_after(tmp_path: Path) -> None:
    async with harness(tmp_path, queue_max=0) as h:
        status, headers, body = await h.post({"code": OK_CODE})
        assert (status, headers["Retry-After"]) == (503, "5")
        assert body["error"] == "too many compiles are waiting; try again later"


async def test_shutdown_refuses_new_compiles_and_cancels_running_ones(tmp_path: Path) -> None:
    async with harness(tmp_path) as h, trio.open_nursery() as nursery:
        answers: list[tuple[int, Headers, Any]] = []

        async def post_hang() -> None:
            answers.append(await h.post({"code": "hang"}))

        nursery.start_soon(post_hang)
        await h.compiler.started.wait()
        h.service.shutdown()
        status, _, body = await h.post({"code": OK_CODE})
        assert (status, body["error"]) == (503, "the server is shutting down")
    [(status, _, body)] = answers
    assert (status, body["error"]) == (503, "the server is shutting down")
    assert h.compiler.cancelled == 1


async def test_the_services_own_failure_is_a_500_naming_the_job(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        status, _, body = await h.post({"code": "internal"})
        assert status == 500
        assert body["error"] == "internal error: the sandbox failed to start: stand-in"
        assert len(body["id"]) == 32


async def test_an_unreachable_store_is_a_503(tmp_path: Path) -> None:
    class UnreachableStore(LocalStore):
        async def cache_get(self, key: str) -> CompileResult | None:
            raise StoreUnavailableError("connection refused")

    async with harness(tmp_path, store_class=UnreachableStore) as h:
        status, headers, body = await h.post({"code": OK_CODE})
        assert (status, headers["Retry-After"]) == (503, "5")
        assert body["error"] == "the artifact store is unreachable; try again later"


async def test_tokens_on_a_request_without_one_is_a_401(tmp_path: Path) -> None:
    token, line = new_token("course")
    async with harness(tmp_path, tokens=parse_tokens(line)) as h:
        status, headers, body = await h.post({"code": OK_CODE})
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="emcc-trio"'
        assert body["error"] == (
            "a valid API token is required: send Authorization: Bearer <token>"
        )
        wrong = await h.post({"code": OK_CODE}, headers={"Authorization": "Bearer et_nope"})
        assert (wrong[0], wrong[2]["error"]) == (401, "the API token is not valid")
        good = await h.post({"code": OK_CODE}, headers={"Authorization": f"Bearer {token}"})
        assert good[0] == 200


def test_every_refusal_has_a_status_and_a_message() -> None:
    """The error reference lists these: each must say what it answers."""
    for cls in all_errors():
        assert 400 <= cls.status <= 599, cls
        assert cls.__doc__, cls
        error = cls("detail") if cls is not ServiceError else cls()
        assert error.answer(), cls
        assert cls.retry == (cls.status in (429, 503)), cls


async def test_projects_held_past_the_budget_are_a_503(tmp_path: Path) -> None:
    """The sources and files of requests in flight are counted (maxQueuedProjectMB): one that
    would take the total past it waits for nothing and is told to come back."""
    async with harness(tmp_path) as h, trio.open_nursery() as nursery:
        h.service.max_held_bytes = 3000
        nursery.start_soon(h.post, {"code": "hang", "files": {"big.h": "x" * 2000}})
        await h.compiler.started.wait()
        status, headers, body = await h.post({"code": OK_CODE, "files": {"b.h": "y" * 1500}})
        assert (status, headers["Retry-After"]) == (503, "5")
        assert "maxQueuedProjectMB" in body["error"]
        small = await h.post({"code": OK_CODE})
        assert small[0] == 200
        nursery.cancel_scope.cancel()


async def test_include_dirs_and_sources_reach_the_compiler(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        files = {"inc/x.h": "#define X 1\n", "src/a.c": "int a;", "src/lua.c": "int main;"}
        sources = ["src/*.c", "!src/lua.c"]
        body = {"code": OK_CODE, "files": files, "args": ["-Iinc"], "sources": sources}
        status, _, _ = await h.post(body)
        assert status == 200
        assert h.compiler.last is not None
        assert h.compiler.last.sources == ("main.c", "src/a.c")
        assert h.compiler.last.args == ("-Iinc",)
        refused = await h.post({**body, "args": ["-I../etc"]})
        assert refused[0] == 400
        assert "include paths must stay inside the job dir" in refused[2]["error"]
        nothing = await h.post({**body, "sources": ["lib/*.c"]})
        assert (nothing[0], nothing[2]["error"]) == (
            400,
            "sources pattern 'lib/*.c' matches no file",
        )
