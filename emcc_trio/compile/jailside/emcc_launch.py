"""emcc and em++ as the service runs them: from emscripten's shipped bytecode, with its memos.

Runs inside the jail under the system's python3, standard library only, as emcc itself does.

    emcc_launch.py ROOT emcc|em++ ARGS...                 compile as `emcc ARGS...` would
    emcc_launch.py ROOT --fill-glue MATERIAL ENTRY        compute one glue entry
    emcc_launch.py ROOT --fill-acorn MATERIAL ENTRY       compute one JS optimizer entry
    emcc_launch.py ROOT --fill-pch MATERIAL HEADER PCH    build one precompiled header

With `EMCC_TRIO_LINK_AFTER` set (JSON: `symbols`, a file of kept symbols; `out`, where the
symbols read here go), a link starts early: it imports emscripten while the service lays out
the job dir and the build's units compile, then waits for a line on stdin: `go` links (with
the kept symbols), anything else (or end of file) exits 0 without linking. The link itself
is the same.

emcc's link reads every object's symbols with llvm-nm, to choose the system libraries; the
launcher gives it the kept symbols, and reads the others from each object's symbol table
itself (what llvm-nm would list, as emcc records it; llvm-nm still reads what this cannot:
LLVM bitcode, objects without symbols). In a build, what it read goes to `out`.

`/usr/bin/emcc` runs `python3 emcc.py`, which compiles the 160 KB script on every call;
importing it as a module takes the `.pyc` Debian ships instead. Output is the same.

The glue memo: `src/compiler.js` reads only its settings file and the toolchain, so its
output is kept under a digest of the settings and the working directory (the jail's fixed
/job). The JS optimizer memo: `tools/acorn-optimizer.js` (`-O1` and above) likewise, under
a digest of its input and its passes. The precompiled headers: a source that begins with
nothing but `#include <...>` lines compiles with a PCH of exactly those headers, built by
exactly its clang command; a compile with a PCH that prints anything or fails is run again
without it, so every diagnostic is clang's own.

Stripping debug sections or the producers section (no `-g`, no wasm-opt) is done in Python
rather than by llvm-objcopy, byte for byte as llvm-objcopy writes it (every section's size as
a five-byte LEB128); a file it cannot read is left to llvm-objcopy.

`EMCC_TRIO_GLUE` and `EMCC_TRIO_PCH` name the memos (mounted read-only; the JS optimizer's
entries live in the glue memo's directory), `EMCC_TRIO_MISSES` where a miss leaves its
material. The service computes entries later, in a jail that holds nothing but that material
(the fill modes), so no request's files ever reach what another request receives.
"""

import atexit
import copy
import fnmatch
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NoReturn

GLUE_TAG = b"emcc-trio-glue-1"
ACORN_TAG = b"emcc-trio-acorn-1"
ACORN_FLAG = re.compile(r"^(--)?[A-Za-z][A-Za-z0-9]*\Z")
PCH_TAG = b"emcc-trio-pch-1"
MAX_MISSES = 8  # a -O2 link runs the JS optimizer four or five times
FORWARDED = "//FORWARDED_DATA:"
LANGUAGES = {".c": "c", ".cpp": "c++", ".cc": "c++", ".cxx": "c++"}
INCLUDE = re.compile(r"#[ \t]*include[ \t]*<([A-Za-z0-9_][A-Za-z0-9_./+-]*)>")
# Arguments that make a header resolve, or the object come out, otherwise than in the clean
# jail the PCH is built in: include paths (they may point into the job dir), forced
# includes, dependency output, debug info (it names the PCH's header).
NO_PCH = re.compile(
    r"^(-I|-i(quote|system|dirafter|prefix|withprefix|withprefixbefore)|-include|-imacros"
    r"|-cxx-isystem|--include|-F|-M|-g|-fmodules|-E|-S|@)"
)


def emscripten(name: str) -> Any:  # emscripten's modules have no types
    module: ModuleType = importlib.import_module(name)
    return module


