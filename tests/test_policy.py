"""The argument policy and request validation: tables plus a property test."""

from __future__ import annotations

import os.path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emcc_trio.policy import (
    PATH_FLAGS,
    CompileRequest,
    RequestError,
    check_args,
    compiler_argv,
    parse_request,
)

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
    (["-I", "."], "include paths"),
    (["-include", "/etc/passwd"], "reads a file"),
    (["-isystem/usr"], "include paths"),
    (["--js-library", "lib.js"], "reads a file"),
    (["--pre-js", "pre.js"], "reads a file"),
    (["--post-js=post.js"], "reads a file"),
    (["-Wl,--whole-archive"], "linker"),
    (["-Xclang", "-load"], "raw clang"),
    (["-L/lib"], "library paths"),
    (["-s", "MODULARIZE=1"], "only the listed"),
    (["-sMODULARIZE=2"], "MODULARIZE takes 0 or 1"),
    (["-sMODULARIZE"], "only the listed"),
    (["-sINVOKE_RUN=yes"], "INVOKE_RUN takes"),
    (["-sEXPORTED_FUNCTIONS=@/etc/passwd"], "EXPORTED_FUNCTIONS takes"),
    (["-sEXPORTED_FUNCTIONS=[main]"], "EXPORTED_FUNCTIONS takes"),
    (["-sEXPORTED_RUNTIME_METHODS=@x.txt"], "EXPORTED_RUNTIME_METHODS takes"),
    (["-sEXPORT_NAME=Foo"], "only the listed"),
    (["-sSINGLE_FILE=1"], "only the listed"),
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
    (["-fplugin=/tmp/x.so"], "not on the allowlist"),
    (["main.c"], "not on the allowlist"),
    (["/etc/passwd"], "not on the allowlist"),
    (["-x", "c"], "not on the allowlist"),
    (["--config=/etc/x"], "reads a file"),
]


@pytest.mark.parametrize("args", ALLOWED, ids=lambda a: " ".join(a))
def test_allowed_args_pass_unchanged(args: list[str]) -> None:
    assert check_args(args) == tuple(args)


@pytest.mark.parametrize(("args", "reason"), BLOCKED, ids=lambda a: str(a))
def test_blocked_args_are_named_with_a_reason(args: list[str], reason: str) -> None:
    with pytest.raises(RequestError) as info:
        check_args(args)
    message = str(info.value)
    assert reason in message
    assert args[0] in message


def test_too_many_args() -> None:
    with pytest.raises(RequestError, match="too many args"):
        check_args(["-O2"] * 65)


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
        ({"code": "x", "args": ["-O2\udfff"]}, "'-O2\\udfff' is not allowed"),
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
