"""The launcher's link steps (issue 18): its Python strip writes what llvm-objcopy writes, byte
for byte, on real emcc output; its early link waits for the build's word, links on "go" with
the same output as a link started late, and on anything else exits without linking; the
symbols it is given are the ones the link uses, and those it reads it writes out. The build's
driver gives that link the word and takes its status (also from a link that ended before
its word), and prints each unit's output in unit order; the launcher exits with
emcc's status once emscripten's exit handlers have run, from its source or from the .pyc the
jail's python compiled, which is what the server's jobs run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emcc_trio.compile.build import DRIVER, PLAN_FILE, STATUS_FILE, Unit, plan_json
from emcc_trio.compile.build import early_link as early_link_args
from emcc_trio.compile.jailside.emcc_launch import object_symbols, strip_sections
from emcc_trio.compile.launcher import COMPILED_NAME, PYTHON_FLAGS, SCRIPT, Launcher, install
from emcc_trio.config import Config
from emcc_trio.testing.harness import REPO, MakeServer
from emcc_trio.testing.programs import HELLO_C, RUN_ARTIFACT_JS, run_artifact

EMSCRIPTEN = "/usr/share/emscripten"
ENV = {"PATH": "/usr/bin:/bin", "NODE_PATH": "/usr/share/nodejs", "EMCC_SKIP_SANITY_CHECK": "1"}
UNITS = {
    "main.c": (
        '#include <stdio.h>\nint twice(int);\nint main(void) { printf("%d\\n", twice(21)); }\n'
    ),
    "twice.c": "int twice(int x) { return 2 * x; }\n",
}
OBJECTS = ("main.o", "twice.o")
PATTERNS = [".debug*", "producers"]
# As the service links: a web module that run_artifact.js runs under node.
LINK = ["main.o", "twice.o", *json.loads((REPO / "config.json").read_text())["defaultArgs"]]


def emcc(tmp: Path, *args: str) -> None:
    subprocess.run(["emcc", *args], cwd=tmp, env=ENV, check=True, capture_output=True)


def objcopy(wasm: Path, out: Path, patterns: list[str]) -> bytes:
    removals = [f"--remove-section={pattern}" for pattern in patterns]
    subprocess.run(["llvm-objcopy-14", str(wasm), str(out), *removals], check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main.o and twice.o, compiled with -g (so that there are debug sections to strip)."""
    tmp = tmp_path_factory.mktemp("objects")
    for name, code in UNITS.items():
        (tmp / name).write_text(code)
        emcc(tmp, "-g", "-c", name, "-o", name.replace(".c", ".o"))
    return tmp


@pytest.mark.parametrize("patterns", [PATTERNS, ["producers"], [".debug*"]])
def test_the_python_strip_writes_what_llvm_objcopy_writes(
    objects: Path, patterns: list[str]
) -> None:
    # Linked with -g and the producers section kept: emcc strips neither itself.
    emcc(objects, "-g", "-sEMIT_PRODUCERS_SECTION", "main.o", "twice.o", "-o", "linked.js")
    linked = (objects / "linked.wasm").read_bytes()
    assert b".debug_info" in linked
    assert b"producers" in linked
    expected = objcopy(objects / "linked.wasm", objects / "stripped.wasm", patterns)
    assert strip_sections(linked, patterns) == expected
    assert (b".debug_info" in expected) == (".debug*" not in patterns)
    assert (b"producers" in expected) == ("producers" not in patterns)


@given(st.binary(max_size=64))
def test_the_strip_reads_anything_without_raising(data: bytes) -> None:
    stripped = strip_sections(b"\0asm\1\0\0\0" + data, PATTERNS)
    assert stripped is None or stripped.startswith(b"\0asm\1\0\0\0")


def test_a_section_that_runs_past_the_end_is_left_to_llvm_objcopy() -> None:
    header = b"\0asm\1\0\0\0"
    assert strip_sections(header + b"\x00\x10\x04name", PATTERNS) is None
    assert strip_sections(b"\0asm\2\0\0\0", PATTERNS) is None
    assert (
        strip_sections(header + b"\x01\x01\x00", PATTERNS)
        == header + b"\x01\x81\x80\x80\x80\x00\x00"
    )


