"""The HTTP API against a real server and the real emcc: the seed's examples, errors, artifacts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from emcc_trio.testing.docs import examples, run_example
from emcc_trio.testing.harness import REPO, MakeServer, Server, eventually
from emcc_trio.testing.programs import HELLO_C, HELLO_CPP, run_artifact


def test_healthz(server: Server) -> None:
    with server.client() as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok"


def test_c_compiles_and_runs(server: Server, tmp_path: Path) -> None:
    response = server.compile(HELLO_C, "c")
    assert response.status_code == 200, response.text
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert body["js"] == f"/artifacts/{body['id']}/app.js"
    assert body["wasm"] == f"/artifacts/{body['id']}/app.wasm"
    assert body["usage"]["durationSeconds"] > 0
    assert run_artifact(server, response, tmp_path) == "hello from C\n"
    server.assert_clean()


@pytest.mark.parametrize("kind", ["cpp", "cc", "c++"])
def test_cpp_compiles_and_runs(server: Server, tmp_path: Path, kind: str) -> None:
    response = server.compile(HELLO_CPP, kind)
    assert response.status_code == 200, response.text
    assert run_artifact(server, response, tmp_path) == "hello from C++\n"


def test_custom_args_at_o2(server: Server, tmp_path: Path) -> None:
    code = (
        "#include <stdio.h>\n#include <math.h>\n"
        'int main(void) { printf("sqrt(2) = %.3f\\n", sqrt(2.0)); return 0; }\n'
    )
    response = server.compile(code, "c", ["-O2", "-sEXPORTED_RUNTIME_METHODS=[callMain]"])
    assert response.status_code == 200, response.text
    assert run_artifact(server, response, tmp_path) == "sqrt(2) = 1.414\n"
    js = httpx.get(server.url + response.json()["js"]).text
    assert "callMain" in js


def test_compile_error_is_400_with_the_compilers_output(server: Server) -> None:
    response = server.compile("int main(void) { return undeclared; }\n")
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert "main.c:1:25: error: use of undeclared identifier 'undeclared'" in body["error"]
    assert not (server.artifacts_dir / body["id"]).exists()
    server.assert_clean()


def test_rejected_argument_is_named(server: Server) -> None:
    response = server.compile(HELLO_C, "c", ["-O2", "--js-library", "/etc/passwd"])
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error": "argument '--js-library' is not allowed: it reads a file by path",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "the body is not valid JSON"),
        (b"\xff\xfe", "the body is not valid JSON"),
        (b'["code"]', "the body must be a JSON object"),
        (b'{"code": 1}', '"code" must be a string'),
        (b'{"code": "int x;", "type": "fortran"}', '"type" must be one of c, cpp, cc, c++'),
    ],
)
def test_malformed_requests_get_json_400(server: Server, content: bytes, message: str) -> None:
    with server.client() as client:
        response = client.post("/compile", content=content)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_unknown_route_and_method_are_json(server: Server) -> None:
    with server.client() as client:
        missing = client.get("/nope")
        wrong_method = client.get("/compile")
    assert (missing.status_code, missing.json()) == (404, {"ok": False, "error": "not found"})
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {
        "ok": False,
        "error": "method GET not allowed for /compile",
    }
    assert "POST" in wrong_method.headers["allow"].split(", ")


def test_body_over_the_limit_is_413(make_server: MakeServer) -> None:
    server = make_server(maxBodyBytes=4096)
    with server.client() as client:
        response = client.post("/compile", json={"code": "x" * 5000})
        # The same client (and so, kept alive, the same connection) goes on working.
        after = client.post("/compile", json={"code": HELLO_C}, timeout=60)
    assert response.status_code == 413
    assert response.json() == {
        "ok": False,
        "error": "request body too large (maxBodyBytes is 4096)",
    }
    assert after.status_code == 200


def test_artifacts_have_wasm_and_js_types_and_immutable_caching(server: Server) -> None:
    body = server.compile(HELLO_C).json()
    with server.client() as client:
        js = client.get(body["js"])
        wasm = client.get(body["wasm"])
    assert js.headers["content-type"] == "application/javascript; charset=utf-8"
    assert wasm.headers["content-type"] == "application/wasm"
    for response in (js, wasm):
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert wasm.content[:4] == b"\0asm"
    assert wasm.content == (server.artifacts_dir / body["id"] / "app.wasm").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/artifacts/00000000000000000000000000000000/app.js",
        "/artifacts/not-an-id/app.js",
        "/artifacts/0123/app.wasm",
        "/artifacts/../config.json",
        "/artifacts/%2e%2e/config.json",
        "/artifacts/..%2f..%2fetc/passwd",
    ],
)
def test_unknown_or_malformed_artifacts_are_404(server: Server, path: str) -> None:
    (server.workdir / "secret.txt").write_text("top secret")
    with server.client() as client:
        response = client.get(path)
    assert response.status_code == 404
    assert response.json()["ok"] is False
    assert "top secret" not in response.text


def test_only_app_js_and_wasm_are_served(server: Server) -> None:
    body = server.compile(HELLO_C).json()
    (server.artifacts_dir / body["id"] / "extra.txt").write_text("not an artifact")
    with server.client() as client:
        response = client.get(f"/artifacts/{body['id']}/extra.txt")
    assert response.status_code == 404


def test_static_artifacts_can_be_disabled(make_server: MakeServer) -> None:
    server = make_server(enableStaticArtifacts=False)
    body = server.compile(HELLO_C).json()
    assert body["ok"] is True
    assert (server.artifacts_dir / body["id"] / "app.js").is_file()
    with server.client() as client:
        assert client.get(body["js"]).status_code == 404


def test_requests_are_logged_one_line_each(server: Server) -> None:
    body = server.compile(HELLO_C).json()
    with server.client() as client:
        client.get("/healthz")
    # The line is written once the response is sent, so the client may see it first.
    requests = eventually(
        lambda: (
            [e for e in server.log_events() if e["event"] == "request" and e["path"] == "/healthz"]
            and [e for e in server.log_events() if e["event"] == "request"]
        ),
        5,
        "the access log lines",
    )
    compile_line = next(e for e in requests if e["path"] == "/compile")
    assert compile_line["method"] == "POST"
    assert compile_line["status"] == 200
    assert compile_line["job"] == body["id"]
    assert compile_line["ms"] > 0
    assert any(e["path"] == "/healthz" and e["status"] == 200 for e in requests)


def test_doc_examples_work_verbatim(server: Server, tmp_path: Path) -> None:
    """The examples page's curl examples, pointed at this server, give what the page shows."""
    pairs = examples("tutorial/examples.md", "Compiling C and C++")
    assert len(pairs) >= 6
    printed = []
    for command, shown in pairs:
        # Run where the page runs them: beside the upload examples' files.
        answer = run_example(command, server.url, cwd=REPO / "examples")
        if shown == "ok":
            assert answer.strip() == "ok"
            continue
        expected, got = json.loads(shown), json.loads(answer)
        assert sorted(got) == sorted(expected), command
        assert got["ok"] == expected["ok"], command
        if got["ok"]:
            printed.append(run_artifact(server, httpx.Response(200, text=answer), tmp_path))
        elif "id" not in expected:
            assert got == expected
        else:
            assert got["error"].split("\n")[0] == expected["error"].split("\n")[0]
    assert printed == [
        "hello from C\n",
        "hello from C++\n",
        "sqrt(2) = 1.414\n",
        "sum of squares 1..4 = 30\n",
        "14\n",
        "hello from a raw body\n",
    ]
