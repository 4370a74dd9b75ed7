"""The nsjail sandbox: compiles work inside it, and no route reaches a host file.

Each route is tried twice where it can be: through the HTTP API (policy + jail), and straight
through the jail with the policy bypassed, because the jail must hold on its own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from emcc_trio.compile.compiler import compile_env
from emcc_trio.isolation.cgroups import Caps
from emcc_trio.isolation.runner import Limits, run_job
from emcc_trio.isolation.sandbox import OUTSIDE_UID, Sandbox
from emcc_trio.testing.harness import REPO, MakeServer, Server
from emcc_trio.testing.programs import HELLO_C, HELLO_CPP, run_artifact

MB = 1024 * 1024


@attrs.frozen
class Secrets:
    value: str
    etc_file: Path
    workdir_file: Path


@pytest.fixture
def planted(reachable_dir: Path) -> Iterator[Secrets]:
    value = "SECRET-" + secrets.token_hex(12)
    etc_file = Path("/etc") / f"emcc-trio-test-{secrets.token_hex(4)}.txt"
    etc_file.write_text(value + "\n")
    etc_file.chmod(0o644)
    workdir_file = reachable_dir / "server" / "secret.txt"
    workdir_file.parent.mkdir(parents=True, exist_ok=True)
    workdir_file.write_text(value + "\n")
    workdir_file.chmod(0o644)
    yield Secrets(value, etc_file, workdir_file)
    etc_file.unlink()


@pytest.fixture
def jailed(make_server: MakeServer, planted: Secrets, reachable_dir: Path) -> Server:
    return make_server(workdir=reachable_dir / "server", nsjailEnabled=True)


def _leaks(server: Server, response_text: str, value: str) -> list[str]:
    """Where the secret shows up: the response or any published artifact."""
    found = ["response"] if value in response_text else []
    if server.artifacts_dir.exists():
        for path in server.artifacts_dir.rglob("*"):
            if path.is_file() and value.encode() in path.read_bytes():
                found.append(str(path))
    return found


@pytest.mark.parametrize("kind", ["c", "cpp"])
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_compiles_and_runs_inside_the_jail(
    jailed: Server, tmp_path: Path, kind: str, opt: str
) -> None:
    code, expected = (HELLO_C, "hello from C\n") if kind == "c" else (HELLO_CPP, "hello from C++\n")
    response = jailed.compile(code, kind, [opt])
    assert response.status_code == 200, response.text
    assert run_artifact(jailed, response, tmp_path) == expected
    jailed.assert_clean()


def test_the_jail_is_really_used(jailed: Server) -> None:
    response = jailed.compile('#include "/etc/hostname"\n')
    assert response.status_code == 400
    assert "'/etc/hostname' file not found" in response.json()["error"]
    assert any(e.get("nsjail") for e in jailed.log_events() if e["event"] == "configured")


ROUTES = {
    "include_etc": '#include "{etc}"\n',
    "include_workdir": '#include "{workdir}"\n',
    "include_relative": '#include "../../../../../../../..{etc}"\n',
    "include_next_etc": '#include_next "{etc}"\n',
    "include_passwd": '#include "/etc/passwd"\n',
    "include_host_proc": '#include "/proc/1/environ"\n',
    "has_include": '#if __has_include("{etc}")\n#error visible\n#endif\nint main(void){{}}\n',
    "incbin": (
        '__asm__(".section .data.s,\\"\\",@\\n.globl s\\ns:\\n.incbin \\"{etc}\\"\\n");\n'
        "int main(void){{return 0;}}\n"
    ),
    "embed_via_pragma": '#pragma clang __debug dump "{etc}"\nint main(void){{}}\n',
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_source_routes_cannot_read_host_files(jailed: Server, planted: Secrets, route: str) -> None:
    code = ROUTES[route].format(etc=planted.etc_file, workdir=planted.workdir_file)
    response = jailed.compile(code)
    assert _leaks(jailed, response.text, planted.value) == []
    if route == "has_include":
        assert response.status_code == 200, "the file must be invisible, not just unreadable"
    elif route != "embed_via_pragma":
        assert response.status_code == 400
    jailed.assert_clean()


# Arguments the policy refuses; here they go straight to emcc inside the jail.
ARG_ROUTES = {
    "embed_file": ["--embed-file", "{etc}@/s"],
    "preload_file": ["--preload-file", "{etc}@/s"],
    "response_file": ["@{etc}"],
    "settings_from_file": ["-sEXPORTED_FUNCTIONS=@{etc}"],
    "js_library": ["--js-library", "{etc}"],
    "pre_js": ["--pre-js", "{etc}"],
    "include_dir": ["-I/etc", "-include", "{etc}"],
    "artifact_store": ["--embed-file", "{artifacts}@/a"],
}


def test_handing_the_job_dir_to_the_jail_follows_no_link(tmp_path: Path, planted: Secrets) -> None:
    """A build's files are laid out while its jail runs: a link in the job dir (which the
    jail's user owns) must not hand what it points to over to that user."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "main.c").write_text(HELLO_C)
    (job_dir / "link").symlink_to(planted.etc_file)
    Sandbox.open("nsjail", "", tmp_path).prepare(job_dir)
    assert planted.etc_file.stat().st_uid == 0
    assert (job_dir / "main.c").stat().st_uid == OUTSIDE_UID
    assert (job_dir / "link").lstat().st_uid == OUTSIDE_UID


