"""Several files per compile, in every encoding (JSON, multipart, raw body), against a real
server and the real emcc: builds, path attacks, cache keys, structured diagnostics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from emcc_trio.testing.harness import REPO, MakeServer, Server
from emcc_trio.testing.programs import run_artifact

EXAMPLES = REPO / "examples"
EXPECTED = "sum of squares 1..4 = 30\n"


def project() -> dict[str, str]:
    return {name: (EXAMPLES / name).read_text() for name in ("main.c", "util.h", "util.c")}


def post(server: Server, **kwargs: Any) -> httpx.Response:
    with server.client() as client:
        return client.post("/compile", **kwargs)


def post_json(server: Server, body: dict[str, Any]) -> httpx.Response:
    return post(server, json=body)


def test_two_sources_and_a_header_build_and_run(server: Server, tmp_path: Path) -> None:
    files = project()
    response = post_json(server, {"code": files.pop("main.c"), "files": files})
    assert response.status_code == 200, response.text
    assert run_artifact(server, response, tmp_path) == EXPECTED
    server.assert_clean()


def test_every_encoding_is_the_same_compile(server: Server, tmp_path: Path) -> None:
    """JSON with `code`, JSON with main.c in `files`, and multipart give one cache entry."""
    files = project()
    first = post_json(
        server,
        {"code": files["main.c"], "files": {k: v for k, v in files.items() if k != "main.c"}},
    )
    assert first.status_code == 200, first.text
    assert first.json()["cached"] is False
    no_code = post_json(server, {"files": files})
    uploads = [(name, (name, text.encode())) for name, text in files.items()]
    multipart = post(server, files=uploads)
    for response in (no_code, multipart):
        assert response.status_code == 200, response.text
        assert response.json()["cached"] is True
        assert response.json()["id"] == first.json()["id"]
    assert run_artifact(server, multipart, tmp_path) == EXPECTED


def test_multipart_takes_args_and_type_fields(server: Server, tmp_path: Path) -> None:
    cpp = '#include <iostream>\n#include "greet.hpp"\nint main() { std::cout << greeting(); }\n'
    header = 'inline const char* greeting() { return "hello from a header\\n"; }\n'
    response = post(
        server,
        data={"type": "cpp", "args": ["-O1", "-sEXPORTED_RUNTIME_METHODS=[callMain]"]},
        files=[("code", ("prog.cpp", cpp.encode())), ("greet.hpp", ("g", header.encode()))],
    )
    assert response.status_code == 200, response.text
    assert run_artifact(server, response, tmp_path) == "hello from a header\n"
    refused = post(server, data={"args": "-Wl,--whole-archive"}, files=[("main.c", ("m", b"x"))])
    assert refused.status_code == 400
    assert refused.json() == {
        "ok": False,
        "error": "argument '-Wl,--whole-archive' is not allowed: linker options can read files "
        "by path",
    }


def test_a_cpp_main_links_with_a_c_source(server: Server, tmp_path: Path) -> None:
    code = (
        '#include <iostream>\nextern "C" {\n#include "util.h"\n}\n'
        'int main() { std::cout << "c++ sees " << sum_of_squares(4) << std::endl; }\n'
    )
    files = project()
    body = {
        "code": code,
        "type": "cpp",
        "files": {"util.h": files["util.h"], "util.c": files["util.c"]},
    }
    response = post_json(server, body)
    assert response.status_code == 200, response.text
    assert run_artifact(server, response, tmp_path) == "c++ sees 30\n"


def test_raw_body_with_options_in_the_query(server: Server, tmp_path: Path) -> None:
    source = '#include <stdio.h>\nint main(void) { printf("raw %d\\n", 7); return 0; }\n'
    response = post(server, content=source.encode(), params={"type": "c", "args": ["-O2", "-g"]})
    assert response.status_code == 200, response.text
    assert run_artifact(server, response, tmp_path) == "raw 7\n"
    # The same policy, whatever the encoding.
    refused = post(server, content=source.encode(), params={"args": "--shell-file=/etc/passwd"})
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "argument '--shell-file=/etc/passwd' is not allowed: it reads a file by path"
    )
    unknown = post(server, content=source.encode(), params={"opt": "2"})
    assert unknown.json() == {"ok": False, "error": "unknown query parameter(s): opt"}


PATH_ATTACKS = {
    "/etc/passwd": "the path must be relative",
    "../escape.h": "the path must not contain '..'",
    "inc/../../escape.h": "the path must not contain '..'",
    "a/b/c/d/deep.h": "the path is deeper than 4 levels",
    ".hidden.h": "each path component must use only letters",
    "inc//double.h": "each path component must use only letters",
    "./dot.h": "each path component must use only letters",
    "inc/": "each path component must use only letters",
    "-O2.c": "each path component must use only letters",
    "sp ace.h": "each path component must use only letters",
    "new\nline.h": "each path component must use only letters",
    "app.js": "the service writes this file itself",
    "app.wasm": "the service writes this file itself",
    "x" * 300: "the path is longer than 255 characters",
}


def test_each_path_attack_is_refused_naming_the_path(make_server: MakeServer) -> None:
    # Tighter than the defaults, so that the depth and count bounds are quick to reach.
    server = make_server(maxFiles=64, maxPathDepth=4)
    for path, why in PATH_ATTACKS.items():
        body = {"code": "int main(void) { return 0; }", "files": {path: "int x;\n"}}
        responses = [post_json(server, body)]
        if path.isprintable():  # httpx percent-encodes a newline in a multipart name
            upload = [(path, ("f", b"int x;\n"))]
            responses.append(post(server, data={"code": body["code"]}, files=upload))
        for response in responses:
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error.startswith(f"file {path!r} is not allowed: {why}"), (path, error)
            assert set(response.json()) == {"ok", "error"}
    main_clash = post_json(server, {"code": "int main(void){}", "files": {"main.c": "int y;"}})
    assert main_clash.json()["error"].startswith("file 'main.c' is not allowed: it is the main")
    file_and_dir = post_json(server, {"code": "int main(void){}", "files": {"a": "", "a/b.h": ""}})
    assert file_and_dir.json()["error"] == "file 'a/b.h' is not allowed: 'a' is a file"
    many = {f"f{i}.h": "" for i in range(65)}
    too_many = post_json(server, {"code": "int main(void){}", "files": many})
    assert too_many.json()["error"] == "too many files: 65 (at most 64: maxFiles)"
    not_text = post_json(server, {"code": "int main(void){}", "files": {"a.h": 1}})
    assert not_text.json()["error"] == '"files" must be an object of path: text'
    # Refused requests never reach a compiler: no job dir, no process, no cgroup.
    assert not server.jobs_dir.exists() or not any(server.jobs_dir.iterdir())
    server.assert_clean()


def test_files_larger_than_the_body_bound_are_refused(make_server: MakeServer) -> None:
    server = make_server(maxBodyBytes=4096)
    body = {"code": "int main(void){}", "files": {"a.h": "x" * 5000}}
    response = post_json(server, body)
    assert response.status_code == 413
    assert "maxBodyBytes" in response.json()["error"]
    upload = post(
        server, files=[("main.c", ("m", b"int main(void){}")), ("a.h", ("a", b"x" * 5000))]
    )
    assert upload.status_code == 413
    assert "maxBodyBytes" in upload.json()["error"]


def test_the_cache_tells_different_files_apart(server: Server, tmp_path: Path) -> None:
    code = '#include <stdio.h>\n#include "n.h"\nint main(void) { printf("n=%d\\n", N); }\n'
    answers = []
    for value in ("1", "2", "1"):
        response = post_json(server, {"code": code, "files": {"n.h": f"#define N {value}\n"}})
        assert response.status_code == 200, response.text
        answers.append(response)
    first, second, again = (a.json() for a in answers)
    assert (first["cached"], second["cached"], again["cached"]) == (False, False, True)
    assert first["id"] != second["id"]
    assert again["id"] == first["id"]
    assert run_artifact(server, answers[0], tmp_path) == "n=1\n"
    assert run_artifact(server, answers[1], tmp_path) == "n=2\n"
    # A data file counts too, even though it is not a source.
    data_ids = {
        post_json(server, {"code": "int main(void){}", "files": {"d.txt": text}}).json()["id"]
        for text in ("a", "b")
    }
    assert len(data_ids) == 2


def test_diagnostics_point_at_main_and_at_a_header(server: Server) -> None:
    code = '#include "bad.h"\nint main(void) {\n  return  missing;\n}\n'
    header = "int fine(void);\nint broken(void) { return 1 }\n"
    response = post_json(server, {"code": code, "files": {"bad.h": header}})
    assert response.status_code == 400, response.text
    body = response.json()
    errors = [d for d in body["diagnostics"] if d["severity"] == "error"]
    assert errors == [
        {
            "file": "bad.h",
            "line": 2,
            "column": 28,  # just after the 1
            "severity": "error",
            "message": "expected ';' after return statement",
        },
        {
            "file": "main.c",
            "line": 3,
            "column": 11,
            "severity": "error",
            "message": "use of undeclared identifier 'missing'",
        },
    ]
    # `error` stays the human text, without emcc's internal clang command line.
    assert "main.c:3:11: error: use of undeclared identifier 'missing'" in body["error"]
    assert "  return  missing;\n" in body["error"]
    assert "wasm32-unknown-emscripten" not in body["error"]
    assert "emcc: error: clang-14 failed (returned 1)" in body["error"]


def test_warnings_come_back_as_diagnostics_on_success(server: Server) -> None:
    response = post_json(server, {"code": "int main(void) {\n  int x = 1 / 0;\n  return x;\n}\n"})
    assert response.status_code == 200, response.text
    [warning] = response.json()["diagnostics"]
    assert warning == {
        "file": "main.c",
        "line": 2,
        "column": 13,
        "severity": "warning",
        "message": "division by zero is undefined [-Wdivision-by-zero]",
    }


def test_a_link_error_is_a_diagnostic_without_a_line(server: Server) -> None:
    files = {"util.h": "int helper(void);\n"}
    code = '#include "util.h"\nint main(void) { return helper(); }\n'
    response = post_json(server, {"code": code, "files": files})
    assert response.status_code == 400, response.text
    errors = [d for d in response.json()["diagnostics"] if d["severity"] == "error"]
    assert errors
    assert (errors[0]["file"], errors[0]["line"], errors[0]["column"]) == (None, None, None)
    assert "undefined symbol: helper" in errors[0]["message"]


def test_files_in_subdirs_land_in_the_jail(
    make_server: MakeServer, reachable_dir: Path, tmp_path: Path
) -> None:
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=True)
    code = (
        '#include <stdio.h>\n#include "lib/util.h"\n'
        'int main(void) { printf("sum of squares 1..4 = %d\\n", sum_of_squares(4)); }\n'
    )
    files = project()
    body = {
        "code": code,
        "files": {
            "lib/util.h": files["util.h"],
            "lib/util.c": files["util.c"],  # its "util.h" is found next to it
            "assets/note.txt": "embedded\n",
        },
        "args": ["--embed-file", "assets/note.txt"],
    }
    response = post_json(server, body)
    assert response.status_code == 200, response.text
    assert run_artifact(server, response, tmp_path) == EXPECTED
    with server.client() as client:
        built = (
            client.get(response.json()["js"]).content + client.get(response.json()["wasm"]).content
        )
    assert b"embedded" in built
    server.assert_clean()


@pytest.mark.parametrize("jailed", [False, True], ids=["no-jail", "jail"])
def test_python_files_in_a_project_are_never_imported_by_the_build(
    make_server: MakeServer, reachable_dir: Path, tmp_path: Path, jailed: bool
) -> None:
    # The build's driver and the launcher run python in the job dir: a project's `json.py`
    # (or any module they import) must stay a file of the project, never their code.
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=jailed)
    shadows = ("json", "re", "shlex", "subprocess", "importlib", "hashlib", "copy")
    planted = "raise SystemExit('imported from the job dir')\n"
    files = {
        **project(),
        **{f"{name}.py": planted for name in shadows},
        "concurrent/__init__.py": planted,
    }
    response = post_json(server, {"code": files.pop("main.c"), "files": files})
    assert response.status_code == 200, response.text
    assert "imported from the job dir" not in response.text
    assert run_artifact(server, response, tmp_path) == EXPECTED
    server.assert_clean()
