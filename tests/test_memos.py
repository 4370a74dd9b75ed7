"""The launcher, the JS glue memo and the precompiled headers (issue 22): with every lever on,
every artifact and every diagnostic is the same byte for byte as with every lever off; a
compile whose settings and preamble were seen before runs no compiler.js and parses no
standard header; and no request can make an entry that another request receives.

Poisoning, the attempts made: a request's files cannot reach the misses dir (path rules);
settings that differ (an EXPORT_NAME) get their own entry, never the other's; a forged glue
miss (tampered settings, another working dir, a JS library in the job dir) makes at most the
entry of its own bytes, computed in a jail that holds nothing but them; a forged PCH miss
(another compiler, an include path into the job dir, a header name that climbs) is refused
before anything is built; a project header that shadows a standard one (`-I.` with its own
`vector`) gets no PCH; the memos are read-only in the jail.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from emcc_trio.compile import pch
from emcc_trio.compile.compiler import Compiler, compile_env
from emcc_trio.compile.glue import entry_name, is_valid_entry
from emcc_trio.compile.jailside.emcc_launch import MAX_MISSES, preamble
from emcc_trio.compile.launcher import (
    JAIL_GLUE_DIR,
    JAIL_LAUNCHER_DIR,
    JAIL_PCH_DIR,
    Launcher,
    emscripten_root,
    install,
)
from emcc_trio.compile.memos import (
    MAX_MATERIAL_BYTES,
    MISSES_SUBDIR,
    Memos,
    read_misses,
)
from emcc_trio.isolation.cgroups import Caps
from emcc_trio.isolation.runner import JobResult, Limits, run_job
from emcc_trio.isolation.sandbox import JOB_MOUNT, Sandbox
from emcc_trio.metrics import Metrics
from emcc_trio.storage.artifacts import ArtifactStore
from emcc_trio.storage.local import LocalStore
from emcc_trio.storage.objects import ObjectCache
from emcc_trio.testing.fillers import GlueOnly
from emcc_trio.testing.harness import REPO, MakeServer, Server, eventually
from emcc_trio.testing.programs import HELLO_C

MB = 1024 * 1024
CORPUS_DIR = REPO / "load" / "corpus"
LEVERS_OFF = {"emccLauncher": False, "glueMemoMaxMB": 0, "pchMaxMB": 0}
# Distinct programs, C and C++, -O0 and -O2, several flag sets; the EXPORT_NAME variant comes
# before the plain one, whose entry it must not become.
CORPUS = [
    ("maths.c", ["-O0"]),
    ("qsort.c", ["-O2"]),
    ("strings.c", ["-O0", "-DNDEBUG", "-sASSERTIONS=2"]),
    ("structs.c", ["-O0", "-sEXPORT_NAME=Poisoned"]),
    ("structs.c", ["-O0"]),
    ("iostream.cpp", ["-O0"]),
    ("containers.cpp", ["-O2"]),
    ("templates.cpp", ["-O1", "-sEXPORTED_FUNCTIONS=[_main]"]),
    ("classes.cpp", ["-O0", "-fno-exceptions"]),
    ("vector.cpp", ["-O2", "-std=c++17", "-DNDEBUG"]),
]
# Diagnostics after a standard preamble: with a PCH they would name its header, so such a
# compile runs again without it; the answer must be exactly the levers-off one.
DIAGNOSED = [
    ("#include <vector>\nint main() { std::vector<int> v; return v.size() - 1u }\n", []),
    (
        "#include <vector>\n#include <string>\nint main() { int unused; std::string s; }\n",
        ["-Wall"],
    ),
    ('#include <map>\nint main() { std::map<int, int> m; m.at("x"); }\n', []),
]


def metric(server: Server, memo: str, event: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "emcc_trio_memo_total" and sample.labels == {
                "memo": memo,
                "event": event,
            }:
                return float(sample.value)
    return 0.0


def misses(server: Server) -> list[float]:
    return [metric(server, memo, "miss") for memo in ("glue", "acorn", "pch")]


def same_run(value: object) -> object:
    """emcc names a random temp dir in a failed step's command line, with or without levers."""
    return re.sub(r"emscripten_temp_\w+", "emscripten_temp_X", json.dumps(value))


def settled(server: Server) -> None:
    eventually(lambda: not server.memo_fills_pending(), 120, "the memos' entries")


