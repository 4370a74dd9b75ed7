"""`GET /openapi.json`: the spec names exactly the app's routes, and schemathesis, against a live
server with the real emcc, finds no 5xx and no answer that departs from the spec."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from emcc_trio.api import openapi
from emcc_trio.api.app import ApiOptions, create_app
from emcc_trio.compile.compiler import Compiler
from emcc_trio.compile.gate import Gate
from emcc_trio.compile.service import Service
from emcc_trio.models import ARTIFACT_FILES
from emcc_trio.storage.artifacts import ArtifactStore
from emcc_trio.storage.local import LocalStore
from emcc_trio.testing.harness import Server, server_config, start_server
from emcc_trio.testing.programs import HELLO_C

IGNORED_METHODS = {"HEAD", "OPTIONS"}
# Examples per operation; /compile runs the real emcc for every well-formed body.
MAX_EXAMPLES = {"POST /compile": 40}
DEFAULT_EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def app_routes(tmp_path: Path, enable_static_artifacts: bool = True) -> dict[str, set[str]]:
    """The app's routes as OpenAPI paths, with their methods."""
    service = Service(
        driver=None,
        compiler=cast(Compiler, None),  # routes only: nothing is compiled
        gate=Gate(
            estimate_bytes=1,
            max_concurrent=1,
            queue_max=1,
            queue_timeout_seconds=1.0,
            budget=None,
        ),
        store=LocalStore(ArtifactStore(tmp_path), None, 3, 30),
    )
    options = ApiOptions(max_body_bytes=1024, enable_static_artifacts=enable_static_artifacts)
    app = create_app(service, options)
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        methods = set(rule.methods or ()) - IGNORED_METHODS
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        if path == "/artifacts/{job_id}/{name}":
            # One route, one documented path per artifact file (each has its own media type).
            for name in ARTIFACT_FILES:
                routes[f"/artifacts/{{id}}/{name}"] = methods
        else:
            # The spec names a job's id `id`, as an artifact's (the code: `job_id`).
            routes.setdefault(path.replace("{job_id}", "{id}"), set()).update(methods)
    return routes


def spec_routes() -> dict[str, set[str]]:
    return {
        path: {method.upper() for method in item if method != "parameters"}
        for path, item in openapi.SPEC["paths"].items()
    }


def operations(schema: BaseSchema) -> dict[str, APIOperation[Any, Any, Any, Any]]:
    """The schema's operations by label ("POST /compile"); fails on an invalid one."""
    found = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        found[result.ok().label] = result.ok()
    return found


def test_spec_paths_are_the_apps_routes(tmp_path: Path) -> None:
    assert spec_routes() == app_routes(tmp_path)


def test_spec_names_every_endpoint_of_the_issue() -> None:
    assert set(openapi.SPEC["paths"]) >= {
        "/",
        "/openapi.json",
        "/healthz",
        "/compile",
        "/metrics",
        "/artifacts/{id}/app.js",
        "/artifacts/{id}/app.wasm",
    }


def test_compile_documents_every_answer() -> None:
    responses = openapi.SPEC["paths"]["/compile"]["post"]["responses"]
    assert set(responses) == {"200", "400", "405", "408", "413", "422", "429", "500", "503"}
    busy = openapi.SPEC["components"]["responses"]["Busy"]
    assert busy["headers"]["Retry-After"]["required"] is True
    limit = openapi.SPEC["components"]["schemas"]["LimitExceeded"]["properties"]["limit"]
    assert limit["enum"] == ["memory", "pids", "cpu", "timeout", "output", "artifact", "disk"]


def test_spec_loads_in_schemathesis() -> None:
    schema = schemathesis.openapi.from_dict(openapi.SPEC)
    labels = sorted(operations(schema))
    expected = sorted(
        f"{method} {path}" for path, methods in spec_routes().items() for method in methods
    )
    assert labels == expected


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    # Jailed, so that POST /run runs (nsjail's outside user must reach the dir: 0711).
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-openapi-"))
    workdir.chmod(0o711)
    # schemathesis opens a connection per call and leaves it to the server's keep-alive
    # timeout: more than maxConnectionsPerClient are open at once from this one address.
    config = server_config(
        workdir, maxBodyBytes=65536, maxConnectionsPerClient=1000, nsjailEnabled=True
    )
    server = start_server(workdir, config)
    yield server
    if server.proc.poll() is None:
        server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_served_spec_is_the_module_spec(live: Server) -> None:
    with live.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi.SPEC


def _fuzz(schema: BaseSchema, label: str, examples: int, base_url: str) -> None:
    operation = operations(schema)[label]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Case[Any]) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS)

    check()


