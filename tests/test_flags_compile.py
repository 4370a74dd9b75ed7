"""The standard policy's flags in real compiles: each artifact runs under node and prints what
its flags promise. Four compiles carry every newly allowed flag and setting between them
(`test_the_compiles_cover_every_allowed_flag` checks that they do)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest

from emcc_trio.compile.policy import (
    C_STANDARDS,
    CXX_STANDARDS,
    SEED_FLAGS,
    SEED_SETTINGS,
    STANDARD,
    STANDARD_FLAGS,
    check_args,
)
from emcc_trio.testing.docs import compare_answer, examples, run_example
from emcc_trio.testing.harness import (
    REPO,
    MakeServer,
    Server,
    serve_once,
    server_config,
    start_server,
)
from emcc_trio.testing.programs import RUN_ARTIFACT_JS, program


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's compiles: each test starting its own costs more than
    the compiles."""
    workdir = tmp_path_factory.mktemp("flags")
    started = start_server(workdir, server_config(workdir))
    yield started
    started.stop()


@attrs.frozen
class Run:
    stdout: str
    stderr: str


def run(server: Server, response: httpx.Response, tmp_path: Path, *call: str) -> Run:
    """Fetch the artifact and run it under node (first calling `call`, an exported function
    and its arguments, when given)."""
    body = response.json()
    assert response.status_code == 200, body
    assert body["ok"] is True
    out = tmp_path / body["id"]
    out.mkdir(exist_ok=True)
    wasm = "-" if body["wasm"] is None else str(out / "app.wasm")  # "-": -sSINGLE_FILE
    with server.client() as client:
        for key, name in (("js", "app.js"), ("wasm", "app.wasm")):
            if body[key] is not None:
                fetched = client.get(body[key])
                assert fetched.status_code == 200, fetched.text
                (out / name).write_bytes(fetched.content)
    done = subprocess.run(
        ["node", str(RUN_ARTIFACT_JS), str(out / "app.js"), wasm, *call],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Run(done.stdout, done.stderr)


EMBIND_ARGS = [
    "-std=c++20",
    "-fexceptions",
    "-lembind",
    '-DGREETING="hello"',
    "-D",
    "LEVEL=3",
    "-U",
    "NDEBUG",
    "-UUNUSED",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
    "-pedantic",
    "-frtti",
    "-fsigned-char",
    "-fno-omit-frame-pointer",
    "-fcolor-diagnostics",
    "-sMODULARIZE=1",
    "-sEXIT_RUNTIME=1",
    "-sEXPORTED_RUNTIME_METHODS=[callMain]",
    "-sASSERTIONS=2",
    "-sTOTAL_STACK=1MB",
    "-sINITIAL_MEMORY=32MB",
    "-sMAXIMUM_MEMORY=256MB",
    "-sMALLOC=emmalloc",
    "-sSTACK_OVERFLOW_CHECK=2",
    "-sDEMANGLE_SUPPORT=1",
    "-sABORTING_MALLOC=0",
    "-sERROR_ON_UNDEFINED_SYMBOLS=1",
]
WASM_EH_ARGS = [
    "-O2",
    "-flto",
    "-ffast-math",
    "-fwasm-exceptions",
    "--bind",
    "-std=gnu++2b",
    "-fno-strict-aliasing",
    "-fwrapv",
    "-funsigned-char",
    "-fno-inline",
    "-fvisibility=default",
    "-msimd128",
    "-mbulk-memory",
    "-mnontrapping-fptoint",
    "-msign-ext",
    "-mmutable-globals",
    "-w",
    "-D",
    'MODE="es6"',
    "-s",
    "EXPORT_ES6=1",
    "-sUSE_ES6_IMPORT_META=0",
    "-sEXPORT_NAME=createModule",
    "-sWASM_BIGINT=1",
    "-sALLOW_TABLE_GROWTH=1",
    "-sFILESYSTEM=0",
    "-sSTRICT=1",
    "-sINITIAL_MEMORY=64MB",
    "-sINVOKE_RUN=0",
    "-sEXPORTED_RUNTIME_METHODS=[callMain]",
]
SANITIZER_ARGS = [
    "-std=c17",
    "-fsanitize=address,undefined,leak",
    "-fno-exceptions",
    "-fignore-exceptions",
    "-fno-rtti",
    "-fno-builtin",
    "-fno-fast-math",
    "-fno-lto",
    "-fno-color-diagnostics",
    "-sALLOW_MEMORY_GROWTH=1",
    "-sEXPORTED_RUNTIME_METHODS=callMain",
]
MINIMAL_ARGS = [
    "-O1",
    "-flto=full",
    "-g",
    "-fsanitize=null,alignment",
    "-fsanitize-minimal-runtime",
    "-fno-sanitize-recover",
    "-fvisibility=hidden",
    "-Werror=format",
    "-pedantic-errors",
    '-DNAME="minimal"',
    "-sSAFE_HEAP=1",
    "-sDISABLE_EXCEPTION_CATCHING=1",
    "-sMALLOC=dlmalloc",
    "-sTOTAL_MEMORY=32MB",
    "-sENVIRONMENT=web,worker",
    "-sEXPORTED_FUNCTIONS=[_main]",
    "-sEXPORTED_RUNTIME_METHODS=callMain",
    "-sEXIT_RUNTIME",
    "-sSINGLE_FILE=1",
]
# Run in Chromium by tests/test_playground_flags.py: threads need a browser's workers.
THREAD_ARGS = [
    "-O1",
    "-pthread",
    "-sENVIRONMENT=web,worker",
    "-sEXPORT_NAME=createModule",
    "-sPTHREAD_POOL_SIZE=2",
    "-sPROXY_TO_PTHREAD=0",
]
ALL_COMPILES = [EMBIND_ARGS, WASM_EH_ARGS, SANITIZER_ARGS, MINIMAL_ARGS, THREAD_ARGS]


def _setting_names(args: list[str]) -> set[str]:
    names = set()
    for index, arg in enumerate(args):
        setting = args[index + 1] if arg == "-s" else arg[2:] if arg.startswith("-s") else ""
        if setting:
            names.add(setting.partition("=")[0])
    return names


def test_the_compiles_cover_every_allowed_flag() -> None:
    used = {arg for args in ALL_COMPILES for arg in args}
    exact = STANDARD_FLAGS - SEED_FLAGS - {f"-std={v}" for v in (*C_STANDARDS, *CXX_STANDARDS)}
    assert sorted(exact - used) == []
    assert (
        sorted(
            set(STANDARD.settings)
            - set(SEED_SETTINGS)
            - _setting_names([arg for args in ALL_COMPILES for arg in args])
        )
        == []
    )
    for args in ALL_COMPILES:
        assert check_args(args) == tuple(args)


def test_embind_cxx20_exceptions_defines_and_exit_runtime(server: Server, tmp_path: Path) -> None:
    response = server.compile(program("flags_embind.cpp"), "cpp", EMBIND_ARGS)
    add = run(server, response, tmp_path, "add", "2", "3")
    assert add.stdout == (
        "add(2, 3) = 5\n"
        "GREETING=hello LEVEL=3\n"
        "C++20: twice(21)=42 popcount(255)=8\n"
        "caught: thrown\n"
        # EXIT_RUNTIME flushes the last line, though it has no newline.
        "a last line without a newline\n"
    )
    greet = run(server, response, tmp_path, "greet", "wasm")
    assert greet.stdout.startswith("greet(wasm) = hello, wasm\nGREETING=hello")


def test_wasm_exceptions_bind_simd_es6_at_o2(server: Server, tmp_path: Path) -> None:
    response = server.compile(program("flags_wasm_eh.cpp"), "cpp", WASM_EH_ARGS)
    assert response.status_code == 200, response.text
    with server.client() as client:
        js = client.get(response.json()["js"]).text
    assert "export default createModule" in js
    result = run(server, response, tmp_path, "scale", "1.5", "4")
    # Without EXIT_RUNTIME the last line (no newline) stays in the runtime's buffer.
    assert result.stdout == "scale(1.5, 4) = 6\ncaught: wasm exception\nsimd: 25\nMODE=es6\n"


def test_address_and_undefined_sanitizers_report(server: Server, tmp_path: Path) -> None:
    response = server.compile(program("flags_sanitizers.c"), "c", SANITIZER_ARGS)
    result = run(server, response, tmp_path)
    assert result.stdout == "address sanitizer: on\nnumbers[3]=9 wrapped<0=1\n"
    assert "runtime error: signed integer overflow" in result.stderr


def test_minimal_ubsan_safe_heap_bare_exit_runtime_in_a_single_file(
    server: Server, tmp_path: Path
) -> None:
    """-sSINGLE_FILE: the artifact is app.js alone (the answer's `wasm` is null, and there is
    no app.wasm to fetch), it runs with no wasm handed in, and a cache hit says the same."""
    response = server.compile(program("flags_minimal_ubsan.c"), "c", MINIMAL_ARGS)
    body = response.json()
    assert body["wasm"] is None, body
    with server.client() as client:
        missing = client.get(f"/artifacts/{body['id']}/app.wasm")
    assert (missing.status_code, missing.json()) == (
        404,
        {"ok": False, "error": "no such artifact"},
    )
    result = run(server, response, tmp_path)
    assert result.stdout == "safe heap, minimal\nflushed by EXIT_RUNTIME\n"
    hit = server.compile(program("flags_minimal_ubsan.c"), "c", MINIMAL_ARGS).json()
    assert (hit["cached"], hit["id"], hit["wasm"]) == (True, body["id"], None)


HELLO = '#include <stdio.h>\nint main(void) { printf("hi\\n"); return 0; }\n'


def test_refusals_over_http_name_the_argument_and_the_reason(server: Server) -> None:
    cases = {
        "-sUSE_ICU=1": "that port is not installed on this service (installed: -sUSE_ZLIB=1,",
        "-sUSE_ZLIB=2": "USE_ZLIB takes 1",
        "-sINITIAL_MEMORY=2GB": "at most jobMemoryMaxMB (1024 MB)",
        "-sEXPORT_NAME=my-module": "EXPORT_NAME takes a JavaScript identifier",
        "-Wl,--export-all": "linker options can read files by path",
    }
    for arg, reason in cases.items():
        response = server.compile(HELLO, "c", [arg])
        assert response.status_code == 400
        body = response.json()
        assert body["ok"] is False
        assert f"argument {arg!r} is not allowed: " in body["error"]
        assert reason in body["error"]
    server.assert_clean()


def test_a_seed_server_keeps_the_seed_allowlist_plus_the_operators_args(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server = make_server(
        argumentPolicy="seed",
        jobMemoryMaxMB=512,
        extraAllowedArgs=["-DGREETING=1", "-sEXPORTED_RUNTIME_METHODS=[callMain]"],
    )
    refused = server.compile(HELLO, "c", ["-std=c17"])
    assert refused.status_code == 400
    assert "'-std=c17' is not allowed: it is not on the allowlist" in refused.json()["error"]
    code = '#include <stdio.h>\nint main(void) { printf("%d\\n", GREETING + 1); }\n'
    args = ["-DGREETING=1", "-sEXPORTED_RUNTIME_METHODS=[callMain]"]
    assert run(server, server.compile(code, "c", args), tmp_path).stdout == "2\n"


def test_a_path_reading_extra_arg_stops_the_server_at_start(tmp_path: Path) -> None:
    done = serve_once(tmp_path, {"workingDir": str(tmp_path), "extraAllowedArgs": ["-I/etc"]})
    assert done.returncode == 2
    assert "config error: extraAllowedArgs: '-I/etc' can name a host path" in done.stderr


PLAYGROUND = REPO / "emcc_trio" / "api" / "playground" / "static"
RUN_IN_RUNNER_JS = Path(__file__).resolve().parent / "run_in_runner.js"


def playground_examples() -> dict[str, dict[str, str]]:
    """The playground's examples menu, evaluated by node from playground.js."""
    script = (
        "const s = require('fs').readFileSync(process.argv[1], 'utf8');"
        "const start = s.indexOf('const EXAMPLES = [');"
        "const body = s.slice(start, s.indexOf('\\n  ];\\n', start) + 5);"
        "process.stdout.write(JSON.stringify(new Function(body + 'return EXAMPLES;')()));"
    )
    done = subprocess.run(
        ["node", "-e", script, str(PLAYGROUND / "playground.js")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {example["name"]: example for example in json.loads(done.stdout)}


@pytest.mark.parametrize(
    ("name", "printed", "errors", "code"),
    [
        (
            "a last line without a newline (EXIT_RUNTIME)",
            "a whole line\nthe last line, without a newline\n",
            "",
            0,
        ),
        ("Embind: C++ called from JavaScript", "hello, Embind\n", "", 0),
        # A debug build without callMain exported: the runner must not call its stub.
        ("stdout, stderr and an exit code", "to stdout\n", "to stderr\n", 3),
    ],
)
def test_playground_examples_print_everything_through_the_runner(
    server: Server, tmp_path: Path, name: str, printed: str, errors: str, code: int
) -> None:
    example = playground_examples()[name]
    response = server.compile(example["code"], example["type"], example["args"].split())
    body = response.json()
    assert response.status_code == 200, body
    with server.client() as client:
        for key, file in (("js", "app.js"), ("wasm", "app.wasm")):
            (tmp_path / file).write_bytes(client.get(body[key]).content)
    done = subprocess.run(
        [
            "node",
            str(RUN_IN_RUNNER_JS),
            str(PLAYGROUND / "runner.js"),
            str(tmp_path / "app.js"),
            str(tmp_path / "app.wasm"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    messages = [json.loads(line) for line in done.stdout.splitlines()]
    assert messages[0] == {"type": "ready"}
    assert messages[-1] == {"type": "exit", "code": code, "drawing": False}
    assert "".join(m["text"] for m in messages if m["type"] == "stdout") == printed
    assert "".join(m["text"] for m in messages if m["type"] == "stderr") == errors


def test_the_doc_policy_examples_work_verbatim(server: Server, tmp_path: Path) -> None:
    """The curl examples under "The argument policy" of the examples page give what it shows."""
    pairs = examples("tutorial/examples.md", "The argument policy")
    assert len(pairs) == 3
    for command, shown in pairs:
        answer = run_example(command, server.url)
        if compare_answer(shown, answer) is None:
            continue
        result = run(server, httpx.Response(200, text=answer), tmp_path, "add", "2", "3")
        assert result.stdout == "add(2, 3) = 5\nno newline\n"
