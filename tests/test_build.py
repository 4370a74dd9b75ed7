"""The pure parts of multi-unit builds: which arguments a compile step takes, what skips
`emcc --cflags`, reading clang's dependency files, and when a manifest still holds."""

from __future__ import annotations

import pytest

from emcc_trio.compile.build import (
    Manifest,
    compile_args,
    decode_symbols,
    project_deps,
    split_for_cflags,
    unit_key,
)

pytestmark = pytest.mark.unit


def test_a_compile_step_drops_what_only_the_link_reads() -> None:
    args = [
        "-sINVOKE_RUN=0",
        "-sUSE_PTHREADS=1",
        "-s",
        "MODULARIZE=1",
        "-s",
        "STRICT=1",
        "--preload-file",
        "data.txt",
        "--embed-file=x.bin",
        "-lembind",
        "--bind",
        "-O2",
        "-DX=1",
        "-pthread",
    ]
    assert compile_args(args) == ["-sUSE_PTHREADS=1", "-s", "STRICT=1", "-O2", "-DX=1", "-pthread"]


def test_macros_includes_and_warnings_skip_emcc_cflags_in_order() -> None:
    args = ["-O2", "-DA=1", "-I", "inc", "-Wall", '-DV="1.0"', "-flto", "-Isrc", "-std=c11", "-w"]
    seen, passthrough = split_for_cflags(args)
    assert seen == ["-O2", "-flto"]
    assert passthrough == ["-DA=1", "-I", "inc", "-Wall", '-DV="1.0"', "-Isrc", "-std=c11", "-w"]


def test_dependency_files_name_project_files_only() -> None:
    depfile = (
        ".obj/0.o: src/a.c /usr/share/emscripten/cache/sysroot/include/stdio.h \\\n"
        "  inc/k.h src/../inc/other.h /job/lib/x.h\n"
    )
    assert project_deps(depfile, ["/job"]) == ["src/a.c", "inc/k.h", "inc/other.h", "lib/x.h"]
    assert project_deps(".obj/0.o: ../outside.h\n", ["/job"]) is None
    assert project_deps("not a depfile", ["/job"]) is None


def test_a_manifest_holds_while_every_included_file_is_the_same() -> None:
    manifest = Manifest("d" * 64, {"src/a.c": "1", "inc/k.h": "2"})
    assert manifest.holds_for({"src/a.c": "1", "inc/k.h": "2", "src/b.c": "3"})
    assert not manifest.holds_for({"src/a.c": "1", "inc/k.h": "changed"})
    assert not manifest.holds_for({"src/a.c": "1"})
    assert Manifest.decode(manifest.encode()) == manifest
    assert Manifest.decode(b"garbage") is None


def test_a_manifest_keeps_its_objects_symbols_when_they_have_their_shape() -> None:
    symbols = {"defs": ["main"], "undefs": ["printf"], "commons": []}
    manifest = Manifest("d" * 64, {"src/a.c": "1"}, symbols)
    assert Manifest.decode(manifest.encode()) == manifest
    body = manifest.encode().replace(b'"printf"', b"7")
    assert Manifest.decode(body) == Manifest("d" * 64, {"src/a.c": "1"})
    bad: list[object] = [None, [], {"defs": []}, {**symbols, "extra": []}, {**symbols, "defs": "x"}]
    for value in bad:
        assert decode_symbols(value) is None
    assert decode_symbols(symbols) == symbols


def test_a_unit_key_changes_with_everything_that_decides_the_object() -> None:
    base = ("v", "emcc", ["-O2"], "src/a.c", b"int a;", ["main.c", "src/a.c"], "/job")
    key = unit_key(*base)
    for index, other in enumerate(
        ["v2", "em++", ["-O0"], "src/b.c", b"int b;", ["main.c", "src/a.c", "x.h"], "/else"]
    ):
        changed = list(base)
        changed[index] = other
        assert unit_key(*changed) != key, index  # type: ignore[arg-type]


def test_flags_that_only_look_like_settings_are_kept() -> None:
    assert compile_args(["-std=c11", "-sEXIT_RUNTIME=1", "-save-temps"]) == [
        "-std=c11",
        "-save-temps",
    ]


def test_objects_of_one_client_serve_no_other_with_a_client_scope() -> None:
    base = ("v", "emcc", ["-O2"], "src/a.c", b"int a;", ["main.c", "src/a.c"], "/job")
    assert unit_key(*base, scope="token:a") != unit_key(*base, scope="token:b")
    assert unit_key(*base) == unit_key(*base, scope="")
