"""No 5xx for anything a client sends to POST /compile: the issue's two cases, then the class.

The property test sends arbitrary bytes and arbitrary JSON (deep, wide, odd unicode, huge
numbers, wrong types in every field) to a real server and wants a JSON answer below 500 each
time. Most generated requests are refused before a compile; the few that pass compile for real.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emcc_trio.testing.harness import MakeServer

DEEP = 100_000  # the depth, far past Python's recursion limit
BODY_LIMIT = 256 * 1024  # room for the 200 kB deep body, small enough to keep 413s cheap

# Every code point, lone surrogates included (json.dumps writes them as "\udXXX" escapes).
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.text(ANY_CHAR, max_size=40)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats()
    | TEXT
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(TEXT, inner, max_size=6),
    max_leaves=40,
)
# Written out rather than generated as values: brackets and braces past the recursion limit,
# numbers past Python's 4300-digit limit for int(), exponents past a float's range.
RAW_BODIES = st.integers(min_value=900, max_value=20_000).flatmap(
    lambda n: st.sampled_from(
        [
            "[" * n + "]" * n,
            '{"a":' * n + "1" + "}" * n,
            '{"code": ' + "[" * n + "]" * n + "}",
            '{"code": "x", "args": ' + "[" * n + "]" * n + "}",
            '{"code": ' + "9" * n * 5 + "}",
            '{"code": "x", "type": -1' + "0" * n * 5 + "}",
            f'{{"code": 1e{n}{n}, "args": [-1.5e-{n}{n}]}}',
        ]
    )
)
# Request-shaped objects: each field a right-typed value or any JSON at all, sometimes an
# unknown field. Source that passes the checks is mostly not C, so it fails fast in clang.
CODE = st.sampled_from(["int main(void) { return 0; }", "", " \n"]) | TEXT | JSON_VALUES
KIND = st.sampled_from(["c", "cpp", "C++", "cc", "", "rust"]) | TEXT | JSON_VALUES
ARGS = (
    st.lists(st.sampled_from(["-O2", "-g", "-sMODULARIZE=1", "--embed-file", "@x"]) | TEXT)
    | JSON_VALUES
)
SHAPED = st.fixed_dictionaries(
    {},
    optional={"code": CODE, "type": KIND, "args": ARGS, "colour": JSON_VALUES},
)


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as bytes: escaped, raw UTF-8 (surrogates passed through) or UTF-16."""
    text = json.dumps(draw(values), ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-16"]))
    return text.encode(encoding, "surrogatepass")


BODIES = st.one_of(
    st.binary(max_size=300),
    encoded(JSON_VALUES),
    encoded(SHAPED),
    encoded(SHAPED),
    RAW_BODIES.map(str.encode),
)
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "text/plain; charset=latin-1", "multipart/form-data; boundary=x"]
)


def assert_json_answer(response: httpx.Response) -> dict[str, Any]:
    """A JSON `{"ok": ...}` below 500; a refusal says why."""
    assert response.status_code < 500, response.text[:2000]
    assert response.headers["content-type"] == "application/json", response.text[:2000]
    body: dict[str, Any] = response.json()
    assert isinstance(body["ok"], bool)
    if not body["ok"]:
        assert isinstance(body["error"], str)
        assert body["error"]
    return body


def test_lone_surrogate_in_code_is_a_400_naming_it(make_server: MakeServer) -> None:
    server = make_server(maxBodyBytes=BODY_LIMIT)
    with server.client() as client:
        response = client.post(
            "/compile",
            content=b'{"code": "int main(){return 0;} // \\ud800"}',
            headers={"content-type": "application/json"},
        )
    body = assert_json_answer(response)
    assert response.status_code == 400
    assert body == {
        "ok": False,
        "error": "\"code\" contains a lone surrogate ('\\ud800' at character 25): "
        "the source must be valid UTF-8",
    }
    server.assert_clean()


def test_json_nested_past_the_recursion_limit_is_a_400(make_server: MakeServer) -> None:
    server = make_server(maxBodyBytes=BODY_LIMIT)
    with server.client() as client:
        for body in (b"[" * DEEP + b"]" * DEEP, b'{"code": ' + b"[" * DEEP + b"]" * DEEP + b"}"):
            response = client.post("/compile", content=body)
            assert assert_json_answer(response) == {
                "ok": False,
                "error": "the body is nested too deeply to be a compile request",
            }
            assert response.status_code == 400
        # The server is still whole: the next request is answered as usual.
        assert client.get("/healthz").text == "ok"