@pytest.mark.browser
@pytest.mark.parametrize(
    "label", sorted(f"{m} {p}" for p, methods in spec_routes().items() for m in methods)
)
def test_schemathesis(live: Server, label: str) -> None:
    """Generated requests, valid ones included (real compiles): no 5xx, answers as specified."""
    # The module's spec, which test_served_spec_is_the_module_spec shows is the served one
    # (loaded from its URL, schemathesis would leave /openapi.json itself out).
    schema = schemathesis.openapi.from_dict(openapi.SPEC)
    _fuzz(schema, label, MAX_EXAMPLES.get(label, DEFAULT_EXAMPLES), live.url)
    live.assert_clean(timeout=10)


@pytest.mark.browser
def test_schemathesis_negative_compile_bodies_are_refused(live: Server) -> None:
    """Bodies that break the request schema are refused with a 4xx, never compiled."""
    schema = schemathesis.openapi.from_dict(openapi.SPEC)
    operation = operations(schema)["POST /compile"]

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
    def check(case: Case[Any]) -> None:
        response = case.call_and_validate(base_url=live.url, checks=CHECKS)
        if case.media_type != "application/json":
            # A raw body is any text and an upload any bytes: only JSON has a shape to break.
            return
        # Refused, as a 400 naming the problem or a 413 when it is too large; never compiled.
        assert response.status_code in (400, 413), response.text[:500]
        assert "id" not in response.json()

    check()


def _real_answers(live: Server) -> Iterator[tuple[str, httpx.Response]]:
    """One of each answer a generated request is unlikely to reach."""
    with live.client() as client:
        ok = client.post("/compile", json={"code": HELLO_C})
        yield "POST /compile", ok
        yield "GET /artifacts/{id}/app.js", client.get(ok.json()["js"])
        yield "GET /artifacts/{id}/app.wasm", client.get(ok.json()["wasm"])
        yield "POST /compile", client.post("/compile", json={"code": "int main(void) { x }"})
        yield "POST /compile", client.post("/compile", json={"code": "x", "args": ["-Wl,x"]})
        yield "POST /compile", client.post("/compile", content=b"{" + b" " * 70000 + b"}")
        upload = client.build_request("POST", "/compile", files={"main.c": b"int main(void){}"})
        upload.read()  # schemathesis reads the request back: no streaming body
        yield "POST /compile", client.send(upload)
        raw = client.post("/compile", content=b"int main(void) { x }", params={"type": "c"})
        yield "POST /compile", raw
        yield "POST /compile", client.post("/compile", json={"code": "x", "files": {"../a": ""}})
        ran = client.post("/run", json={"code": HELLO_C, "argv": ["a"], "stdin": "x"})
        assert ran.json()["run"]["exitCode"] == 0, ran.text
        yield "POST /run", ran
        yield "POST /run", client.post("/run", json={"code": HELLO_C, "argv": "a"})
        job = client.post("/jobs", json={"code": HELLO_C, "kind": "run", "stdin": "x"})
        yield "POST /jobs", job
        with client.stream("GET", job.json()["events"]) as events:
            assert any(line.startswith("event: result") for line in events.iter_lines())
        yield "GET /jobs/{id}", client.get(job.json()["url"])
        yield "DELETE /jobs/{id}", client.delete(job.json()["url"])
        yield "GET /jobs/{id}", client.get("/jobs/" + "0" * 32)
    with live.client() as client:
        yield "GET /compile", client.get("/compile")
        yield "GET /nowhere", client.get("/nowhere")


@pytest.mark.browser
def test_specific_answers_conform(live: Server) -> None:
    """A success, a compile error, a refused argument, a 413, a 405 and a 404 match the spec."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    by_label = operations(schema)
    seen = set()
    for label, response in _real_answers(live):
        seen.add(response.status_code)
        assert response.status_code < 500, response.text
        body = response.json() if "json" in response.headers["content-type"] else None
        if label in by_label:
            operation = by_label[label]
            case = operation.Case(
                path_parameters={"id": "0" * 32} if "{id}" in operation.path else None,
            )
            case.validate_response(response, checks=CHECKS)
        else:
            # A method or path the spec does not have: the documented JSON error shapes.
            assert body is not None
            assert set(body) == {"ok", "error"}
            assert body["ok"] is False
    assert seen == {200, 202, 400, 404, 405, 413}


@pytest.mark.browser
@given(st.sampled_from(["PUT", "DELETE", "PATCH"]))
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
def test_unlisted_methods_are_json_405(live: Server, method: str) -> None:
    with live.client() as client:
        for path in ("/compile", "/healthz", "/openapi.json", "/"):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.json()["ok"] is False
