"""Projects of several translation units: each unit compiled as its own step, several at a
time, then one link; objects reused from earlier builds when nothing they were built from
changed. Pure: the plan, the driver that runs it inside the jail, and the object cache's keys.

A build is one command in the job's jail and cgroup, as a one-file compile is: `DRIVER`, a
small Python program, starts while the service lays out the job dir and waits for its word,
then runs `emcc --cflags` once for the compile arguments, clang on each unit that has no
reusable object (`parallel` at a time), prints each unit's output in unit order, and links
when every unit compiled. Every cap, the gate and cancellation hold as for
one file: all of it is one process tree in one cgroup.

An object is reused under a manifest (`unit_key`): the toolchain, the compile arguments, the
unit's path and content, and the list of project paths name it; the manifest records the
digest of every project file the unit included (clang's dependency file), and is used only
while each of those files still has that digest. It also keeps the object's symbols as the
link that built it read them, which a later link takes instead of reading them again.
Nothing a request sends can make an object another request receives: every input that
decides an object is in its key or its manifest.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

# emscripten 3.1.6's settings that apply when compiling (tools/settings.py,
# COMPILE_TIME_SETTINGS with PORTS_SETTINGS); every other -s setting is the linker's.
COMPILE_TIME_SETTINGS: Final = frozenset(
    {
        "MEMORY64",
        "INLINING_LIMIT",
        "DISABLE_EXCEPTION_CATCHING",
        "DISABLE_EXCEPTION_THROWING",
        "MAIN_MODULE",
        "SIDE_MODULE",
        "RELOCATABLE",
        "STRICT",
        "EMSCRIPTEN_TRACING",
        "USE_PTHREADS",
        "SUPPORT_LONGJMP",
        "DEFAULT_TO_CXX",
        "WASM_OBJECT_FILES",
        "EXCEPTION_CATCHING_ALLOWED",
        "EXCEPTION_HANDLING",
        "LTO",
        "OPT_LEVEL",
        "DEBUG_LEVEL",
        "RUNTIME_LINKED_LIBS",
        "AUTO_ARCHIVE_INDEXES",
        "DEFAULT_LIBRARY_FUNCS_TO_INCLUDE",
        "USE_SDL",
        "USE_LIBPNG",
        "USE_BULLET",
        "USE_ZLIB",
        "USE_BZIP2",
        "USE_VORBIS",
        "USE_COCOS2D",
        "USE_ICU",
        "USE_MODPLUG",
        "USE_SDL_MIXER",
        "USE_SDL_IMAGE",
        "USE_SDL_TTF",
        "USE_SDL_NET",
        "USE_SDL_GFX",
        "USE_LIBJPEG",
        "USE_OGG",
        "USE_REGAL",
        "USE_BOOST_HEADERS",
        "USE_HARFBUZZ",
        "USE_MPG123",
        "USE_GIFLIB",
        "USE_FREETYPE",
        "SDL2_MIXER_FORMATS",
        "SDL2_IMAGE_FORMATS",
    }
)
# emcc's flags that only the link reads (emcc.py LINK_ONLY_FLAGS), and those of them that take
# the next argument as their value.
LINK_ONLY_FLAGS: Final = frozenset(
    {
        "--bind",
        "--closure",
        "--cpuprofiler",
        "--embed-file",
        "--emit-symbol-map",
        "--emrun",
        "--exclude-file",
        "--extern-post-js",
        "--extern-pre-js",
        "--ignore-dynamic-linking",
        "--js-library",
        "--js-transform",
        "--memory-init-file",
        "--oformat",
        "--output_eol",
        "--post-js",
        "--pre-js",
        "--preload-file",
        "--profiling-funcs",
        "--proxy-to-worker",
        "--shell-file",
        "--source-map-base",
        "--threadprofiler",
        "--use-preload-plugins",
    }
)
_LINK_FLAGS_WITH_VALUE: Final = frozenset(
    {"--embed-file", "--preload-file", "--source-map-base", "--exclude-file"}
)
OBJECT_DIR: Final = ".obj"
PLAN_FILE: Final = f"{OBJECT_DIR}/plan.json"
STATUS_FILE: Final = f"{OBJECT_DIR}/status.json"
CFLAGS_FILE: Final = f"{OBJECT_DIR}/cflags.json"
# The symbols of reused objects as their manifests keep them (the link reads these instead of
# running llvm-nm on them), and those the link read from the objects this build compiled.
SYMBOLS_FILE: Final = f"{OBJECT_DIR}/symbols.json"
SYMBOLS_OUT_FILE: Final = f"{OBJECT_DIR}/symbols-out.json"
# An object larger than this is not kept (nor its manifest): the server reads a kept object
# whole, so this bounds what one build's bookkeeping holds in memory at a time.
MAX_OBJECT_BYTES: Final = 8 * 1024 * 1024


_SETTING: Final = re.compile(r"^-s(?:[A-Z_]|$)")


def is_setting(arg: str) -> bool:
    """`-sNAME[=VALUE]` (or the bare `-s` of the split form), not `-std=` or `-shared`."""
    return bool(_SETTING.match(arg))


def compile_args(args: Sequence[str]) -> list[str]:
    """The arguments a compile step takes: `args` without what only the link reads (emcc
    warns that it ignores those when compiling), in their order."""
    kept: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in _LINK_FLAGS_WITH_VALUE:
            index += 2
            continue
        if arg == "-s" and index + 1 < len(args):
            if args[index + 1].partition("=")[0] in COMPILE_TIME_SETTINGS:
                kept += [arg, args[index + 1]]
            index += 2
            continue
        flag = arg.partition("=")[0]
        linker_setting = is_setting(arg) and arg[2:].partition("=")[0] not in (
            COMPILE_TIME_SETTINGS
        )
        if not (flag in LINK_ONLY_FLAGS or arg.startswith("-l") or linker_setting):
            kept.append(arg)
        index += 1
    return kept


# What emcc passes to clang as it is, after its own flags, and never reads itself (emcc.py
# get_cflags reads settings and -fPIC, -fvisibility, -flto, -O, -g, -pthread, ...): macros,
# include directories, warnings and the language standard. These skip `emcc --cflags`.
_PASSTHROUGH_WITH_VALUE: Final = frozenset({"-D", "-U", "-I", "-iquote", "-isystem"})
_PASSTHROUGH_PREFIXES: Final = ("-D", "-U", "-I", "-iquote", "-isystem", "-W", "-std=")
_PASSTHROUGH_FLAGS: Final = frozenset({"-w", "-pedantic", "-pedantic-errors"})


def split_for_cflags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(what `emcc --cflags` must see, what goes to clang after its output unchanged), each
    in its order. clang reads macros, include directories and warnings in order within each
    kind, which the split keeps."""
    seen: list[str] = []
    passthrough: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in _PASSTHROUGH_WITH_VALUE and index + 1 < len(args):
            passthrough += [arg, args[index + 1]]
            index += 2
            continue
        if not is_setting(arg) and (
            arg in _PASSTHROUGH_FLAGS or arg.startswith(_PASSTHROUGH_PREFIXES)
        ):
            passthrough.append(arg)
        else:
            seen.append(arg)
        index += 1
    return seen, passthrough


