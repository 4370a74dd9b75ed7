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


def test_no_body_gets_a_5xx(make_server: MakeServer) -> None:
    """Arbitrary bytes and JSON to POST /compile: always a JSON answer below 500."""
    server = make_server(maxBodyBytes=BODY_LIMIT)
    statuses: set[int] = set()

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
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