# Objects of every kind emcc makes: C and C++ (weak, inline, template and exception symbols),
# with debug sections, with threads (TLS, shared memory), relocatable (GOT imports).
SYMBOL_SOURCES = {
    "plain.c": (
        "#include <stdio.h>\nstatic int hidden(int x) { return x; }\nint counter;\n"
        "__attribute__((weak)) int maybe(void);\n__attribute__((weak)) int fallback(void)"
        ' { return 1; }\nint main(void) { printf("%d", hidden(maybe ? maybe() : 0)); }\n'
    ),
    "classes.cpp": (
        "#include <string>\n#include <vector>\n#include <stdexcept>\n"
        "template <class T> T twice(T x) { return x + x; }\n"
        "struct Shape { virtual ~Shape() {} virtual int sides() const = 0; };\n"
        "struct Square : Shape { int sides() const override { return 4; } };\n"
        "thread_local int per_thread;\n"
        'int run(int n) { std::vector<std::string> v(n, "x"); if (n < 0)'
        ' throw std::runtime_error("n"); Square s; return twice(n) + s.sides() +'
        " (int)v.size() + per_thread; }\n"
    ),
}
SYMBOL_FLAGS = [["-O0"], ["-O2", "-g"], ["-pthread"], ["-sRELOCATABLE"], ["-fexceptions"]]
SYSROOT_ARCHIVES = ["libc.a", "libc-mt.a", "libc++-except.a", "libc++abi.a", "pic/libc.a"]


def llvm_nm_symbols(files: list[Path]) -> dict[str, dict[str, set[str]]]:
    """emcc's record of llvm-nm's listing of `files` (parse_llvm_nm_symbols), by path."""
    code = (
        f"import sys, json; sys.path.insert(0, {EMSCRIPTEN!r}); from tools import building; "
        "found = building.parse_llvm_nm_symbols(sys.stdin.read()); "
        "print(json.dumps({f: {k: sorted(v[k]) for k in ('defs', 'undefs', 'commons')}"
        " for f, v in found.items()}))"
    )
    listing = subprocess.run(
        ["llvm-nm-14", "--print-file-name", *map(str, files)], capture_output=True, text=True
    ).stdout
    done = subprocess.run(
        ["/usr/bin/python3", "-c", code], input=listing, capture_output=True, text=True, check=True
    )
    parsed = json.loads(done.stdout)
    return {name: {k: set(v) for k, v in entry.items()} for name, entry in parsed.items()}


def test_the_launcher_reads_the_symbols_llvm_nm_lists(tmp_path: Path) -> None:
    """On objects compiled here and on every object of emscripten's own libc and libc++ (as
    built into the service's cache): where the launcher reads an object, it finds what emcc
    finds in llvm-nm's listing; it leaves to llvm-nm only objects it cannot read."""
    files = []
    for index, flags in enumerate(SYMBOL_FLAGS):
        for name, code in SYMBOL_SOURCES.items():
            (tmp_path / name).write_text(code)
            out = tmp_path / f"{index}-{name}.o"
            emcc(tmp_path, *flags, "-c", name, "-o", str(out))
            files.append(out)
    lib = Path(Config().emscripten_cache_dir) / "sysroot/lib/wasm32-emscripten"
    for archive in SYSROOT_ARCHIVES:
        folder = tmp_path / archive.replace("/", "-")
        folder.mkdir()
        subprocess.run(["llvm-ar-14", "x", str(lib / archive)], cwd=folder, check=True)
        files += sorted(folder.iterdir())
    listed = llvm_nm_symbols(files)
    unread = []
    for path in files:
        found = object_symbols(path.read_bytes())
        if found is None:
            unread.append(path)
            continue
        assert found.pop("parse_error") is False
        assert found == listed[str(path)], path
    assert not [path for path in unread if path.parent == tmp_path]
    assert len(files) > 1000
    assert len(unread) < len(files) / 50, unread[:10]


@given(st.binary(max_size=200))
def test_the_symbol_reader_reads_anything_without_raising(data: bytes) -> None:
    found = object_symbols(b"\0asm\1\0\0\0" + data)
    assert found is None or set(found) == {"defs", "undefs", "commons", "parse_error"}


KEPT, READ = "kept.json", "read.json"  # the symbols given to the link, and those it read


def early_link(
    tmp: Path, word: bytes, env: dict[str, str] = ENV
) -> subprocess.CompletedProcess[bytes]:
    argv = ["/usr/bin/python3", str(SCRIPT), EMSCRIPTEN, "emcc"]
    plan = {"symbols": KEPT, "out": READ}
    return subprocess.run(
        [*argv, *LINK, "-o", "app.js"],
        cwd=tmp,
        env={**env, "EMCC_TRIO_LINK_AFTER": json.dumps(plan)},
        input=word,
        capture_output=True,
        check=False,
    )