@attrs.frozen
class Clang:
    """The clang programs emcc runs for C and C++ sources (found at start-up)."""

    c: str
    cxx: str


@attrs.frozen
class Unit:
    path: str
    index: int
    key: str  # the manifest's key (unit_key)

    @property
    def object(self) -> str:
        return object_path(self.index)

    @property
    def depfile(self) -> str:
        return f"{OBJECT_DIR}/{self.index}.d"


def object_path(index: int) -> str:
    """Where the object of the project's unit `index` (in `sources` order) goes."""
    return f"{OBJECT_DIR}/{index}.o"


def link_command(compiler: Sequence[str], objects: Sequence[str], args: Sequence[str]) -> list[str]:
    return [*compiler, *objects, *args, "-o", "app.js"]


def early_link(compiler: Sequence[str], objects: Sequence[str], args: Sequence[str]) -> list[str]:
    """The driver's arguments after the plan when its link is the launcher's, which starts
    at once (see DRIVER): the link's symbols files (its EMCC_TRIO_LINK_AFTER), then its
    command, as they are spawned, before the driver's interpreter parses anything."""
    symbols = json.dumps({"symbols": SYMBOLS_FILE, "out": SYMBOLS_OUT_FILE})
    return [symbols, *link_command(compiler, objects, args)]


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def unit_key(
    toolchain: str,
    compiler: str,
    args: Sequence[str],
    unit: str,
    content: bytes,
    project_paths: Sequence[str],
    workdir: str,
    scope: str = "",
) -> str:
    """What names a unit's manifest: everything that decides its object except the contents
    of the files it includes (the manifest holds those). `project_paths`: a file added or
    removed anywhere may change which header an include finds; `workdir`: where the compile
    ran, in debug information; `scope`: the client, when objects are not shared between
    clients (`cacheScope` "client": a reuse would show in the build's time)."""
    material = [toolchain, compiler, list(args), unit, digest(content), sorted(project_paths)]
    material += [workdir, scope]
    return hashlib.sha256(json.dumps(material, separators=(",", ":")).encode()).hexdigest()


SYMBOL_KINDS: Final = ("defs", "undefs", "commons")
Symbols = Mapping[str, Sequence[str]]  # llvm-nm's reading of an object, as emcc's link keeps it


