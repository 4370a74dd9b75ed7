"""The argument policy and request validation: tables plus a property test."""

from __future__ import annotations

import json
import os.path
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emcc_trio.api.bodies import from_json
from emcc_trio.compile.compiler import Compiler
from emcc_trio.compile.policy import (
    PATH_FLAGS,
    SEED,
    STANDARD,
    Policy,
    check_args,
    compiler_argv,
    make_policy,
    parse_request,
)
from emcc_trio.config import ConfigError, parse
from emcc_trio.errors import RequestError
from emcc_trio.isolation.cgroups import Caps
from emcc_trio.isolation.runner import Limits
from emcc_trio.models import CompileRequest
from emcc_trio.storage.artifacts import ArtifactStore
from emcc_trio.storage.local import LocalStore

pytestmark = pytest.mark.unit

POLICIES = [STANDARD, SEED]

ALLOWED = [
    ["-O0"],
    ["-O1"],
    ["-O2"],
    ["-O3"],
    ["-Os"],
    ["-Oz"],
    ["-g"],
    ["-sMODULARIZE=0"],
    ["-sMODULARIZE=1"],
    ["-sENVIRONMENT=web"],
    ["-sENVIRONMENT=web,worker"],
    ["-sINVOKE_RUN=1"],
    ["-sEXPORTED_FUNCTIONS=[_main,_add]"],
    ["-sEXPORTED_FUNCTIONS=_main"],
    ['-sEXPORTED_FUNCTIONS=["_main","_add"]'],
    ["-sEXPORTED_FUNCTIONS=['_main']"],
    ["-sEXPORTED_RUNTIME_METHODS=[callMain,ccall,cwrap]"],
    ["-sALLOW_MEMORY_GROWTH=0"],
    ["--preload-file", "data.txt"],
    ["--preload-file=assets/data.txt"],
    ["--embed-file", "main.c@/src/main.c"],
    ["--embed-file", "."],
    ["--source-map-base", "maps/"],
    ["--source-map-base=static/maps/"],
]

# The held-out probes: refused by both policies, each with its reason.
BLOCKED = [
    (["-O2x"], "not on the allowlist"),
    (["-O"], "not on the allowlist"),
    (["-o", "x.js"], "output file is fixed"),
    (["-oapp2.js"], "output file is fixed"),
    (["--shell-file", "shell.html"], "reads a file"),
    (["-sFORCE_FILESYSTEM=1"], "not allowed by the service"),
    (["-sFORCE_FILESYSTEM"], "not allowed by the service"),
    (["-sENVIRONMENT=node"], "node environment is blocked"),
    (["-sENVIRONMENT=web,node"], "node environment is blocked"),
    (["-sENVIRONMENT=mars"], "ENVIRONMENT takes"),
    (["@/etc/passwd"], "response files"),
    (["@args.txt"], "response files"),
    (["-I/etc"], "include paths"),
    (["-I", "/usr/include"], "include paths"),
    (["-I=sys"], "include paths"),
    (["-iquote", "../up"], "include paths"),
    # A final newline: `$` would match before it; the checks anchor at the very end.
    (["-I", "include\n"], "include paths"),
    (["-isystem", "..\n"], "include paths"),
    (["-include", "/etc/passwd"], "reads a file"),
    (["-isystem/usr"], "include paths"),
    (["--js-library", "lib.js"], "reads a file"),
    (["--pre-js", "pre.js"], "reads a file"),
    (["--post-js=post.js"], "reads a file"),
    (["-Wl,--whole-archive"], "linker"),
    (["-Xclang", "-load"], "raw clang"),
    (["-L/lib"], "library paths"),
    (["-sMODULARIZE=2"], "MODULARIZE takes 0 or 1"),
    (["-sINVOKE_RUN=yes"], "INVOKE_RUN takes"),
    (["-sEXPORTED_FUNCTIONS=@/etc/passwd"], "EXPORTED_FUNCTIONS takes"),
    (["-sEXPORTED_FUNCTIONS=[main]"], "EXPORTED_FUNCTIONS takes"),
    (["-sEXPORTED_RUNTIME_METHODS=@x.txt"], "EXPORTED_RUNTIME_METHODS takes"),
    (["--preload-file", "/etc/passwd"], "path must be relative"),
    (["--preload-file", "../secret"], "path must be relative"),
    (["--preload-file", "a/../../secret"], "path must be relative"),
    (["--embed-file=/etc/passwd@/x"], "path must be relative"),
    (["--embed-file", "~/x"], "path must be relative"),
    (["--embed-file", "a@../x"], "path must be relative"),
    (["--embed-file", "-O2"], "path must be relative"),
    (["--source-map-base", "../maps"], "path must be relative"),
    (["--source-map-base", "http://evil/"], "path must be relative"),
    (["--preload-file"], "needs a value"),
    (["-fplugin=/tmp/x.so"], "loads a file by path"),
    (["main.c"], "not on the allowlist"),
    (["/etc/passwd"], "not on the allowlist"),
    (["-x", "c"], "not on the allowlist"),
    (["--config=/etc/x"], "reads a file"),
]