def artifact(server: Server, response: httpx.Response) -> tuple[bytes, bytes]:
    body = response.json()
    assert response.status_code == 200, body
    assert body["ok"], body
    with server.client() as client:
        return client.get(body["js"]).content, client.get(body["wasm"]).content


def test_every_lever_on_gives_the_bytes_of_every_lever_off(
    make_server: MakeServer, reachable_dir: Path
) -> None:
    on = make_server(workdir=reachable_dir / "on", nsjailEnabled=True, cacheEnabled=False)
    off = make_server(
        workdir=reachable_dir / "off", nsjailEnabled=True, cacheEnabled=False, **LEVERS_OFF
    )
    for name, args in CORPUS:
        kind = "c" if name.endswith(".c") else "cpp"
        code = (CORPUS_DIR / name).read_text()
        expected = artifact(off, off.compile(code, kind, args))
        assert artifact(on, on.compile(code, kind, args)) == expected, (name, args)
        settled(on)
        before = misses(on)
        again = artifact(on, on.compile(code, kind, args))
        assert again == expected, (name, args)
        assert misses(on) == before, f"{name} {args}: the second compile missed"
    for memo in ("glue", "acorn", "pch"):
        assert metric(on, memo, "filled") >= 2, memo
        assert metric(on, memo, "failed") == 0, memo
    assert misses(off) == [0, 0, 0]  # levers off: no memo at all
    entries = list((reachable_dir / "on").rglob("g-*"))
    assert list((reachable_dir / "on").rglob("a-*"))
    assert list((reachable_dir / "on").rglob("p-*"))
    assert entries
    assert all(is_valid_entry(path.read_bytes()) for path in entries)
    on.assert_clean()
    off.assert_clean()


def test_diagnostics_after_a_preamble_are_those_without_a_pch(
    make_server: MakeServer, reachable_dir: Path
) -> None:
    on = make_server(workdir=reachable_dir / "on", nsjailEnabled=True, cacheEnabled=False)
    off = make_server(
        workdir=reachable_dir / "off", nsjailEnabled=True, cacheEnabled=False, **LEVERS_OFF
    )
    for code, args in DIAGNOSED:
        expected = off.compile(code, "cpp", args).json()
        assert expected.get("output", expected.get("error")), code  # something is diagnosed
        on.compile(code, "cpp", args)
        settled(on)
        assert metric(on, "pch", "filled") >= 1
        answer = on.compile(code, "cpp", args).json()
        for field in ("ok", "output", "error", "diagnostics"):
            assert same_run(answer.get(field)) == same_run(expected.get(field)), (code, field)
        if answer["ok"]:
            assert artifact(on, httpx.Response(200, json=answer)) == artifact(
                off, httpx.Response(200, json=expected)
            )