def decode_symbols(value: object) -> Symbols | None:
    """`value` if it is an object's symbols: each of SYMBOL_KINDS a list of strings."""
    if not isinstance(value, dict) or set(value) != set(SYMBOL_KINDS):
        return None
    if not all(
        isinstance(names, list) and all(isinstance(name, str) for name in names)
        for names in value.values()
    ):
        return None
    return {kind: list(value[kind]) for kind in SYMBOL_KINDS}


@attrs.frozen
class Manifest:
    """What an object was built from: each project file the unit included, by digest; and
    the object's symbols when the link that built it read them (see jailside/emcc_launch)."""

    object_digest: str
    deps: Mapping[str, str]
    symbols: Symbols | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "object": self.object_digest,
            "deps": dict(sorted(self.deps.items())),
        }
        if self.symbols is not None:
            body["symbols"] = {kind: list(self.symbols[kind]) for kind in SYMBOL_KINDS}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Manifest | None:
        try:
            body = json.loads(data)
            deps = body["deps"]
            if not isinstance(deps, dict) or not isinstance(body["object"], str):
                return None
            symbols = decode_symbols(body.get("symbols"))
            return cls(body["object"], {str(k): str(v) for k, v in deps.items()}, symbols)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def holds_for(self, digests: Mapping[str, str]) -> bool:
        """Whether every file the unit included is still the same."""
        return all(digests.get(path) == value for path, value in self.deps.items())


def project_deps(depfile: str, job_roots: Sequence[str]) -> list[str] | None:
    """The project files (relative paths) a clang dependency file names; files outside the
    job dir are the toolchain's and left out. None when a name cannot be read as either."""
    text = depfile.replace("\\\n", " ")
    _, sep, deps = text.partition(": ")
    if not sep:
        return None
    found = []
    for name in shlex.split(deps, posix=True):
        for root in job_roots:
            if name.startswith(root + "/"):
                name = name[len(root) + 1 :]
                break
        if name.startswith("/"):
            continue  # the toolchain's headers: fixed with the toolchain
        normal = posixpath.normpath(name)
        if normal.startswith("../") or normal == "..":
            return None
        found.append(normal)
    return found


def cflags_key(toolchain: str, compiler: str, args: Sequence[str]) -> str:
    """What names the clang arguments `emcc --cflags` gave for `args` (kept like a manifest:
    they depend on nothing else); only what `emcc --cflags` sees of them counts."""
    material = ["cflags", toolchain, compiler, split_for_cflags(args)[0]]
    return hashlib.sha256(json.dumps(material, separators=(",", ":")).encode()).hexdigest()


def decode_cflags(data: bytes | None) -> list[str] | None:
    """Kept clang arguments, if `data` is a JSON list of strings."""
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def plan_json(
    *,
    compiler: Sequence[str],
    clang: Clang | None,
    cflags: Sequence[str] | None,
    args: Sequence[str],
    to_compile: Sequence[Unit],
    objects: Sequence[str],
    link_args: Sequence[str],
    parallel: int,
) -> str:
    """The driver's input: what to compile (the rest is reused), then how to link.
    `compiler` is the command that runs emcc or em++ (see compile.launcher)."""
    plan: dict[str, Any] = {
        "compiler": list(compiler),
        "clang": None if clang is None else {"c": clang.c, "cxx": clang.cxx},
        "cflags": None if cflags is None else list(cflags),
        "cflags_file": CFLAGS_FILE,
        "args": split_for_cflags(args)[0],
        "passthrough": split_for_cflags(args)[1],
        "units": [
            {"path": unit.path, "object": unit.object, "depfile": unit.depfile}
            for unit in to_compile
        ],
        "link": link_command(compiler, objects, link_args),
        "parallel": parallel,
        "status": STATUS_FILE,
    }
    return json.dumps(plan)