def fuzzing(examples: int) -> settings:
    """Hypothesis against a live server: the same examples every run, no deadline (a compile
    takes what it takes), no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def test_no_body_gets_a_5xx(make_server: MakeServer) -> None:
    """Arbitrary bytes and JSON to POST /compile: always a JSON answer below 500."""
    server = make_server(maxBodyBytes=BODY_LIMIT)
    statuses: set[int] = set()

    @fuzzing(400)
    @given(body=BODIES, content_type=CONTENT_TYPES)
    @example(body=b'{"code": "int main(){return 0;} // \\ud800"}', content_type=None)
    @example(body=b'{"code": "x", "args": ["-O2\\udfff"]}', content_type=None)
    @example(body=b"[" * 5000 + b"]" * 5000, content_type="application/json")
    @example(body=b'{"code": ' + b"9" * 5000 + b"}", content_type=None)
    @example(body=b'{"code": 1e999, "type": NaN, "args": -Infinity}', content_type=None)
    @example(body=b"\xed\xa0\x80", content_type=None)
    # A real compile every run (which generated bodies reach one varies between runs).
    @example(body=b'{"code": "int main(void) { return 0; }", "type": "c"}', content_type=None)
    def check(body: bytes, content_type: str | None) -> None:
        headers = {} if content_type is None else {"content-type": content_type}
        response = client.post("/compile", content=body, headers=headers)
        assert_json_answer(response)
        statuses.add(response.status_code)

    with server.client() as client:
        check()
    # The run reached the parser's refusals and real compiles, not only one kind of answer.
    assert {200, 400} <= statuses, statuses
    server.assert_clean(timeout=10)


# ---- allowed-shaped arguments and project layouts ---------------------------------------------
# The class of the two 500s: input that passes every shape check (so it reaches the job
# dir and the process start) but holds what the filesystem or the process cannot take.

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
ODD = st.text(ANY_CHAR, min_size=1, max_size=10)  # surrogates, controls, any plane
SOME_TEXT = st.sampled_from(["1", "x", "é", "\u202e", "\udfff", "\ud800\udc00", " "]) | ODD
SETTINGS = st.sampled_from(
    [
        "EXPORT_NAME",
        "EXPORTED_FUNCTIONS",
        "EXPORTED_RUNTIME_METHODS",
        "ENVIRONMENT",
        "MALLOC",
        "INITIAL_MEMORY",
        "TOTAL_STACK",
        "ASSERTIONS",
        "SINGLE_FILE",
    ]
)
SETTING_VALUES = st.sampled_from(["1", "0", "web", "[_main]", "callMain", "64KB", "16MB"]) | ODD
PATH_VALUES = st.sampled_from(["x.h", "lib", "lib/util.c", "a@/b", "data.txt@/é"]) | ODD
ALLOWED_FLAGS = st.sampled_from(
    ["-O0", "-O2", "-g", "-w", "-flto", "-std=c11", "-pthread", "-sSINGLE_FILE=1", "-Wall"]
)
SHAPED_ARG = st.one_of(
    ALLOWED_FLAGS,
    st.builds(lambda n, v: f"-D{n}={v}", IDENT, SOME_TEXT),
    st.builds(lambda n: f"-D{n}", IDENT),
    st.builds(lambda n: f"-U{n}", IDENT),
    st.builds(lambda w, v: f"-W{w}={v}", st.sampled_from(["error", "frame-larger-than"]), ODD),
    st.builds(lambda n, v: f"-s{n}={v}", SETTINGS, SETTING_VALUES),
    st.builds(
        lambda f, v: f"{f}={v}", st.sampled_from(["--embed-file", "--source-map-base"]), PATH_VALUES
    ),
)
# Flags whose value is the next argument: drawn as a pair.
SPLIT_ARGS = st.one_of(
    st.tuples(st.just("-D"), st.builds(lambda n, v: f"{n}={v}", IDENT, SOME_TEXT)),
    st.tuples(st.just("-s"), st.builds(lambda n, v: f"{n}={v}", SETTINGS, SETTING_VALUES)),
    st.tuples(st.sampled_from(["--embed-file", "--preload-file"]), PATH_VALUES),
)
SHAPED_ARGS = st.lists(
    st.one_of(SHAPED_ARG.map(lambda a: [a]), SPLIT_ARGS.map(list)), max_size=4
).map(lambda groups: [arg for group in groups for arg in group])

# Path components: the names the service and emcc write, the main sources, dots, flag-like
# names, and odd unicode.
USUAL_COMPONENTS = st.sampled_from(["a", "lib", "x.h", "util.c", "data.txt"])
COMPONENT = (
    USUAL_COMPONENTS
    | st.sampled_from(
        [
            "a",
            "lib",
            "x.h",
            "util.c",
            "main.c",
            "main.cpp",
            "app.js",
            "app.wasm",
            "app.worker.js",
            "app.data",
            "app.wasm.map",
            ".tmp",
            "..",
            ".",
            "-o",
            "@x",
            "a" * 300,
        ]
    )
    | st.text(ANY_CHAR, min_size=1, max_size=6)
)
PATHS = st.lists(COMPONENT, min_size=1, max_size=5).map("/".join)
CONTENTS = (
    st.sampled_from(["int x;\n", '#include "x.h"\n', "", "int f(void) { return 1; }\n"]) | ODD
)


def _with_a_clash(files: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """Sometimes a path below one of the files: a file where a directory must go."""
    if not files:
        return st.just(files)
    below = st.tuples(st.sampled_from(sorted(files)), COMPONENT, CONTENTS)
    return st.one_of(st.just(files), below.map(lambda t: {**files, f"{t[0]}/{t[1]}": t[2]}))


LAYOUTS = st.dictionaries(PATHS, CONTENTS, max_size=4).flatmap(_with_a_clash)
MAIN_SOURCES = st.sampled_from(
    ["int main(void) { return 0; }", '#include "x.h"\nint main(void) { return 0; }']
)


LAYOUT_BODIES = st.one_of(
    st.fixed_dictionaries({"code": MAIN_SOURCES, "args": SHAPED_ARGS, "files": LAYOUTS}),
    # Without "code": the layout's main.c is the main source.
    st.fixed_dictionaries(
        {
            "args": SHAPED_ARGS,
            "files": LAYOUTS.map(lambda files: {"main.c": "int main(void) { return 0; }", **files}),
        }
    ),
)


def multipart(body: dict[str, Any]) -> tuple[bytes, str]:
    """The same request as multipart/form-data, names and texts as raw bytes (a lone surrogate
    becomes the bytes no UTF-8 decoder takes)."""
    boundary = "emcc-trio-property"
    parts = []

    def part(name: str, value: str, filename: str | None = None) -> None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n"
        parts.append(
            head.encode("utf-8", "surrogatepass") + value.encode("utf-8", "surrogatepass") + b"\r\n"
        )

    if "code" in body:
        part("code", body["code"])
    for arg in body["args"]:
        part("args", arg)
    for path, text in body["files"].items():
        part(path, text, filename="f")
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_no_argument_or_layout_gets_a_5xx(make_server: MakeServer) -> None:
    """Allowed-shaped arguments and project layouts with odd unicode, lone surrogates, nested
    and clashing paths and reserved names, as JSON and as multipart: a JSON answer below 500
    every time, and nothing left behind."""
    server = make_server(maxBodyBytes=BODY_LIMIT)
    statuses: set[int] = set()

    @fuzzing(150)
    @given(body=LAYOUT_BODIES, as_json=st.booleans())
    # The three 500s.
    @example(
        body={"code": "int main(){return 0;}", "args": [], "files": {"main.c/x.h": "int x;"}},
        as_json=True,
    )
    @example(
        body={
            "code": "int main(){return 0;}",
            "args": [],
            "files": {"app.worker.js/x.h": "int x;"},
        },
        as_json=True,
    )
    @example(
        body={"code": "int main(){return 0;}", "args": ["-DX=\udfff"], "files": {}}, as_json=True
    )
    # A real compile every run, with a project and arguments of each shape.
    @example(
        body={
            "code": '#include "lib/x.h"\nint main(void) { return X; }',
            "args": ["-DY=é", "-D", "Z=1", "-Wall", "-s", "ASSERTIONS=1", "--embed-file", "lib"],
            "files": {"lib/x.h": "#define X 0\n"},
        },
        as_json=True,
    )
    def check(body: dict[str, Any], as_json: bool) -> None:
        if as_json:
            content = json.dumps(body).encode()
            content_type = "application/json"
        else:
            content, content_type = multipart(body)
        response = client.post("/compile", content=content, headers={"content-type": content_type})
        assert_json_answer(response)
        statuses.add(response.status_code)

    with server.client() as client:
        check()
    assert {200, 400} <= statuses, statuses
    server.assert_clean(timeout=10)