# What the seed refuses and the standard policy (tests/test_policy_standard.py) accepts.
SEED_ONLY_BLOCKED = [
    (["-sEXPORT_NAME=Foo"], "only the listed"),
    (["-s", "MODULARIZE=1"], "only the listed"),
    (["-sMODULARIZE"], "only the listed"),
    (["-std=c++20"], "not on the allowlist"),
    (["-DFOO=1"], "not on the allowlist"),
    (["-lembind"], "not on the allowlist"),
    (["-Wall"], "not on the allowlist"),
    (["-sEXIT_RUNTIME=1"], "only the listed"),
    (["-sSINGLE_FILE=1"], "only the listed"),
    (["-I", "."], "include paths"),
    (["-Iinclude"], "include paths"),
    (["-isystem", "lib/include"], "include paths"),
    (["-iquotesrc"], "include paths"),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
@pytest.mark.parametrize("args", ALLOWED, ids=lambda a: " ".join(a))
def test_allowed_args_pass_unchanged(policy: Policy, args: list[str]) -> None:
    assert check_args(args, policy) == tuple(args)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
@pytest.mark.parametrize(("args", "reason"), BLOCKED, ids=lambda a: str(a))
def test_blocked_args_are_named_with_a_reason(policy: Policy, args: list[str], reason: str) -> None:
    with pytest.raises(RequestError) as info:
        check_args(args, policy)
    message = str(info.value)
    assert reason in message
    assert args[0] in message


@pytest.mark.parametrize(("args", "reason"), SEED_ONLY_BLOCKED, ids=lambda a: str(a))
def test_the_seed_policy_is_the_seed_allowlist(args: list[str], reason: str) -> None:
    with pytest.raises(RequestError, match=reason):
        check_args(args, SEED)
    assert check_args(args, STANDARD) == tuple(args)


def test_too_many_args() -> None:
    with pytest.raises(RequestError, match="too many args"):
        check_args(["-O2"] * 65)


def test_config_chooses_the_policy_and_adds_the_operators_args() -> None:
    assert parse("{}").argument_policy == "standard"
    config = parse('{"argumentPolicy": "seed", "extraAllowedArgs": ["-sUSE_ZLIB=1", "-Wall"]}')
    policy = make_policy(
        config.argument_policy, config.job_memory_max_mb, config.extra_allowed_args
    )
    assert policy.name == "seed"
    assert check_args(["-O2", "-sUSE_ZLIB=1", "-Wall"], policy) == ("-O2", "-sUSE_ZLIB=1", "-Wall")
    # Exact strings: the operator's `-Wall` does not open -W<name> in the seed policy.
    with pytest.raises(RequestError, match="'-Wextra' is not allowed"):
        check_args(["-Wextra"], policy)
    with pytest.raises(RequestError, match="ports"):
        check_args(["-sUSE_ZLIB=1"], make_policy("standard", 1024))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"argumentPolicy": "open"}', "argumentPolicy: must be one of standard, seed"),
        ('{"argumentPolicy": 1}', "argumentPolicy: expected a string"),
        ('{"extraAllowedArgs": "-Wall"}', "extraAllowedArgs: expected a list of strings"),
        ('{"extraAllowedArgs": ["-I/usr/include"]}', "extraAllowedArgs: '-I/usr/include' can"),
        ('{"extraAllowedArgs": ["--js-library=lib.js"]}', "extraAllowedArgs: '--js-library"),
        ('{"extraAllowedArgs": ["@args.txt"]}', "response files"),
        ('{"extraAllowedArgs": ["-sEXPORTED_FUNCTIONS=@f.txt"]}', "@ or / can name a file"),
        ('{"extraAllowedArgs": ["-sSHELL_FILE=/x.html"]}', "@ or / can name a file"),
        ('{"extraAllowedArgs": ["--embed-file"]}', "path as the next argument"),
        ('{"extraAllowedArgs": ["--embed-file=/etc/passwd"]}', "must be relative"),
        ('{"extraAllowedArgs": ["lib.a"]}', "input file"),
        ('{"extraAllowedArgs": ["-Wl,--whole-archive"]}', "linker options"),
        ('{"extraAllowedArgs": ["-Wa,-I/etc"]}', "assembler options"),
        ('{"extraAllowedArgs": ["-fprofile-use=/x"]}', "profile files"),
        ('{"extraAllowedArgs": ["-mllvm"]}', "raw LLVM options"),
        ('{"extraAllowedArgs": ["-ivfsoverlay"]}', "include paths and files"),
        ('{"extraAllowedArgs": ["-Xarch_wasm32"]}', "not filtered"),
        ('{"extraAllowedArgs": ["--include-directory=/etc"]}', "reads a file"),
        ('{"extraAllowedArgs": ["--output=x.js"]}', "output file is fixed"),
        ('{"extraAllowedArgs": ["-fuse-ld=/tmp/ld"]}', "another linker"),
        ('{"extraAllowedArgs": ["-fsanitize-coverage-allowlist=x"]}', "reads a file"),
    ],
)
def test_path_reading_extra_args_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value)


