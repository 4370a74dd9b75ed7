"""Real open-source libraries, as upstream lays them out (Debian's source packages, unpatched:
emcc_trio.testing.libraries), built through the service with a small driver each and run under
node: an include/ + src/ C library (libyaml), one of over 64 files (zstd), one over 1 MiB
(zlib), a C++ library (fmt), and Lua (60 files) for rebuilds and the CLI. Each encoding gets
one: JSON, tar.gz, zip, multipart, and `emcc-trio build`."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from emcc_trio.compile.build import Manifest
from emcc_trio.testing.harness import Server, build_units, server_config, start_server
from emcc_trio.testing.libraries import LIBRARIES, Library, fetch
from emcc_trio.testing.programs import run_node

RUN_MAIN = "-sEXPORTED_RUNTIME_METHODS=[callMain]"


@pytest.fixture(scope="module")
def library_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("libraries")
    server = start_server(workdir, server_config(workdir, jobTimeoutSeconds=300))
    try:
        yield server
    finally:
        server.stop()


def main_name(library: Library) -> str:
    return "main.cpp" if library.build.language == "cpp" else "main.c"


def project(library: Library) -> tuple[list[tuple[str, bytes]], list[str], list[str]]:
    """(files with the driver as the main source, `sources` patterns, args)."""
    tree = fetch(library.name)
    files = [*library.files(tree), (main_name(library), library.build.driver_code().encode())]
    return files, list(library.build.sources), [*library.build.compile_args(), RUN_MAIN]


def run_built(server: Server, body: dict[str, Any], out: Path) -> str:
    """Fetch the artifact of a successful answer and run its main under node."""
    assert body["ok"] is True, body.get("error")
    out.mkdir(parents=True, exist_ok=True)
    with server.client() as client:
        for key, name in (("js", "app.js"), ("wasm", "app.wasm")):
            got = client.get(body[key])
            assert got.status_code == 200
            (out / name).write_bytes(got.content)
    done = run_node(out)
    assert done.returncode == 0, done.stderr
    return done.stdout


def post_json(
    server: Server, files: list[tuple[str, bytes]], sources: list[str], args: list[str]
) -> httpx.Response:
    body = {
        "files": {path: content.decode() for path, content in files},
        "sources": sources,
        "args": args,
    }
    with server.client(600) as client:
        return client.post("/compile", json=body)


def tar_gz(files: list[tuple[str, bytes]], top: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, content in files:
            info = tarfile.TarInfo(top + path)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def zip_of(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files:
            archive.writestr(path, content)
    return buffer.getvalue()


def post_archive(
    server: Server, body: bytes, content_type: str, sources: list[str], args: list[str]
) -> httpx.Response:
    params = httpx.QueryParams({"args": args, "sources": sources})
    with server.client(600) as client:
        return client.post(
            "/compile", params=params, content=body, headers={"Content-Type": content_type}
        )


def test_an_include_src_library_as_json(library_server: Server, tmp_path: Path) -> None:
    library = LIBRARIES["libyaml"]
    files, sources, args = project(library)
    assert any(path.startswith("include/") for path, _ in files)
    response = post_json(library_server, files, sources, args)
    assert run_built(library_server, response.json(), tmp_path) == library.build.expected_stdout


def test_a_library_of_over_64_files_as_a_tar_gz(library_server: Server, tmp_path: Path) -> None:
    library = LIBRARIES["libzstd"]
    files, sources, args = project(library)
    assert len(files) > 64
    # As a release tarball has it: everything below one top-level directory (stripped).
    archive = tar_gz(files, top="zstd-1.5.4/")
    response = post_archive(library_server, archive, "application/gzip", sources, args)
    assert run_built(library_server, response.json(), tmp_path) == library.build.expected_stdout


def test_a_library_of_over_1_mib_as_a_zip(library_server: Server, tmp_path: Path) -> None:
    library = LIBRARIES["zlib"]
    files, sources, args = project(library)
    assert sum(len(content) for _, content in files) > 1024 * 1024
    response = post_archive(library_server, zip_of(files), "application/zip", sources, args)
    assert run_built(library_server, response.json(), tmp_path) == library.build.expected_stdout


def test_a_cpp_library_as_multipart(library_server: Server, tmp_path: Path) -> None:
    library = LIBRARIES["fmtlib"]
    files, sources, args = project(library)
    fields = [("sources", pattern) for pattern in sources] + [("args", arg) for arg in args]
    uploads = [(path, (path, content)) for path, content in files]
    with library_server.client(600) as client:
        response = client.post("/compile", data=dict(_grouped(fields)), files=uploads)
    assert run_built(library_server, response.json(), tmp_path) == library.build.expected_stdout


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def test_a_rebuild_compiles_only_what_changed(library_server: Server, tmp_path: Path) -> None:
    """Lua's 32 units: a cold build compiles all of them; after a change to one unit only that
    one is compiled (the others come from the object cache), and the result still runs."""
    library = LIBRARIES["lua5.4"]
    files, sources, args = project(library)
    before = build_units(library_server.url)
    first = post_json(library_server, files, sources, args)
    assert run_built(library_server, first.json(), tmp_path / "cold") == (
        library.build.expected_stdout
    )
    cold = build_units(library_server.url)
    units = len(library.source_paths(fetch(library.name))) + 1  # and the driver
    assert cold["compiled"] - before["compiled"] == units
    # Each object is kept with the symbols the link read from it, for the next link to use.
    kept = library_server.workdir / "cache" / "objects"
    manifests = [Manifest.decode(path.read_bytes()) for path in kept.glob("m-*")]
    with_symbols = [m for m in manifests if m is not None and m.symbols is not None]
    assert len(with_symbols) >= units
    assert any("luaL_newstate" in m.symbols["defs"] for m in with_symbols if m.symbols)
    changed = [
        (path, content + b"\n/* edited */\n" if path == "src/lstrlib.c" else content)
        for path, content in files
    ]
    second = post_json(library_server, changed, sources, args)
    assert second.json()["cached"] is False
    assert run_built(library_server, second.json(), tmp_path / "warm") == (
        library.build.expected_stdout
    )
    warm = build_units(library_server.url)
    assert warm["compiled"] - cold["compiled"] == 1
    assert warm["reused"] - cold["reused"] == units - 1
    library_server.assert_clean(timeout=5)


def test_every_units_diagnostics_come_back(library_server: Server) -> None:
    files = [
        ("main.c", b"int a(void); int b(void);\nint main(void) { return a() + b(); }\n"),
        ("src/a.c", b"int a(void) { return 1 }\n"),
        ("src/b.c", b"int b(void) { return undeclared; }\n"),
    ]
    response = post_json(library_server, files, ["src/*.c"], [])
    assert response.status_code == 400
    errors = {d["file"] for d in response.json()["diagnostics"] if d["severity"] == "error"}
    assert errors == {"src/a.c", "src/b.c"}
    library_server.assert_clean(timeout=5)


@pytest.mark.parametrize("opt", [["-O2"], ["-O0"]])
def test_separate_steps_build_what_one_emcc_call_builds(
    library_server: Server, tmp_path: Path, opt: list[str]
) -> None:
    """The same wasm and JS, byte for byte, as `emcc` given every source at once: with
    wasm-opt (-O2), and with the launcher's own strip of the producers section (-O0), after
    a link that started early; then again after an edit of one unit, whose rebuild links
    with the other objects' symbols as the first build's link read them."""
    files = {
        "main.c": b'#include "inc/k.h"\nint f(void);\nint main(void) { return f() + K; }\n',
        "inc/k.h": b"#define K 2\n",
        "lib/f.c": b'#include "k.h"\nint f(void) { return K * 20; }\n',
        "lib/g.cpp": b'extern "C" int g(void) { return 7; }\n',
    }
    args = [*opt, "-Iinc"]
    config = json.loads((Path(__file__).parents[1] / "config.json").read_text())
    env = {**os.environ, "NODE_PATH": "/usr/share/nodejs"}
    files_in_order = ["main.c", "lib/f.c", "lib/g.cpp"]
    for edit in ("", "int h(void) { return 3; }\n"):
        files["lib/f.c"] += edit.encode()
        before = build_units(library_server.url)
        response = post_json(library_server, list(files.items()), ["lib/*.c", "lib/*.cpp"], args)
        body = response.json()
        assert body["ok"] is True, body
        done = build_units(library_server.url)
        assert done["compiled"] - before["compiled"] == (1 if edit else 3)
        with library_server.client() as client:
            served = client.get(body["wasm"]).content
            served_js = client.get(body["js"]).content
        for path, content in files.items():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_bytes(content)
        subprocess.run(
            ["emcc", *files_in_order, *config["defaultArgs"], *args, "-o", "app.js"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
        )
        assert (tmp_path / "app.wasm").read_bytes() == served
        assert (tmp_path / "app.js").read_bytes() == served_js


def build_cli(
    tree: Path, server: Server, out: Path, options: list[str], args: list[str]
) -> subprocess.CompletedProcess[str]:
    """`emcc-trio build TREE` against `server`, writing to `out`."""
    command = [sys.executable, "-m", "emcc_trio", "build", str(tree), "--server", server.url]
    return subprocess.run(
        [*command, "-o", str(out), *options, "--", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_cli_builds_a_directory(library_server: Server, tmp_path: Path) -> None:
    """What .gitignore and the usual build directories hold is not sent: each holds a file
    that would break the build."""
    library = LIBRARIES["lua5.4"]
    tree = tmp_path / "lua"
    shutil.copytree(fetch(library.name), tree)
    (tree / "main.c").write_text(library.build.driver_code())
    broken = "this is not C;\n"
    for folder in ("build", "ignored", ".hidden"):
        (tree / "src" / folder).mkdir()
        (tree / "src" / folder / "broken.c").write_text(broken)
    (tree / "src" / "scratch.c").write_text(broken)
    (tree / ".gitignore").write_text("ignored/\nscratch.c\n")
    out = tmp_path / "out"
    done = build_cli(
        tree,
        library_server,
        out,
        ["--sources", "src/*.c", "!src/lua.c", "!src/luac.c"],
        [*library.build.compile_args(), RUN_MAIN],
    )
    assert done.returncode == 0, done.stderr
    assert run_node(out).stdout == library.build.expected_stdout
    (tree / "src" / "lapi.c").write_text((tree / "src" / "lapi.c").read_text() + "\nint broken(\n")
    failed = build_cli(
        tree, library_server, out, ["--sources", "src/lapi.c"], library.build.compile_args()
    )
    assert failed.returncode == 1
    assert f"{tree / 'src' / 'lapi.c'}:" in failed.stderr
    assert ": error: " in failed.stderr


def test_hostile_archives_are_refused_with_nothing_left(library_server: Server) -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.c", "int main(void) { return 0; }\n")
        archive.writestr("zeros.h", bytes(64 << 20))
    refused = post_archive(library_server, bomb.getvalue(), "application/zip", [], [])
    assert refused.status_code == 413
    assert "'zeros.h' unpacks to more than" in refused.json()["error"]
    linked = io.BytesIO()
    with tarfile.open(fileobj=linked, mode="w") as archive:
        main = tarfile.TarInfo("main.c")
        code = b'#include "passwd"\nint main(void) { return 0; }\n'
        main.size = len(code)
        archive.addfile(main, io.BytesIO(code))
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    answer = post_archive(library_server, linked.getvalue(), "application/x-tar", [], [])
    assert answer.status_code == 400
    assert answer.json()["error"] == "archive member 'passwd' is a link"
    library_server.assert_clean(timeout=5)