def leave_miss(misses: str, name: str, data: bytes) -> None:
    if len(os.listdir(misses)) < MAX_MISSES:
        with open(os.path.join(misses, name), "wb") as handle:
            handle.write(data)


def preamble(text: str) -> list[str]:
    """The headers of the file's leading `#include <...>` lines (blank lines and `//`
    comments between them allowed); anything else ends the run."""
    headers = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if "\\" in stripped or "??/" in stripped:
            break  # a continued line could hide the next one
        if stripped.startswith("//"):
            continue
        found = INCLUDE.fullmatch(stripped)
        if found is None or ".." in found.group(1).split("/"):
            break
        headers.append(found.group(1))
    return headers


def glue_memo(shared: Any, memo: str, misses: str) -> None:
    compiler_js = shared.path_from_root("src", "compiler.js")
    original = shared.run_js_tool

    def run_js_tool(
        filename: str,
        jsargs: list[str] = [],  # noqa: B006 (emscripten's own signature)
        node_args: list[str] = [],  # noqa: B006
        **kw: Any,
    ) -> Any:
        cwd = os.getcwd()
        plain = (
            filename == compiler_js
            and not node_args
            and len(jsargs) == 1
            and kw.get("stdout") == subprocess.PIPE
            and kw.get("stderr") is None
            and kw.get("env", {}).get("EMCC_BUILD_DIR") == cwd
        )
        if not plain:
            return original(filename, jsargs, node_args, **kw)
        with open(jsargs[0], "rb") as handle:
            material = GLUE_TAG + b"\0" + cwd.encode() + b"\0" + handle.read()
        digest = hashlib.sha256(material).hexdigest()
        try:
            with open(os.path.join(memo, "g-" + digest), encoding="utf-8") as handle:
                entry = json.load(handle)
        except (OSError, ValueError):
            entry = None
        if isinstance(entry, dict) and isinstance(entry.get("stdout"), str):
            sys.stdout.flush()
            sys.stderr.write(entry.get("stderr", ""))
            sys.stderr.flush()
            return entry["stdout"]
        leave_miss(misses, "g-" + digest, material)
        return original(filename, jsargs, node_args, **kw)

    shared.run_js_tool = run_js_tool


def acorn_memo(building: Any, shared: Any, config: Any, memo: str, misses: str) -> None:
    """acorn-optimizer.js reads only its input file and its passes; emcc runs it with its
    output to a file or to a pipe (decoded as text, as run_process does)."""
    optimizer = shared.path_from_root("tools", "acorn-optimizer.js")
    node = list(config.NODE_JS)
    original = building.check_call

    def check_call(cmd: list[str], *args: Any, **kw: Any) -> Any:
        head = len(node)
        plain = (
            not args
            and set(kw) == {"stdout"}
            and list(cmd[:head]) == node
            and len(cmd) > head + 1
            and cmd[head] == optimizer
            and all(ACORN_FLAG.match(flag) for flag in cmd[head + 2 :])
        )
        if not plain:
            return original(cmd, *args, **kw)
        with open(cmd[head + 1], "rb") as handle:
            source = handle.read()
        flags = json.dumps(list(cmd[head + 2 :])).encode()
        material = b"\0".join([ACORN_TAG, os.getcwd().encode(), flags, source])
        digest = hashlib.sha256(material).hexdigest()
        try:
            with open(os.path.join(memo, "a-" + digest), "rb") as handle:
                output = handle.read()
        except OSError:
            leave_miss(misses, "a-" + digest, material)
            return original(cmd, *args, **kw)
        stdout = kw["stdout"]
        if stdout == subprocess.PIPE:
            text = output.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
            return subprocess.CompletedProcess(cmd, 0, text, None)
        stdout.flush()
        stdout.buffer.write(output)
        stdout.flush()
        return subprocess.CompletedProcess(cmd, 0, None, None)

    building.check_call = check_call