def nm_symbols(path: Path) -> dict[str, list[str]]:
    """llvm-nm's reading of one object, as emcc's link parses it."""
    code = (
        f"import sys; sys.path.insert(0, {EMSCRIPTEN!r}); from tools import building; "
        f"e = building.llvm_nm({str(path)!r}); "
        "print(__import__('json').dumps({k: sorted(e[k]) for k in ('defs', 'undefs', 'commons')}))"
    )
    done = subprocess.run(["/usr/bin/python3", "-c", code], env=ENV, capture_output=True)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture
def late(objects: Path, tmp_path: Path) -> Path:
    """The objects linked by /usr/bin/emcc, whose link reads their symbols with llvm-nm (and
    the objects again in tmp_path for the launcher's link)."""
    folder = tmp_path / "late"
    folder.mkdir()
    for name in ("main.o", "twice.o"):
        shutil.copy(objects / name, tmp_path / name)
        shutil.copy(objects / name, folder / name)
    subprocess.run(["emcc", *LINK, "-o", "app.js"], cwd=folder, env=ENV, check=True)
    return folder


def assert_same_link(tmp: Path, late: Path) -> None:
    assert (tmp / "app.wasm").read_bytes() == (late / "app.wasm").read_bytes()
    assert (tmp / "app.js").read_bytes() == (late / "app.js").read_bytes()
    ran = subprocess.run(
        ["node", str(RUN_ARTIFACT_JS), "app.js", "app.wasm"],
        cwd=tmp,
        env=ENV,
        capture_output=True,
        check=False,
    )
    assert ran.stdout == b"42\n"


def test_an_early_link_links_on_go_as_emcc_does(tmp_path: Path, late: Path) -> None:
    # No symbols kept: the link reads both objects' and writes them out.
    done = early_link(tmp_path, b"go\n")
    assert done.returncode == 0, done.stderr
    assert_same_link(tmp_path, late)
    read = json.loads((tmp_path / READ).read_text())
    assert read == {str(tmp_path / name): nm_symbols(tmp_path / name) for name in OBJECTS}


def counting_llvm_nm(tmp: Path) -> tuple[dict[str, str], Path]:
    """An environment whose emscripten finds its LLVM tools in a folder of links to Debian's,
    where llvm-nm also logs each run; and the log."""
    tools = tmp / "llvm"
    tools.mkdir()
    for tool in Path("/usr/bin").glob("*-14"):
        (tools / tool.name).symlink_to(tool)
    log = tmp / "nm.log"
    (tools / "llvm-nm-14").unlink()
    (tools / "llvm-nm-14").write_text(
        f'#!/bin/sh\necho "$@" >> {log}\nexec /usr/bin/llvm-nm-14 "$@"\n'
    )
    (tools / "llvm-nm-14").chmod(0o755)
    return {**ENV, "EM_LLVM_ROOT": str(tools)}, log


def test_a_link_reads_its_objects_symbols_without_llvm_nm(tmp_path: Path, late: Path) -> None:
    env, log = counting_llvm_nm(tmp_path)
    done = early_link(tmp_path, b"go\n", env)
    assert done.returncode == 0, done.stderr
    assert_same_link(tmp_path, late)
    assert not log.exists()
    # A module it cannot read (LLVM bitcode, -flto) is left to llvm-nm, which reads it.
    (tmp_path / "twice.c").write_text(UNITS["twice.c"])
    emcc(tmp_path, "-flto", "-c", "twice.c", "-o", "twice.o")
    done = early_link(tmp_path, b"go\n", env)
    assert done.returncode == 0, done.stderr
    assert log.read_text().count("twice.o") == 1


def test_a_link_given_the_symbols_it_wrote_links_as_before(tmp_path: Path, late: Path) -> None:
    kept = {name: nm_symbols(tmp_path / name) for name in ("main.o", "twice.o")}
    (tmp_path / KEPT).write_text(json.dumps(kept))
    done = early_link(tmp_path, b"go\n")
    assert done.returncode == 0, done.stderr
    assert_same_link(tmp_path, late)
    assert not (tmp_path / READ).exists()  # nothing was read


