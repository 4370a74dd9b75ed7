"""The pure parts of several-file compiles: clang's text into diagnostics, the path policy of
`files`, and the encodings' shared assembly (no server: the real compiles are in
test_projects.py)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emcc_trio.api.bodies import assemble, from_form, from_raw
from emcc_trio.compile.diagnostics import Diagnostic, human_text, parse
from emcc_trio.compile.sources import FileError, check_files
from emcc_trio.errors import RequestError

pytestmark = pytest.mark.unit

# What emcc 3.1.6 printed for a header error included from main.c, plus a link error.
CLANG_OUTPUT = """\
In file included from main.c:1:
./inc/bad.h:2:28: error: expected ';' after return statement
int broken(void) { return 1 }
                           ^
                           ;
main.c:3:11: warning: unused variable 'x' [-Wunused-variable]
main.c:4:1: fatal error: 'gone.h' file not found
main.c:2:5: note: previous definition is here
2 errors generated.
emcc: error: '/usr/bin/clang-14 -target wasm32-unknown-emscripten -fignore-exceptions \
-c main.c -o /tmp/emscripten_temp_x/main_0.o' failed (returned 1)
wasm-ld: error: main_0.o: undefined symbol: helper
error: undefined symbol: other (referenced by top-level compiled C/C++ code)
"""


def test_parse_reads_clang_and_linker_lines() -> None:
    assert parse(CLANG_OUTPUT) == [
        Diagnostic("inc/bad.h", 2, 28, "error", "expected ';' after return statement"),
        Diagnostic("main.c", 3, 11, "warning", "unused variable 'x' [-Wunused-variable]"),
        Diagnostic("main.c", 4, 1, "error", "'gone.h' file not found"),
        Diagnostic("main.c", 2, 5, "note", "previous definition is here"),
        Diagnostic(None, None, None, "error", "main_0.o: undefined symbol: helper"),
        Diagnostic(
            None,
            None,
            None,
            "error",
            "undefined symbol: other (referenced by top-level compiled C/C++ code)",
        ),
    ]


def test_human_text_drops_only_the_internal_command_line() -> None:
    text = human_text(CLANG_OUTPUT)
    assert "emcc: error: clang-14 failed (returned 1)\n" in text
    assert "wasm32-unknown-emscripten" not in text
    others = [line for line in text.splitlines() if not line.startswith("emcc: ")]
    assert others == [line for line in CLANG_OUTPUT.splitlines() if not line.startswith("emcc: ")]


@given(st.lists(st.tuples(st.text(max_size=40), st.binary(max_size=4)), max_size=5))
def test_accepted_paths_stay_inside_the_job_dir(files: list[tuple[str, bytes]]) -> None:
    try:
        checked = check_files(files)
    except FileError as exc:
        message = str(exc)
        assert message.startswith(("file ", "too many files")), message
        return
    for path, _ in checked:
        parts = PurePosixPath(path).parts
        assert not PurePosixPath(path).is_absolute()
        assert ".." not in parts
        assert all(not part.startswith((".", "-")) for part in parts)
        assert "\x00" not in path


def test_assemble_takes_main_from_files_and_checks_type() -> None:
    request = assemble(None, None, ["-O2"], [("main.cpp", b"int main(){}"), ("a.cc", b"")])
    assert (request.language, request.code, request.args) == ("cpp", "int main(){}", ("-O2",))
    assert request.files == (("a.cc", b""),)
    assert request.sources == ("main.cpp", "a.cc")
    with pytest.raises(
        RequestError, match=re.escape('"code" is missing and there is no main.c in "files"')
    ):
        assemble(None, "c", None, [("main.cpp", b"int main(){}")])
    with pytest.raises(RequestError, match=r"both main\.c and main\.cpp"):
        assemble(None, None, None, [("main.c", b"x"), ("main.cpp", b"y")])


def test_form_and_raw_refuse_what_they_cannot_mean() -> None:
    with pytest.raises(RequestError, match=r"unknown form field\(s\): util.h"):
        from_form({"util.h": ["int x;"]}, {})
    with pytest.raises(RequestError, match='"type" is given more than once'):
        from_raw(b"int main(void){}", {"type": ["c", "cpp"]})
    with pytest.raises(RequestError, match="the body is not UTF-8 text"):
        from_raw(b"\xff\xfe", {})
    with pytest.raises(RequestError, match=r"file 'main\.c' is given twice"):
        from_form({}, {"main.c": [b"a", b"b"]})