def test_a_project_header_that_shadows_a_standard_one_gets_no_pch(
    make_server: MakeServer, reachable_dir: Path, tmp_path: Path
) -> None:
    """`-I.` and a project `vector`: the clean jail would find the standard one, so the
    launcher asks for no PCH, and the project's header is the one compiled."""
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=True, cacheEnabled=False)
    body = {
        "type": "cpp",
        "code": "#include <vector>\n#include <cstdio>\nint main() { std::puts(SHADOW); }\n",
        "files": {"vector": '#define SHADOW "the project vector"\n'},
        "args": ["-I."],
    }
    with server.client() as client:
        for _ in range(2):
            response = client.post("/compile", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["ok"], response.text
            settled(server)
    assert metric(server, "pch", "miss") == 0
    assert not list((reachable_dir / "server").rglob("p-*"))


def test_a_request_cannot_write_the_misses_dir(
    make_server: MakeServer, reachable_dir: Path
) -> None:
    server = make_server(workdir=reachable_dir / "server", nsjailEnabled=True)
    body = {"code": HELLO_C, "files": {f"{MISSES_SUBDIR}/x": "forged"}}
    with server.client() as client:
        response = client.post("/compile", json=body)
    assert response.status_code == 400
    assert MISSES_SUBDIR in response.json()["error"]


class JailKit:
    """A compiler wired as the server wires it, for the fills themselves."""

    def __init__(self, tmp_path: Path, root: Path) -> None:
        self.root = root
        self.sandbox = Sandbox.open("nsjail", "", tmp_path)
        compiled = install(root / "launcher", "/usr/bin/python3")
        self.launcher = Launcher(
            python="/usr/bin/python3",
            directory=root / "launcher",
            emscripten_root="/usr/share/emscripten",
            compiled=compiled,
        )
        self.glue_dir = root / "glue"
        self.entries = ObjectCache(self.glue_dir, 64 * MB)
        self.entries.load()
        for directory in (root / "jobs", self.glue_dir, root / "pch"):
            directory.mkdir(exist_ok=True)
            self.sandbox.check_reachable(directory)
        self.limits = Limits(60, 60, 65536, Caps(1024 * MB, 1.0, 256))
        store = LocalStore(
            ArtifactStore(root / "artifacts", 32 * MB),
            None,
            artifact_ttl_days=1,
            cleanup_interval_mins=60,
        )
        self.compiler = Compiler(
            emcc="/usr/bin/emcc",
            emxx="/usr/bin/em++",
            default_args=(),
            node_path="/usr/share/nodejs",
            jobs_dir=root / "jobs",
            store=store,
            limits=self.limits,
            driver=None,
            sandbox=self.sandbox,
            launcher=self.launcher,
        )

    async def run(self, argv: list[str], job: Path, job_id: str) -> JobResult:
        """A jailed command in `job` with the server's compile environment and limits."""
        return await run_job(
            argv,
            job_id=job_id,
            cwd=job,
            env=compile_env(job, "/usr/share/nodejs", {}),
            limits=self.limits,
            driver=None,
        )

    async def miss_of_hello(self) -> bytes:
        """Compile hello in the jail with an empty memo: the material its miss leaves."""
        job = self.root / "hello-job"
        job.mkdir()
        (job / "main.c").write_text(HELLO_C)
        (job / MISSES_SUBDIR).mkdir()
        (job / MISSES_SUBDIR).chmod(0o777)
        self.sandbox.prepare(job)
        argv = self.sandbox.wrap(
            [*self.launcher.argv("emcc", jailed=True), "main.c", "-o", "app.js"],
            job,
            60,
            read_only=[
                (self.launcher.directory, JAIL_LAUNCHER_DIR),
                (self.glue_dir, JAIL_GLUE_DIR),
            ],
            env={
                "EMCC_TRIO_GLUE": JAIL_GLUE_DIR,
                "EMCC_TRIO_MISSES": f"{JOB_MOUNT}/{MISSES_SUBDIR}",
            },
        )
        result = await self.run(argv, job, "glue-hello")
        assert result.exit_code == 0, result.output
        [miss] = list((job / MISSES_SUBDIR).iterdir())
        return miss.read_bytes()


@pytest.fixture
def jail(tmp_path: Path, reachable_dir: Path) -> JailKit:
    return JailKit(tmp_path, reachable_dir)


def _with_settings(material: bytes, change: dict[str, object]) -> bytes:
    tag, cwd, settings = material.split(b"\0", 2)
    parsed = json.loads(settings)
    parsed.update(change)
    return b"\0".join([tag, cwd, json.dumps(parsed, sort_keys=True, indent=2).encode()])


async def test_a_fill_computes_from_its_material_alone(jail: JailKit) -> None:
    material = await jail.miss_of_hello()
    _tag, cwd, _ = material.split(b"\0", 2)
    assert cwd == JOB_MOUNT.encode()
    entry = await jail.compiler.fill_glue(material)
    assert entry is not None
    assert is_valid_entry(entry)
    # The same material gives the same entry: nothing but the material decides it.
    assert await jail.compiler.fill_glue(material) == entry
    # Another working dir is refused: the key's cwd must be the jail's.
    elsewhere = material.replace(b"\0" + JOB_MOUNT.encode() + b"\0", b"\0/elsewhere\0", 1)
    assert await jail.compiler.fill_glue(elsewhere) is None
    # A JS library in the job dir: the fill's job dir holds only the material, so no entry.
    library = _with_settings(material, {"JS_LIBRARIES": [f"{JOB_MOUNT}/evil.js"]})
    assert await jail.compiler.fill_glue(library) is None


async def test_a_forged_miss_makes_only_the_entry_of_its_own_bytes(jail: JailKit) -> None:
    """A miss file named for the honest settings but holding tampered ones: the entry goes
    under the digest of what the file holds, so the honest lookup never sees it."""
    honest = await jail.miss_of_hello()
    tampered = _with_settings(honest, {"EXPORT_NAME": "Poisoned"})
    misses = jail.root / "forged-misses"
    misses.mkdir()
    (misses / hashlib.sha256(honest).hexdigest()).write_bytes(tampered)
    memo = Memos(glue=jail.entries, pch=None, toolchain="test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memo.run, jail.compiler)
        await memo.collect(misses)
        with trio.fail_after(120):
            while not jail.entries.contains(entry_name(hashlib.sha256(tampered).hexdigest())):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert not jail.entries.contains(entry_name(hashlib.sha256(honest).hexdigest()))
    poisoned = jail.entries.get(entry_name(hashlib.sha256(tampered).hexdigest()))
    assert poisoned is not None
    assert "Poisoned" in json.loads(poisoned)["stdout"]


async def test_the_memo_and_the_launcher_are_read_only_in_the_jail(jail: JailKit) -> None:
    entry = jail.glue_dir / entry_name("0" * 64)
    entry.write_text('{"stdout": "honest", "stderr": ""}')
    job = jail.root / "writer-job"
    job.mkdir()
    jail.sandbox.prepare(job)
    script = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        open(path, 'w').write('poisoned')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.errno)\n"
    )
    targets = [
        f"{JAIL_GLUE_DIR}/{entry.name}",
        f"{JAIL_GLUE_DIR}/new",
        f"{JAIL_PCH_DIR}/new",
        f"{JAIL_LAUNCHER_DIR}/x",
    ]
    argv = jail.sandbox.wrap(
        ["/usr/bin/python3", "-c", script, *targets],
        job,
        60,
        read_only=[
            (jail.launcher.directory, JAIL_LAUNCHER_DIR),
            (jail.glue_dir, JAIL_GLUE_DIR),
            (jail.root / "pch", JAIL_PCH_DIR),
        ],
    )
    result = await jail.run(argv, job, "glue-writer")
    assert result.exit_code == 0, result.output
    assert "wrote" not in result.output
    assert result.output.count("refused") == len(targets), result.output
    assert entry.read_text() == '{"stdout": "honest", "stderr": ""}'