def test_the_link_uses_the_kept_symbols(tmp_path: Path, late: Path) -> None:
    """Kept symbols decide the link: main.o said to need gmtime (which needs malloc, in
    emscripten's deps_info) makes a module that exports malloc, which the real one does not."""
    kept = {name: nm_symbols(tmp_path / name) for name in ("main.o", "twice.o")}
    kept["main.o"]["undefs"].append("gmtime")
    kept["twice.o"]["defs"].append("gmtime")
    (tmp_path / KEPT).write_text(json.dumps(kept))
    done = early_link(tmp_path, b"go\n")
    assert done.returncode == 0, done.stderr
    assert b"malloc" not in (late / "app.wasm").read_bytes()
    assert b"malloc" in (tmp_path / "app.wasm").read_bytes()


@pytest.mark.parametrize("kept", ["not json", '{"main.o": {"defs": "x"}}', "[]"])
def test_kept_symbols_not_of_their_shape_are_read_again(
    tmp_path: Path, late: Path, kept: str
) -> None:
    (tmp_path / KEPT).write_text(kept)
    done = early_link(tmp_path, b"go\n")
    assert done.returncode == 0, done.stderr
    assert_same_link(tmp_path, late)


@pytest.mark.parametrize("word", [b"stop\n", b""])
def test_an_early_link_told_to_stop_links_nothing(
    objects: Path, tmp_path: Path, word: bytes
) -> None:
    for name in ("main.o", "twice.o"):
        shutil.copy(objects / name, tmp_path / name)
    done = early_link(tmp_path, word)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert sorted(os.listdir(tmp_path)) == ["main.o", "twice.o"]


def run_driver(
    tmp_path: Path, step_script: str, paths: list[str], parallel: int, link: list[str]
) -> subprocess.CompletedProcess[bytes]:
    """The build's driver on `paths`, each "compiled" by `step_script` (its unit's path is
    $2), with the early link `link`; its temp dir is tmp_path/tmp."""
    (tmp_path / ".obj").mkdir()
    (tmp_path / "tmp").mkdir()
    units = [Unit(path, index, f"key{index}") for index, path in enumerate(paths)]
    plan = plan_json(
        compiler=["/bin/sh", "-c", step_script, "step"],
        clang=None,
        cflags=None,
        args=[],
        to_compile=units,
        objects=[unit.object for unit in units],
        link_args=[],
        parallel=parallel,
    )
    (tmp_path / PLAN_FILE).write_text(plan)
    link_argv = early_link_args(link, [unit.object for unit in units], [])
    return subprocess.run(
        ["/usr/bin/python3", *PYTHON_FLAGS, "-c", DRIVER, PLAN_FILE, *link_argv],
        cwd=tmp_path,
        env={**ENV, "TMPDIR": str(tmp_path / "tmp")},
        input=b"go\n",
        capture_output=True,
        check=False,
    )


# What the early link sees: its word, and which signals it ignores (none of SIGPIPE and
# SIGXFSZ, which the driver's python ignores: subprocess would have restored them).
REPORTING_LINK = 'read word; echo "link $word $(grep SigIgn /proc/self/status)"; exit 3'


@pytest.mark.parametrize(("step", "word", "status"), [("exit 0", "go", 3), ("exit 1", "stop", 1)])
def test_the_drivers_link_gets_the_word_and_gives_the_build_its_status(
    tmp_path: Path, step: str, word: str, status: int
) -> None:
    # One unit, "compiled" by `step`; the link reports what it got and exits 3, which is the
    # build's status once the units compiled, and the build's 1 is when one failed.
    done = run_driver(tmp_path, step, ["lib.c"], 1, ["/bin/sh", "-c", REPORTING_LINK])
    assert done.returncode == status, done.stderr
    reported, _, ignored = done.stdout.decode().partition("SigIgn:")
    assert reported == f"link {word} "
    assert int(ignored, 16) & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)) == 0
    assert json.loads((tmp_path / STATUS_FILE).read_text()) == {"lib.c": status == 1}