def pch_material(cmd: list[str]) -> bytes | None:
    """The material of the PCH a clang compile emcc runs could use; None when it cannot
    use one. emcc compiles a source as `CLANG FLAGS... SRC -c -o OBJ`."""
    if len(cmd) < 5 or cmd[-3:-1] != ["-c", "-o"]:
        return None
    source, template = cmd[-4], cmd[:-4]
    language = LANGUAGES.get(os.path.splitext(source)[1])
    if language is None or not os.path.basename(template[0]).startswith("clang"):
        return None
    if any(NO_PCH.match(arg) for arg in template[1:]):
        return None
    try:
        with open(source, encoding="utf-8") as handle:
            headers = preamble(handle.read())
    except (OSError, ValueError):
        return None
    if not headers:
        return None
    fields = {"cwd": os.getcwd(), "headers": headers, "language": language, "template": template}
    return PCH_TAG + b"\0" + json.dumps(fields, sort_keys=True).encode()


def pch_memo(shared: Any, pchs: str, misses: str) -> None:
    original = shared.check_call

    def check_call(cmd: list[str], *args: Any, **kw: Any) -> Any:
        material = None if args or kw else pch_material(list(cmd))
        if material is None:
            return original(cmd, *args, **kw)
        digest = hashlib.sha256(material).hexdigest()
        pch = os.path.join(pchs, "p-" + digest)
        if os.path.isfile(pch) and os.path.isfile(os.path.join(pchs, "h-" + digest)):
            with_pch = [*cmd[:-4], "-include-pch", pch, *cmd[-4:]]
            done = subprocess.run(with_pch, capture_output=True, check=False)
            if done.returncode == 0 and not done.stdout and not done.stderr:
                return done
        else:
            leave_miss(misses, "p-" + digest, material)
        return original(cmd, *args, **kw)

    shared.check_call = check_call


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise ValueError("bad LEB128")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _sections(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(id, start of body, end) of each section of a module (past its 8-byte header); a
    ValueError where one runs past the end."""
    pos = 8
    while pos < len(data):
        section = data[pos]
        size, body = _leb128(data, pos + 1)
        end = body + size
        if end > len(data) or size >= 1 << 32:
            raise ValueError("a section runs past the end")
        yield section, body, end
        pos = end


def strip_sections(data: bytes, patterns: list[str]) -> bytes | None:
    """The wasm module without the custom sections whose names match `patterns` (globs), as
    llvm-objcopy --remove-section writes it; None when `data` is not a module it can read."""
    if data[:8] != b"\0asm\1\0\0\0":
        return None
    kept = [data[:8]]
    try:
        for section, body, end in _sections(data):
            size = end - body
            if section == 0:
                length, name_at = _leb128(data, body)
                if name_at + length > end:
                    return None
                name = data[name_at : name_at + length].decode("utf-8")
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                    continue
            padded = bytes((size >> (7 * i) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5))
            kept += [bytes([section]), padded, data[body:end]]
    except (ValueError, UnicodeDecodeError):
        return None
    return b"".join(kept)


# The wasm object format's linking metadata (llvm's BinaryFormat/Wasm.h): symbol kinds, the
# flags that decide how llvm-nm prints a symbol, and the symbol table's subsection.
SYMBOL_FUNCTION, SYMBOL_DATA, SYMBOL_GLOBAL, SYMBOL_SECTION, SYMBOL_TAG, SYMBOL_TABLE = range(6)
FLAG_WEAK, FLAG_LOCAL, FLAG_UNDEFINED, FLAG_EXPLICIT_NAME = 0x1, 0x2, 0x10, 0x40
SYMBOL_TABLE_SUBSECTION = 8
IMPORTED = {0: SYMBOL_FUNCTION, 1: SYMBOL_TABLE, 3: SYMBOL_GLOBAL, 4: SYMBOL_TAG}


class _Reader:
    """A cursor over one section (or subsection) of a module, which stops at its end."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def uint(self) -> int:
        value, self.pos = _leb128(self.data, self.pos)
        if self.pos > self.end:
            raise ValueError("past the end")
        return value

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ValueError("past the end")
        self.pos += 1
        return self.data[self.pos - 1]

    def name(self) -> str:
        length = self.uint()
        if self.pos + length > self.end:
            raise ValueError("past the end")
        self.pos += length
        return self.data[self.pos - length : self.pos].decode("utf-8")

    def limits(self) -> None:
        flags = self.uint()
        self.uint()
        if flags & 1:
            self.uint()


def _imports(reader: _Reader) -> dict[int, list[str]]:
    """The field names of the imported functions, tables, globals and tags, by symbol kind."""
    fields: dict[int, list[str]] = {kind: [] for kind in IMPORTED.values()}
    for _ in range(reader.uint()):
        reader.name()
        field = reader.name()
        kind = reader.byte()
        if kind == 0:
            reader.uint()
        elif kind == 1:
            reader.byte()
            reader.limits()
        elif kind == 2:
            reader.limits()
        elif kind == 3:
            reader.byte()
            reader.byte()
        elif kind == 4:
            reader.byte()
            reader.uint()
        else:
            raise ValueError("unknown import kind")
        if kind in IMPORTED:
            fields[IMPORTED[kind]].append(field)
    return fields


def _symbol_table(reader: _Reader, imports: dict[int, list[str]]) -> list[tuple[str, int]]:
    """(name, flags) of each symbol, as llvm's WasmObjectFile names them."""
    symbols = []
    for _ in range(reader.uint()):
        kind, flags = reader.byte(), reader.uint()
        defined = not flags & FLAG_UNDEFINED
        if kind in (SYMBOL_FUNCTION, SYMBOL_GLOBAL, SYMBOL_TAG, SYMBOL_TABLE):
            index = reader.uint()
            # Undefined without a name of its own: its import's (an IndexError is a module
            # this cannot read).
            explicit = defined or flags & FLAG_EXPLICIT_NAME
            name = reader.name() if explicit else imports[kind][index]
        elif kind == SYMBOL_DATA:
            name = reader.name()
            if defined:
                reader.uint(), reader.uint(), reader.uint()
        elif kind == SYMBOL_SECTION:
            reader.uint()
            if not flags & FLAG_LOCAL:
                raise ValueError("a section symbol that is not local")
            continue  # local: emcc does not count it
        else:
            raise ValueError("unknown symbol kind")
        symbols.append((name, flags))
    return symbols


def object_symbols(data: bytes) -> dict[str, Any] | None:
    """A wasm object's symbols as emcc's llvm_nm_multiple records llvm-nm's listing of them
    (parse_llvm_nm_symbols): undefined ones (`U`) as undefs, global or weak defined ones as
    defs, no commons; weak undefined and local ones are not counted. None when `data` is not
    an object this can read (llvm-nm reads it then)."""
    if data[:8] != b"\0asm\1\0\0\0":
        return None
    imports: dict[int, list[str]] = {}
    table: list[tuple[str, int]] | None = None
    try:
        for section, body, end in _sections(data):
            reader = _Reader(data, body, end)
            if section == 2:
                imports = _imports(reader)
            elif section == 0 and reader.name() == "linking":
                if reader.uint() != 2:
                    return None
                while reader.pos < end:
                    kind, length = reader.byte(), reader.uint()
                    if kind == SYMBOL_TABLE_SUBSECTION:
                        table = _symbol_table(
                            _Reader(data, reader.pos, reader.pos + length), imports
                        )
                    reader.pos += length
    except (ValueError, UnicodeDecodeError, IndexError, KeyError):
        return None
    if not table or any(":" in name or "\n" in name for name, _ in table):
        # Without a symbol llvm-nm prints nothing, which emcc records as a parse error; and
        # emcc's parse of llvm-nm's lines splits them on their last colon.
        return None
    defs, undefs = set(), set()
    for name, flags in table:
        if flags & FLAG_WEAK:
            if not flags & FLAG_UNDEFINED:
                defs.add(name)
        elif flags & FLAG_UNDEFINED:
            undefs.add(name)
        elif not flags & FLAG_LOCAL:
            defs.add(name)
    return {"defs": defs, "undefs": undefs, "commons": set(), "parse_error": False}


def python_strip(building: Any) -> None:
    original = building.strip

    def strip(infile: str, outfile: str, debug: bool = False, producers: bool = False) -> None:
        patterns = [".debug*"] * debug + ["producers"] * producers
        with open(infile, "rb") as handle:
            stripped = strip_sections(handle.read(), patterns)
        if stripped is None:
            original(infile, outfile, debug=debug, producers=producers)
            return
        with open(outfile, "wb") as handle:
            handle.write(stripped)

    building.strip = strip


SYMBOL_KINDS = ("defs", "undefs", "commons")


def read_symbols(path: str) -> dict[str, dict[str, Any]]:
    """Kept symbols (SYMBOLS_FILE: object path to its defs, undefs and commons as lists) as
    emcc's nm_cache holds them, by absolute path; what is not of that shape is left out."""
    try:
        with open(path, encoding="utf-8") as handle:
            kept = json.load(handle)
    except (OSError, ValueError):
        return {}
    found = {}
    for name, entry in kept.items() if isinstance(kept, dict) else ():
        if isinstance(entry, dict) and all(
            isinstance(entry.get(kind), list) and all(isinstance(s, str) for s in entry[kind])
            for kind in SYMBOL_KINDS
        ):
            record: dict[str, Any] = {kind: set(entry[kind]) for kind in SYMBOL_KINDS}
            found[os.path.abspath(name)] = {**record, "parse_error": False}
    return found


class LinkSymbols:
    """The symbols emcc's link reads with llvm-nm (building.llvm_nm_multiple): kept ones
    (read by an earlier link), then the objects' own symbol tables read here
    (`object_symbols`), then llvm-nm for what this cannot read. With `out`, what was read
    goes there, for the service to keep beside the objects."""

    def __init__(self, kept: dict[str, dict[str, Any]], out: str | None) -> None:
        self.kept = kept
        self.out = out

    def install(self, building: Any) -> None:
        building.nm_cache.update(self.kept)
        original = building.llvm_nm_multiple
        out = self.out
        read: dict[str, dict[str, list[str]]] = {}

        def llvm_nm_multiple(files: list[str]) -> Any:
            new = [name for name in files if name not in building.nm_cache]
            for name in new:
                found = _read_object_symbols(name)
                if found is not None:
                    building.nm_cache[name] = found
            if any(name not in building.nm_cache for name in files):
                original(files)
            for name in new:
                if not building.nm_cache.get(name, {"parse_error": True})["parse_error"]:
                    # As read: the link adds to them afterwards (system_libs counts the
                    # exports as the first input's undefs).
                    entry = building.nm_cache[name]
                    read[name] = {kind: sorted(entry[kind]) for kind in SYMBOL_KINDS}
            if out is not None and new:
                with open(out, "w", encoding="utf-8") as handle:
                    json.dump(read, handle)
            missing = {"defs": set(), "undefs": set(), "parse_error": True}  # as emcc's
            return [
                building.nm_cache[name] if name in building.nm_cache else copy.deepcopy(missing)
                for name in files
            ]

        building.llvm_nm_multiple = llvm_nm_multiple


def _read_object_symbols(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            return object_symbols(handle.read())
    except OSError:
        return None


def wait_to_link() -> bool:
    """Wait for the build's word: whether to link."""
    return sys.stdin.readline() == "go\n"


def fill_glue(material_file: str, entry_file: str) -> int:
    config, shared = emscripten("tools.config"), emscripten("tools.shared")
    with open(material_file, "rb") as handle:
        tag, cwd, settings = handle.read().split(b"\0", 2)
    if tag != GLUE_TAG or cwd.decode() != os.getcwd():
        return 2
    settings_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), "settings.json")
    with open(settings_file, "wb") as handle:
        handle.write(settings)
    env = os.environ.copy()
    env["EMCC_BUILD_DIR"] = os.getcwd()
    done = shared.run_process(
        [*config.NODE_JS, shared.path_from_root("src", "compiler.js"), settings_file],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=shared.path_from_root("src"),
        env=env,
    )
    if done.returncode != 0 or FORWARDED not in done.stdout:
        sys.stderr.write(done.stderr)
        return 1
    with open(entry_file, "w", encoding="utf-8") as handle:
        json.dump({"stdout": done.stdout, "stderr": done.stderr}, handle)
    return 0