GLUE = b"emcc-trio-glue-1\0/job\0"
VALID_ENTRY = json.dumps({"stdout": "glue//FORWARDED_DATA:{}", "stderr": "warning\n"}).encode()


@pytest.mark.unit
def test_an_entry_is_valid_only_in_the_launchers_shape() -> None:
    assert is_valid_entry(VALID_ENTRY)
    for bad in (
        b"not json",
        b"[]",
        json.dumps({"stdout": "no forwarded data", "stderr": ""}).encode(),
        json.dumps({"stdout": "x//FORWARDED_DATA:", "stderr": 1}).encode(),
        json.dumps({"stderr": ""}).encode(),
    ):
        assert not is_valid_entry(bad), bad


@pytest.mark.unit
def test_misses_are_read_within_bounds(tmp_path: Path) -> None:
    misses = tmp_path / "misses"
    misses.mkdir()
    (misses / "a").write_bytes(b"one")
    (misses / "b").symlink_to("/etc/hostname")
    (misses / "c").write_bytes(b"x" * (MAX_MATERIAL_BYTES + 1))
    (misses / "d").mkdir()
    names = [f"e{index:02}" for index in range(MAX_MISSES)]
    for name in names:
        (misses / name).write_bytes(name.encode())
    # The first MAX_MISSES names; of those, only regular files within the size bound.
    kept = [name.encode() for name in names[: MAX_MISSES - 4]]
    assert read_misses(misses) == [b"one", *kept]
    assert read_misses(tmp_path / "absent") == []