@pytest.mark.parametrize("compiled", [False, True], ids=["source", "pyc"])
@pytest.mark.parametrize(
    ("code", "status"), [("int main(void) { return 0; }\n", 0), ("int main(\n", 1)]
)
def test_the_launcher_exits_with_emccs_status_after_emccs_exit_handlers(
    tmp_path: Path, code: str, status: int, compiled: bool
) -> None:
    # emscripten removes its temp dirs at exit: the launcher skips the interpreter's teardown,
    # not them. As installed (`compiled`), it runs as the .pyc the jail's python3 compiled.
    temp = tmp_path / "tmp"
    temp.mkdir()
    (tmp_path / "main.c").write_text(code)
    directory = tmp_path / "launcher"
    assert install(directory, "/usr/bin/python3")
    launcher = Launcher("/usr/bin/python3", directory, EMSCRIPTEN, compiled).argv("emcc", False)
    assert launcher[len(PYTHON_FLAGS) + 1] == str(
        directory / (COMPILED_NAME if compiled else SCRIPT.name)
    )
    done = subprocess.run(
        [*launcher, "main.c", "-o", "app.js"],
        cwd=tmp_path,
        env={**ENV, "TMPDIR": str(temp)},
        capture_output=True,
        check=False,
    )
    assert done.returncode == status, done.stderr
    assert (tmp_path / "app.wasm").exists() == (status == 0)
    assert (b"error:" in done.stderr) == (status == 1)
    assert list(temp.iterdir()) == []


def test_a_launcher_its_python_cannot_compile_runs_from_source(tmp_path: Path) -> None:
    directory = tmp_path / "launcher"
    assert install(directory, "/usr/bin/python3")
    # A .pyc of the python it runs under: its magic number, not the test runner's.
    magic = subprocess.run(
        [
            "/usr/bin/python3",
            "-c",
            "import importlib.util as u, sys; sys.stdout.write(u.MAGIC_NUMBER.hex())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (directory / COMPILED_NAME).read_bytes()[:4].hex() == magic
    # A python that cannot compile it leaves no .pyc, not even the one an earlier start made.
    assert not install(directory, "/bin/false")
    assert sorted(path.name for path in directory.iterdir()) == [SCRIPT.name]
    assert (directory / SCRIPT.name).read_bytes() == SCRIPT.read_bytes()


def test_the_servers_jobs_run_the_compiled_launcher(
    make_server: MakeServer, reachable_dir: Path, tmp_path: Path
) -> None:
    # Once the server has installed its launcher, its source is broken: the jailed compile
    # still builds, so what the jail ran was the .pyc.
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=True)
    installed = server.workdir / str(server.config.get("baseDir", ".")) / "launcher"
    assert (installed / COMPILED_NAME).is_file()
    (installed / SCRIPT.name).write_text("raise SystemExit('ran the source')\n")
    response = server.compile(HELLO_C)
    assert response.status_code == 200, response.text
    assert "ran the source" not in response.text
    assert run_artifact(server, response, tmp_path) == "hello from C\n"
    server.assert_clean()


def test_the_driver_prints_each_units_output_in_unit_order(tmp_path: Path) -> None:
    # Two at a time, and the second unit ends first: its output still comes second. The
    # outputs wait in the temp dir (the jail's tmpfs), not the job dir, and are gone after.
    step = (
        'if [ "$2" = b.c ]; then echo "b out"; echo "b err" >&2; touch b.done; exit 0; fi; '
        'while [ ! -e b.done ]; do :; done; echo "a out"; exit 2'
    )
    done = run_driver(tmp_path, step, ["a.c", "b.c"], 2, ["/bin/sh", "-c", "exit 0"])
    assert done.returncode == 1, done.stderr
    assert done.stdout == b"a out\nb out\nb err\n"
    assert json.loads((tmp_path / STATUS_FILE).read_text()) == {"a.c": 2, "b.c": 0}
    assert list((tmp_path / "tmp").iterdir()) == []
    assert sorted(path.name for path in (tmp_path / ".obj").iterdir()) == [
        "plan.json",
        "status.json",
    ]


def test_a_link_that_ends_before_its_word_gives_the_build_its_status(tmp_path: Path) -> None:
    # The link exits while the unit compiles, and the unit ends only once the driver has
    # reaped it: the wait for the unit reaps the link, whose status is the build's.
    link = "echo $$ > link.tmp; mv link.tmp link.pid; while [ ! -e started ]; do :; done; exit 7"
    step = (
        "touch started; while [ ! -e link.pid ]; do :; done; "
        'pid=$(cat link.pid); while [ -e "/proc/$pid" ]; do :; done; echo compiled'
    )
    done = run_driver(tmp_path, step, ["lib.c"], 1, ["/bin/sh", "-c", link])
    assert done.returncode == 7, done.stderr
    assert done.stdout == b"compiled\n"
    assert json.loads((tmp_path / STATUS_FILE).read_text()) == {"lib.c": 0}