def fill_acorn(material_file: str, entry_file: str) -> int:
    config, shared = emscripten("tools.config"), emscripten("tools.shared")
    with open(material_file, "rb") as handle:
        tag, cwd, flags, source = handle.read().split(b"\0", 3)
    passes = json.loads(flags)
    if tag != ACORN_TAG or cwd.decode() != os.getcwd():
        return 2
    if not all(isinstance(flag, str) and ACORN_FLAG.match(flag) for flag in passes):
        return 2
    input_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), "input.js")
    with open(input_file, "wb") as handle:
        handle.write(source)
    optimizer = shared.path_from_root("tools", "acorn-optimizer.js")
    done = subprocess.run(
        [*config.NODE_JS, optimizer, input_file, *passes], capture_output=True, check=False
    )
    if done.returncode != 0 or done.stderr:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        return 1
    with open(entry_file, "wb") as handle:
        handle.write(done.stdout)
    return 0


def fill_pch(material_file: str, header: str, output: str) -> int:
    with open(material_file, "rb") as handle:
        tag, fields = handle.read().split(b"\0", 1)
    found = json.loads(fields)
    if tag != PCH_TAG or found["cwd"] != os.getcwd():
        return 2
    kind = found["language"] + "-header"
    argv = [*found["template"], "-x", kind, header, "-o", output, "-Xclang", "-fno-pch-timestamp"]
    return subprocess.run(argv, check=False).returncode