def pending(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("emcc_trio_memo_fills_pending")


@pytest.mark.unit
async def test_collect_queues_each_material_once_and_run_fills_it(tmp_path: Path) -> None:
    entries = ObjectCache(tmp_path / "glue", MB)
    entries.load()
    metrics = Metrics()
    memo = Memos(glue=entries, pch=None, toolchain="t", metrics=metrics)
    misses = tmp_path / "misses"
    misses.mkdir()
    (misses / "one").write_bytes(GLUE + b"material")
    (misses / "same").write_bytes(GLUE + b"material")
    (misses / "bad").write_bytes(GLUE + b"unfillable")
    (misses / "tagless").write_bytes(b"no tag")
    release = trio.Event()
    filled: list[bytes] = []

    async def fill(material: bytes) -> bytes | None:
        await release.wait()
        filled.append(material)
        return VALID_ENTRY if material.endswith(b"material") else b"{}"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(memo.run, GlueOnly(fill))
        await memo.collect(misses)
        assert pending(metrics) == 2  # one per distinct material
        release.set()
        with trio.fail_after(10):
            while pending(metrics):
                await trio.sleep(0.01)
        await memo.collect(misses)  # known now: nothing queued
        assert pending(metrics) == 1  # only the unfillable one again
        nursery.cancel_scope.cancel()
    assert sorted(filled) == [GLUE + b"material", GLUE + b"unfillable"]
    digest = hashlib.sha256(GLUE + b"material").hexdigest()
    assert entries.get(entry_name(digest)) == VALID_ENTRY
    assert not entries.contains(entry_name(hashlib.sha256(GLUE + b"unfillable").hexdigest()))
    failed = metrics.registry.get_sample_value(
        "emcc_trio_memo_total", {"memo": "glue", "event": "failed"}
    )
    assert failed == 1


@pytest.mark.unit
def test_the_jail_gets_the_mounts_read_only_and_the_variables(tmp_path: Path) -> None:
    sandbox = Sandbox(nsjail=Path("/bin/nsjail"), config_file=tmp_path / "x.cfg")
    argv = sandbox.wrap(
        ["emcc"], tmp_path, 10, read_only=[(tmp_path / "g", JAIL_GLUE_DIR)], env={"A": "b=c"}
    )
    assert argv[argv.index("--bindmount_ro") + 1] == f"{tmp_path / 'g'}:{JAIL_GLUE_DIR}"
    assert argv[argv.index("--env") + 1] == "A=b=c"
    assert argv[-2:] == ["--", "emcc"]


@pytest.mark.unit
def test_the_emscripten_root_must_hold_emcc_py(tmp_path: Path) -> None:
    (tmp_path / "emcc.py").write_text("")
    assert emscripten_root(f"{tmp_path}\n") == str(tmp_path)
    assert emscripten_root(str(tmp_path / "nowhere")) is None
    assert emscripten_root("") is None


CLANG = ("/usr/bin/clang-14", "/usr/bin/clang++-14")


def pch_material(**change: object) -> bytes:
    fields: dict[str, object] = {
        "cwd": "/job",
        "headers": ["vector", "sys/types.h"],
        "language": "c++",
        "template": ["/usr/bin/clang++-14", "-target", "wasm32-unknown-emscripten", "-O0"],
    }
    fields.update(change)
    return pch.TAG + b"\0" + json.dumps(fields).encode()


@pytest.mark.unit
def test_a_pch_material_is_built_only_as_the_toolchain_would() -> None:
    found = pch.parse(pch_material(), CLANG, "/job")
    assert found is not None
    assert found.headers == ("vector", "sys/types.h")
    assert pch.header_text(found.headers) == "#include <vector>\n#include <sys/types.h>\n"
    for refused in (
        pch_material(template=["/bin/sh", "-c", "echo"]),
        pch_material(template=["/usr/bin/clang++-14", "-I/job/include"]),
        pch_material(template=["/usr/bin/clang++-14", "-include", "/job/x.h"]),
        pch_material(template=["/usr/bin/clang++-14", "-g"]),
        pch_material(template=["/usr/bin/clang++-14", "@/job/args"]),
        pch_material(headers=["../../job/x.h"]),
        pch_material(headers=['vector>\n#include "evil.h']),
        pch_material(headers=[]),
        pch_material(language="objective-c"),
        pch_material(cwd="/elsewhere"),
        b"emcc-trio-pch-1\0not json",
        b"emcc-trio-glue-1\0/job\0{}",
    ):
        assert pch.parse(refused, CLANG, "/job") is None, refused


@pytest.mark.unit
@pytest.mark.parametrize(
    ("source", "headers"),
    [
        ("#include <vector>\n#include <map>\nint main() {}\n", ["vector", "map"]),
        (
            "// a comment\n\n#include <stdio.h>\n  #  include <sys/stat.h>\nint x;\n",
            ["stdio.h", "sys/stat.h"],
        ),
        ('#include "local.h"\n#include <vector>\n', []),
        ("#define X 1\n#include <vector>\n", []),
        ("// continued \\\n#include <vector>\n", []),
        ("#include <vector> // why\n", []),
        ("/* block */\n#include <vector>\n", []),
        ("#include <vector>\n#include <../etc/x>\n#include <map>\n", ["vector"]),
        ("int main() {}\n", []),
    ],
)
def test_the_preamble_is_the_leading_run_of_standard_includes(
    source: str, headers: list[str]
) -> None:
    assert preamble(source) == headers
