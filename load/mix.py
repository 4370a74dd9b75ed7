"""What the load test sends and what each answer must be: data and pure functions only."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

LOAD_DIR: Final = Path(__file__).resolve().parent
REPO: Final = LOAD_DIR.parent
CORPUS_DIR: Final = LOAD_DIR / "corpus"
BOMBS_DIR: Final = REPO / "tests" / "programs"

# The top-level config's caps would let a bomb run for minutes: these end each one by its cap
# within seconds, so a short run still sees many of them. Each request can reach only the cap
# it is meant for, whatever the machine's speed or load, because the margins are ratios of
# work, not of time: an -O2 C++ program of the corpus uses about 3.5 CPU seconds here (4x
# below the CPU cap); the memory bomb passes 512 MB after about 1.5 CPU seconds (10x below
# it); the CPU bomb stays near 90 MB; and the wall-clock cap is 4x the CPU cap, so only a job
# starved below a quarter of a core meets it first (a CPU bomb may: "ran too long" either
# way). maxBodyBytes is raised so the generated 8 MB static-data source fits (and the
# oversize probe must exceed this).
LOAD_CAPS: Final[Mapping[str, Any]] = {
    "jobTimeoutSeconds": 60,
    "jobCpuSeconds": 15,
    "jobMemoryMaxMB": 512,
    "maxBodyBytes": 16 * 1024 * 1024,
    # Every load client sends from 127.0.0.1, so to the server they are one client; its bound
    # (tested on its own in tests/test_clients.py) would turn the burst's 503s into 429s.
    "maxJobsPerClient": 1000,
    # Likewise their artifact quota (tested in tests/test_artifact_limits.py): a long run
    # stores more than one client's 256 MB a day.
    "artifactQuotaMB": 0,
    # And the burst (queueMax + CPUs + 16 connections at once) passes maxConnectionsPerClient.
    "maxConnectionsPerClient": 1000,
    # Runs (POST /run): the run bombs' margins are ratios of work as the compiles' are. The
    # memory bomb passes 128 MB after well under a CPU second; the spin and the flood keep
    # node's 20 MB or so; the wall-clock cap is 10x the CPU cap.
    "runMemoryMB": 128,
    "runCpuSeconds": 2,
    "runTimeoutSeconds": 20,
}

# Every normal compile exports callMain so any of them can be run under node afterwards.
RUNNABLE: Final = "-sEXPORTED_RUNTIME_METHODS=[callMain]"
OPT_LEVELS: Final = ("-O0", "-O1", "-O2", "-Os")

# Request kind -> weight in the mix.
MIX: Final[Mapping[str, int]] = {
    "normal": 30,
    "repeat": 16,
    "bomb_memory": 5,
    "bomb_cpu": 2,
    "bomb_flood": 5,
    "static_8mb": 3,
    "static_48mb": 3,
    "malformed": 14,
    "oversize": 4,
    "disconnect": 12,
    "run": 8,
    "run_memory": 2,
    "run_cpu": 1,
    "run_flood": 2,
    "port": 4,
}
# "burst" is not in the mix: load.run sends one burst of normal compiles at once.
COMPILES: Final = frozenset({"normal", "repeat", "burst"})
# A compile with a port (-sUSE_SDL=2, the largest installed one): each distinct, so each a
# real compile and link against the ports cache under the same caps.
PORT_ARGS: Final = ("-sUSE_SDL=2", "-O1", RUNNABLE)
# Bodies of megabytes: load.run sends one of these at a time.
HEAVY: Final = frozenset({"static_8mb", "oversize"})
# POST /run of tests/programs/run_modes.c (its compile cached after the first): argv[1]
# picks the mode, each bomb able to meet one run cap only.
RUNS: Final[Mapping[str, str]] = {
    "run": "echo",
    "run_memory": "memory",
    "run_cpu": "spin",
    "run_flood": "flood",
}
# Refused before they reach the queue, so a 503 is never right for them.
REFUSED_EARLY: Final = frozenset({"malformed", "oversize"})


@attrs.frozen
class Program:
    name: str
    kind: str  # the request's "type"
    code: str
    expected: str  # the line main prints


@attrs.frozen
class Request:
    """One request to send: a JSON body, or raw bytes for the malformed ones."""

    kind: str
    body: bytes
    # For malformed requests: a word the 400's error must contain (it names the problem);
    # for runs, what the program must print.
    names: str = ""
    program: str = ""  # for repeats: which program (all its repeats share one id)
    path: str = "/compile"


@attrs.frozen
class Answer:
    kind: str
    status: int | None  # None: the client hung up on purpose; -1: transport error
    seconds: float
    body: Mapping[str, Any]
    retry_after: str | None = None
    names: str = ""  # copied from the Request
    program: str = ""  # copied from the Request


def corpus() -> list[Program]:
    """The corpus programs; each starts with `// expect: <the line it prints>`."""
    programs = []
    for path in sorted(CORPUS_DIR.iterdir()):
        code = path.read_text()
        expected = code.splitlines()[0].removeprefix("// expect: ")
        kind = "c" if path.suffix == ".c" else "cpp"
        programs.append(Program(path.name, kind, code, expected))
    return programs


def port_program() -> Program:
    """The port kind's program (load/ports/), which starts with `// expect:` as the corpus."""
    path = LOAD_DIR / "ports" / "sdl2_fill.c"
    code = path.read_text()
    return Program(path.name, "c", code, code.splitlines()[0].removeprefix("// expect: "))