# Runs inside the jail with the system's python3 (as emcc does): no imports but the standard
# library, no shell. `argv[1]` is the plan file, the rest (with the launcher) `early_link`'s.
# It starts before the service has laid out the job dir, and reads the plan on the service's
# word on stdin.
DRIVER: Final = r"""
import _signal, os, sys  # _signal: `signal` imports enum, 3 ms before the link could start

# The launcher's link starts first, before this interpreter imports anything more: its
# import of emscripten (while the service lays out the job dir and the units compile) is
# the longer of the two paths to the link. It takes the reused objects' kept symbols and
# links on "go" (see jailside/emcc_launch.py).
DEFAULT_SIGNALS = (_signal.SIGPIPE, _signal.SIGXFSZ)  # as subprocess restores them
link = None
if len(sys.argv) > 2:
    link_stdin, link_word = os.pipe()
    env = dict(os.environ, EMCC_TRIO_LINK_AFTER=sys.argv[2])
    dup = [(os.POSIX_SPAWN_DUP2, link_stdin, 0)]
    link = os.posix_spawn(
        sys.argv[3], sys.argv[3:], env, file_actions=dup, setsigdef=DEFAULT_SIGNALS
    )
    os.close(link_stdin)

import json  # no subprocess, no threads: their imports would be on the path to the link

# The service's word: the job dir is laid out (without it, it never will be; the link ends
# at the end of its stdin).
if sys.stdin.readline() != "go\n":
    sys.exit(1)
plan = json.load(open(sys.argv[1]))
out = sys.stdout.buffer
units = plan["units"]
CXX = (".cpp", ".cc")


# argv, its stdout and stderr in the file `output` (else this driver's)
def spawn(argv, output=None):
    if output is None:
        return os.posix_spawnp(argv[0], argv, os.environ, setsigdef=DEFAULT_SIGNALS)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        dups = [(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
        return os.posix_spawnp(
            argv[0], argv, os.environ, file_actions=dups, setsigdef=DEFAULT_SIGNALS
        )
    finally:
        os.close(fd)


link_code = None  # the link's exit code, if a wait for a unit reaped it


# (pid, exit code) of `pid`, or of any unit's step for -1
def wait(pid):
    global link_code
    while True:
        done, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if done != link or pid == link:
            return done, code
        link_code = code  # it ended before its word (a crash, a cap): its code tells


# Where a step's output waits to be printed: the temp dir, which in the jail is its tmpfs,
# whose size and pages the job's caps bound (the job dir is on the host's disk)
def output_file(name):
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", "emcc-trio-%s.out" % name)


# A step's output file to this driver's stdout, in chunks (the service bounds it), then gone
def copy_out(output):
    with open(output, "rb") as handle:
        while chunk := handle.read(1 << 16):
            out.write(chunk)
    out.flush()
    os.unlink(output)


# `emcc --cflags ARGS` prints the clang arguments emcc would compile with, but loses the
# quoting of an argument such as -DV="1.0": such arguments go in as placeholders, come back
# in their place, and are put back as they were.
prefix = plan["cflags"]
if prefix is None and plan["clang"] is not None and units:
    import re, shlex

    SAFE = re.compile(r"^[A-Za-z0-9_=.,:/+@%^~-]*$")
    safe, originals = [], {}
    for index, arg in enumerate(plan["args"]):
        setting = arg.startswith("-s") or (index and plan["args"][index - 1] == "-s")
        if setting or SAFE.match(arg):
            safe.append(arg)
        else:
            token = "-DEMCC_TRIO_ARGUMENT_%d" % index
            originals[token] = arg
            safe.append(token)
    cflags_out = output_file("cflags")
    code = wait(spawn([*plan["compiler"], "--cflags", *safe], cflags_out))[1]
    if code != 0:
        copy_out(cflags_out)
        sys.exit(code)
    with open(cflags_out, "rb") as handle:
        lines = handle.read().decode().strip().splitlines()
    os.unlink(cflags_out)
    prefix = [originals.get(token, token) for token in shlex.split(lines[-1] if lines else "")]
    with open(plan["cflags_file"], "w") as handle:
        json.dump(prefix, handle)


def step(unit):
    tail = ["-c", unit["path"], "-o", unit["object"], "-MD", "-MF", unit["depfile"]]
    if prefix is None:
        return [*plan["compiler"], *plan["args"], *plan["passthrough"], *tail]
    clang = plan["clang"]["cxx" if unit["path"].endswith(CXX) else "c"]
    return [clang, *prefix, *plan["passthrough"], *tail]


# `parallel` steps at a time; each unit's output is printed in unit order, as soon as it and
# every unit before it are done.
status, codes, running = {}, {}, {}
started = printed = 0
while printed < len(units):
    while started < len(units) and len(running) < max(1, plan["parallel"]):
        unit = units[started]
        running[spawn(step(unit), output_file(started))] = started
        started += 1
    pid, code = wait(-1)
    if pid in running:
        codes[running.pop(pid)] = code
    while printed in codes:
        unit = units[printed]
        copy_out(output_file(printed))
        status[unit["path"]] = codes[printed]
        printed += 1
with open(plan["status"], "w") as handle:
    json.dump(status, handle)
failed = any(status.values())
if link is not None:
    if link_code is None:
        try:
            os.write(link_word, b"stop\n" if failed else b"go\n")
        except BrokenPipeError:
            pass  # it has ended already; its exit code tells
        os.close(link_word)
        code = wait(link)[1]
    else:
        code = link_code
elif not failed:
    code = wait(spawn(plan["link"]))[1]
out.flush()
os._exit(1 if failed else code)  # the interpreter's teardown is on every build's path
"""