def test_command_line_order_forces_output_last() -> None:
    request = CompileRequest(code="x", language="cpp", args=("-O2",))
    assert compiler_argv("em++", request, ("-sMODULARIZE=1",)) == [
        "em++",
        "main.cpp",
        "-sMODULARIZE=1",
        "-O2",
        "-o",
        "app.js",
    ]


@pytest.mark.parametrize(
    ("kind", "language"),
    [("", "c"), ("c", "c"), ("cpp", "cpp"), ("cc", "cpp"), ("c++", "cpp"), ("C++", "cpp")],
)
def test_types(kind: str, language: str) -> None:
    assert parse_request({"code": "int x;", "type": kind}).language == language


def test_type_defaults_to_c_and_args_to_empty() -> None:
    assert parse_request({"code": "int x;"}) == CompileRequest("int x;", "c", ())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({}, '"code" must be a string'),
        ({"code": 5}, '"code" must be a string'),
        ({"code": "  "}, '"code" must not be empty'),
        ({"code": "x", "type": "rust"}, '"type" must be one of'),
        ({"code": "x", "type": 3}, '"type" must be a string'),
        ({"code": "x", "args": "-O2"}, '"args" must be a list of strings'),
        ({"code": "x", "args": [1]}, '"args" must be a list of strings'),
        ({"code": "x", "extra": 1}, "unknown field(s): extra"),
        ({"code": "x", "args": ["-I/"]}, "'-I/' is not allowed"),
        (
            {"code": "int x; // \ud800"},
            "\"code\" contains a lone surrogate ('\\ud800' at character 10)",
        ),
        ({"code": "x", "args": ["-O2\udfff"]}, "argument 1 contains a lone surrogate"),
    ],
)
def test_bad_requests(body: object, message: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body)
    assert message in str(info.value)


# Tokens a hostile client might try, mixed with every allowed prefix.
_PIECES = st.sampled_from(
    [
        "-O2",
        "-g",
        "--preload-file",
        "--embed-file",
        "--source-map-base",
        "--preload-file=",
        "--embed-file=",
        "-sEXPORTED_FUNCTIONS=",
        "-sEXPORTED_RUNTIME_METHODS=",
        "-sENVIRONMENT=",
        "@",
        "/",
        "..",
        "../",
        "./",
        "~",
        "/etc/passwd",
        "a",
        "_main",
        "[",
        "]",
        ",",
        "@/",
        "data",
        ".",
        "-I",
        "\\",
        "%2e%2e",
        "$HOME",
    ]
)
_ARG = st.lists(_PIECES, min_size=1, max_size=5).map("".join)