def expected_lines() -> set[str]:
    """What the artifact of a compile of the mix may print: a corpus line, or the port's."""
    return {program.expected for program in (*corpus(), port_program())}


def static_8mb_source() -> str:
    """An 8 MB string literal: big static data that still fits emcc's 16 MB initial memory."""
    rng = random.Random(8)
    chunk = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(1 << 16))
    literal = chunk * ((8 << 20) // len(chunk))
    return (
        "#include <stdio.h>\nstatic const char big[] =\n"
        f'"{literal}";\n'
        'int main(void) { printf("big %zu\\n", sizeof big); return 0; }\n'
    )


# 48 MB of initialised static data, from a tiny source: clang's object file for it is 48 MB,
# and that write meets maxArtifactMB (32 by default; once it met only the jail's 256 MiB and
# wasm-ld refused the link: "initial memory too small"). A 422 `limit: artifact`, nothing
# stored, and no memory blow-up on the way.
STATIC_48MB: Final = (
    "#include <stdio.h>\nstatic char big[48 << 20] = {1, 2, 3};\n"
    'int main(void) { printf("%d\\n", big[2]); return 0; }\n'
)

# Each: (body, a word the error must name).
MALFORMED: Final[tuple[tuple[bytes, str], ...]] = (
    (b"{not json", "JSON"),
    (b"[]", "object"),
    (b'{"code": 5}', "code"),
    (b'{"code": ""}', "code"),
    (b'{"code": "int x;", "type": "fortran"}', "type"),
    (b'{"code": "int x;", "args": "-O2"}', "args"),
    (b'{"code": "int x;", "args": ["-I/etc"]}', "-I/etc"),
    (b'{"code": "int x;", "args": ["--js-library", "/etc/passwd"]}', "--js-library"),
    (b'{"code": "int x;", "args": ["-sENVIRONMENT=node"]}', "ENVIRONMENT"),
    (b'{"code": "int x;", "colour": "red"}', "colour"),
)


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _unique(code: str, rng: random.Random) -> str:
    """A distinct trailing comment: a real compile, never a cache hit or a shared one."""
    return f"{code}\n// load {rng.getrandbits(64):016x}\n"


def _bomb(name: str, rng: random.Random) -> str:
    return _unique((BOMBS_DIR / name).read_text(), rng)


# Bombs by kind: (file in tests/programs, the request's "type").
BOMBS: Final[Mapping[str, tuple[str, str]]] = {
    "bomb_memory": ("memory_bomb.c", "c"),
    "bomb_cpu": ("spin.cpp", "cpp"),
    "bomb_flood": ("flood.c", "c"),
    # A slow-ish compile, so the hang-up lands while it runs.
    "disconnect": ("medium.c", "c"),
}


def make_request(kind: str, rng: random.Random, programs: list[Program], big: str) -> Request:
    """A request of `kind`; `big` is static_8mb_source(), built once."""
    if kind == "normal":
        program = rng.choice(programs)
        args = [rng.choice(OPT_LEVELS), RUNNABLE]
        code = _unique(program.code, rng)
        return Request(kind, _json({"type": program.kind, "code": code, "args": args}))
    if kind == "repeat":
        # Two fixed programs sent byte for byte again and again: cache hits once it is warm.
        program = programs[rng.randrange(2)]
        repeated = {"type": program.kind, "code": program.code, "args": [RUNNABLE]}
        return Request(kind, _json(repeated), program=program.name)
    if kind == "port":
        code = _unique(port_program().code, rng)
        return Request(kind, _json({"type": "c", "code": code, "args": list(PORT_ARGS)}))
    if kind == "malformed":
        raw, names = rng.choice(MALFORMED)
        return Request(kind, raw, names)
    if kind in RUNS:
        stdin = f"load {rng.getrandbits(32):08x}"
        body = {"code": (BOMBS_DIR / "run_modes.c").read_text(), "argv": [RUNS[kind], "3"]}
        return Request(kind, _json({**body, "stdin": stdin}), stdin, path="/run")
    if kind in BOMBS:
        name, language = BOMBS[kind]
        return Request(kind, _json({"code": _bomb(name, rng), "type": language}))
    sources = {
        "static_8mb": lambda: _unique(big, rng),
        "static_48mb": lambda: _unique(STATIC_48MB, rng),
        # Just over maxBodyBytes.
        "oversize": lambda: "x" * (int(LOAD_CAPS["maxBodyBytes"]) + 1024),
    }
    return Request(kind, _json({"code": sources[kind]()}))


def _peak_within_cap(body: Mapping[str, Any]) -> str | None:
    usage = body.get("usage") or {}
    peak = usage.get("peakMemoryBytes")
    cap = int(LOAD_CAPS["jobMemoryMaxMB"]) * 1024 * 1024
    if isinstance(peak, int) and peak > cap:
        return f"usage.peakMemoryBytes {peak} > jobMemoryMaxMB ({cap})"
    return None


def _limit_is(body: Mapping[str, Any], status: int, *limits: str) -> bool:
    return status == 422 and body.get("ok") is False and body.get("limit") in limits


def _run_is(answer: Answer, *limits: str | None) -> bool:
    """A /run answer: compiled, and the run ended by one of `limits` (None: it exited)."""
    ran = answer.body.get("run")
    if answer.status != 200 or not isinstance(ran, dict) or ran.get("limit") not in limits:
        return False
    peak = (ran.get("usage") or {}).get("peakMemoryBytes")
    return not (isinstance(peak, int) and peak > int(LOAD_CAPS["runMemoryMB"]) * 1024 * 1024)


def _matches(answer: Answer) -> bool:
    """Whether the answer is what its kind promises (503s are judged before this)."""
    status, body = answer.status or 0, answer.body
    kind = answer.kind
    if kind == "run":
        ran = body.get("run") or {}
        printed = str(ran.get("stdout", ""))
        return _run_is(answer, None) and ran.get("exitCode") == 3 and printed.endswith(answer.names)
    if kind == "run_memory":
        return _run_is(answer, "memory")
    if kind == "run_cpu":
        return _run_is(answer, "cpu", "timeout")  # "ran too long" either way, as bomb_cpu
    if kind == "run_flood":
        return _run_is(answer, "output")
    if kind in COMPILES or kind in ("static_8mb", "port"):
        return status == 200 and body.get("ok") is True and bool(body.get("wasm"))
    if kind == "bomb_memory":
        return _limit_is(body, status, "memory")
    if kind == "bomb_cpu":
        # Both mean "ran too long"; the table reports which one it was.
        return _limit_is(body, status, "cpu", "timeout")
    if kind == "bomb_flood":
        return _limit_is(body, status, "output")
    if kind == "static_48mb":
        return _limit_is(body, status, "artifact")
    if kind == "malformed":
        error = body.get("error")
        return status == 400 and isinstance(error, str) and answer.names in error
    if kind == "oversize":
        return status == 413 and "maxBodyBytes" in str(body.get("error"))
    return False


def judge(answer: Answer) -> str | None:
    """Why `answer` breaks a promise, or None when it keeps them all."""
    if answer.kind == "disconnect" and answer.status is None:
        return None  # judged by what it leaves behind, at the end
    if answer.status == 503 and answer.kind not in REFUSED_EARLY:
        # Queue full or no capacity in time is allowed under load, but only with Retry-After.
        return None if answer.retry_after else "503 without a Retry-After header"
    if over := _peak_within_cap(answer.body):
        return over
    if _matches(answer):
        return None
    return f"status {answer.status}: {json.dumps(answer.body)[:300]}"