@pytest.mark.parametrize("route", sorted(ARG_ROUTES))
async def test_argument_routes_cannot_read_host_files_even_past_the_policy(
    tmp_path: Path, reachable_dir: Path, planted: Secrets, route: str
) -> None:
    job_dir = reachable_dir / "job"
    job_dir.mkdir()
    (job_dir / "main.c").write_text(HELLO_C)
    artifacts = reachable_dir / "artifacts"
    artifacts.mkdir(mode=0o755)
    (artifacts / "leak.txt").write_text(planted.value)
    (artifacts / "leak.txt").chmod(0o644)
    sandbox = Sandbox.open("nsjail", "", tmp_path)
    sandbox.prepare(job_dir)
    args = [a.format(etc=planted.etc_file, artifacts=artifacts) for a in ARG_ROUTES[route]]
    argv = sandbox.wrap(["/usr/bin/emcc", "main.c", *args, "-o", "app.js"], job_dir, 60)
    result = await run_job(
        argv,
        job_id="sandbox-" + route,
        cwd=job_dir,
        env=compile_env(job_dir, "/usr/share/nodejs", {}),
        limits=Limits(60, 60, 65536, Caps(1024 * MB, 1.0, 256)),
        driver=None,
    )
    assert result.exit_code != 0, result.output
    assert planted.value not in result.output
    for path in job_dir.rglob("*"):
        if path.is_file():
            assert planted.value.encode() not in path.read_bytes(), path


def test_a_broken_jail_is_a_json_500_and_nothing_is_left(
    make_server: MakeServer, reachable_dir: Path
) -> None:
    broken = reachable_dir / "broken.cfg"
    broken.write_text(
        (REPO / "emcc_trio" / "isolation" / "nsjail" / "emcc.cfg").read_text()
        + 'mount { src: "/no/such/dir" dst: "/x" is_bind: true }\n'
    )
    server = make_server(
        workdir=reachable_dir / "server", nsjailEnabled=True, nsjailConfig=str(broken)
    )
    response = server.compile(HELLO_C)
    assert response.status_code == 500
    body = response.json()
    assert body["ok"] is False
    assert body["error"].startswith("internal error: the sandbox failed to start")
    assert "/no/such/dir" in body["error"]
    server.assert_clean()
    with server.client() as client:
        assert client.get("/healthz").text == "ok"


def test_a_project_builds_in_steps_inside_the_jail(jailed: Server, tmp_path: Path) -> None:
    """Several units: the build driver runs in the jail (its python3 and clang included),
    and a rebuild after one change reuses the other objects there too."""
    files = {
        "inc/k.h": "#define K 2\n",
        "src/a.c": '#include "k.h"\nint a(void) { return K; }\n',
        "src/b.cpp": 'extern "C" int b(void) { return 40; }\n',
    }
    code = (
        "#include <stdio.h>\nint a(void); int b(void);\n"
        'int main(void) { printf("%d\\n", a() + b()); }\n'
    )
    body = {
        "code": code,
        "files": files,
        "args": ["-Iinc", "-sEXPORTED_RUNTIME_METHODS=[callMain]"],
    }
    with jailed.client() as client:
        first = client.post("/compile", json=body)
        assert run_artifact(jailed, first, tmp_path) == "42\n"
        files["src/a.c"] = '#include "k.h"\nint a(void) { return K + 1; }\n'
        second = client.post("/compile", json=body)
        assert run_artifact(jailed, second, tmp_path) == "43\n"
        metrics = client.get("/metrics").text
    assert 'emcc_trio_build_units_total{how="reused"} 2.0' in metrics
    assert 'emcc_trio_build_units_total{how="compiled"} 4.0' in metrics
    jailed.assert_clean()