def main() -> int:
    root, mode = sys.argv[1], sys.argv[2]
    sys.path.insert(0, root)
    if mode == "--fill-glue":
        return fill_glue(*sys.argv[3:5])
    if mode == "--fill-acorn":
        return fill_acorn(*sys.argv[3:5])
    if mode == "--fill-pch":
        return fill_pch(*sys.argv[3:6])
    # As `python3 emcc.py ARGS` would see it, before emscripten reads it: its messages are
    # prefixed with the program's name, and it re-runs sys.argv[0] for --cflags.
    argv = sys.argv = [os.path.join(root, mode + ".py"), *sys.argv[3:]]
    link_after = os.environ.pop("EMCC_TRIO_LINK_AFTER", None)
    plan = None if link_after is None else json.loads(link_after)
    emcc, shared = emscripten("emcc"), emscripten("tools.shared")
    building = emscripten("tools.building")
    python_strip(building)
    if plan is None:
        LinkSymbols({}, None).install(building)
    else:
        if not wait_to_link():
            return 0
        # Written with the job dir, which the service may lay out after this started.
        LinkSymbols(read_symbols(plan["symbols"]), plan["out"]).install(building)
    misses = os.environ.get("EMCC_TRIO_MISSES")
    if misses and os.environ.get("EMCC_TRIO_GLUE"):
        glue_memo(shared, os.environ["EMCC_TRIO_GLUE"], misses)
        config = emscripten("tools.config")
        acorn_memo(building, shared, config, os.environ["EMCC_TRIO_GLUE"], misses)
    if misses and os.environ.get("EMCC_TRIO_PCH"):
        pch_memo(shared, os.environ["EMCC_TRIO_PCH"], misses)
    if mode == "em++":
        emcc.run_via_emxx = True
        return int(emcc.run(argv))
    return int(emcc.main(argv))


def exit_now(code: object) -> NoReturn:
    """Exit as `sys.exit(code)` would, without the interpreter's teardown of emscripten's
    modules (about 20 ms, on every compile's path): the exit handlers emscripten registers
    (its temp files, its cache lock) still run, and what is buffered is written."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            code = code or 120  # a failure keeps its status; else the interpreter's 120
    os._exit(code & 0xFF)


if __name__ == "__main__":
    try:
        status: object = main()
    except SystemExit as stop:
        status = stop.code
    exit_now(status)