def _paths_named(args: tuple[str, ...]) -> list[str]:
    """Every host path an accepted argument list makes emcc read."""
    paths = []
    pending = False
    for arg in args:
        if pending:
            paths.append(arg.partition("@")[0])
            pending = False
        elif arg in PATH_FLAGS:
            pending = True
        elif arg.partition("=")[0] in PATH_FLAGS:
            paths.append(arg.partition("=")[2].partition("@")[0])
    return paths


def test_the_standard_policy_accepts_what_the_seed_does() -> None:
    assert SEED.flags <= STANDARD.flags
    assert set(SEED.settings) <= set(STANDARD.settings)
    values = ["0", "1", "2", "web", "web,worker", "[_main,_add]", "[callMain]", "x"]
    for name, rule in SEED.settings.items():
        for value in values:
            if rule.check(value):
                assert STANDARD.settings[name].check(value), (name, value)


# The standard policy (the default here) accepts everything the seed's does, so this covers
# both; tests/test_policy_standard.py has the standard policy's own property tests.
@settings(max_examples=3000, deadline=None)
@given(st.lists(_ARG, max_size=6))
def test_no_accepted_argument_list_reaches_outside_the_job_dir(args: list[str]) -> None:
    try:
        accepted = check_args(args)
    except RequestError:
        return
    job = "/job"
    for arg in accepted:
        assert not arg.startswith("@"), arg
        assert "@/" not in arg.partition("=")[2] or arg.startswith("--"), arg
        for character in "$~\\":
            assert character not in arg, arg
    for path in _paths_named(accepted):
        resolved = os.path.normpath(os.path.join(job, path))
        assert resolved == job or resolved.startswith(job + "/"), (path, accepted)


@pytest.mark.parametrize(
    "arg",
    [
        "-DX=" + chr(0xDFFF),
        "-DX=" + chr(0xDCFF),
        "-Wno-" + chr(0xD800),
        "-sEXPORT_NAME=" + chr(0xDFFF),
    ],
)
@pytest.mark.parametrize("policy", POLICIES)
def test_an_argument_with_a_lone_surrogate_is_refused_by_its_position(
    arg: str, policy: Policy
) -> None:
    """No UTF-8 form: it would fail when the process starts (or, for \\udc80-\\udcff, reach
    emcc as raw bytes), after the request was admitted. Refused before anything runs."""
    with pytest.raises(RequestError, match=r"^argument 2 contains a lone surrogate \('\\ud"):
        check_args(["-O2", arg], policy)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"main.c/x.h": "int x;"}, "'main.c' is the main source, a file, so it cannot be"),
        ({"app.worker.js/x.h": ""}, "the service writes 'app.worker.js' itself"),
        ({"app.js/a/b.h": ""}, "the service writes 'app.js' itself"),
        ({"app.data/x": ""}, "the service writes 'app.data' itself"),
        ({"x.h": "", "x.h/y.h": ""}, "'x.h' is a file"),
    ],
)
def test_a_layout_that_cannot_exist_is_a_400_naming_the_path(
    files: dict[str, str], message: str
) -> None:
    body = json.dumps({"code": "int main(void) { return 0; }", "files": files}).encode()
    with pytest.raises(RequestError, match=re.escape(message)) as refused:
        from_json(body)
    assert str(refused.value).startswith(f"file {sorted(files)[-1]!r} is not allowed: ")


def test_a_layout_the_filesystem_refuses_is_a_400_naming_the_path(tmp_path: Path) -> None:
    """The second lock, behind the checks above: whatever the job dir cannot hold is the
    request's fault, named by its path (here a request the body checks would have refused)."""
    compiler = Compiler(
        emcc="emcc",
        emxx="em++",
        default_args=(),
        node_path="",
        jobs_dir=tmp_path,
        store=LocalStore(ArtifactStore(tmp_path / "artifacts"), None, 3, 30),
        limits=Limits(60, 60, 65536, Caps(1 << 30, 1.0, 256)),
        driver=None,
        sandbox=None,
    )
    request = CompileRequest("int main(void) { return 0; }", "c", (), (("main.c/x.h", b""),))
    compiler._make_dirs(tmp_path / "job", multi_unit=False)
    with pytest.raises(RequestError, match=r"^file 'main.c/x.h' cannot be laid out in the job"):
        compiler._write_files(tmp_path / "job", request)
