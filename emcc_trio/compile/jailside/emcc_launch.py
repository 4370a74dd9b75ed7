"""emcc and em++ as the service runs them: from emscripten's shipped bytecode, with the glue memo.

Runs inside the jail under the system's python3, standard library only, as emcc itself does.

    emcc_launch.py ROOT emcc|em++ ARGS...   compile as `emcc ARGS...` would
    emcc_launch.py ROOT --fill MATERIAL ENTRY   compute one memo entry (a clean jail)

`/usr/bin/emcc` runs `python3 emcc.py`, which compiles the 160 KB script on every call;
importing it as a module takes the `.pyc` Debian ships instead. Output is the same.

The memo: `src/compiler.js` (the JS glue) reads only its settings file and the toolchain, so
its output is kept under a digest of the settings and the working directory (the jail's
fixed /job). `EMCC_TRIO_GLUE` names the memo (mounted read-only) and `EMCC_TRIO_GLUE_MISSES`
where a miss leaves its material; the service computes the entry later, in a jail that holds
nothing but that material (`--fill`), so no request's files ever reach another's glue.
"""

import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
from types import ModuleType
from typing import Any

TAG = b"emcc-trio-glue-1"
MAX_MISSES = 4
FORWARDED = "//FORWARDED_DATA:"


def material(cwd: str, settings: bytes) -> bytes:
    return TAG + b"\0" + cwd.encode() + b"\0" + settings


def emscripten(name: str) -> Any:  # emscripten's modules have no types
    module: ModuleType = importlib.import_module(name)
    return module


def remember_misses(shared: Any, memo: str, misses: str) -> None:
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
            data = material(cwd, handle.read())
        digest = hashlib.sha256(data).hexdigest()
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
        if len(os.listdir(misses)) < MAX_MISSES:
            with open(os.path.join(misses, digest), "wb") as handle:
                handle.write(data)
        return original(filename, jsargs, node_args, **kw)

    shared.run_js_tool = run_js_tool


def fill(material_file: str, entry_file: str) -> int:
    config, shared = emscripten("tools.config"), emscripten("tools.shared")
    with open(material_file, "rb") as handle:
        tag, cwd, settings = handle.read().split(b"\0", 2)
    if tag != TAG or cwd.decode() != os.getcwd():
        return 2
    settings_file = os.path.join(tempfile.mkdtemp(), "settings.json")
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


def main() -> int:
    root, mode = sys.argv[1], sys.argv[2]
    sys.path.insert(0, root)
    if mode == "--fill":
        return fill(sys.argv[3], sys.argv[4])
    emcc, shared = emscripten("emcc"), emscripten("tools.shared")
    memo, misses = os.environ.get("EMCC_TRIO_GLUE"), os.environ.get("EMCC_TRIO_GLUE_MISSES")
    if memo and misses:
        remember_misses(shared, memo, misses)
    argv = [os.path.join(root, mode + ".py"), *sys.argv[3:]]
    if mode == "em++":
        emcc.run_via_emxx = True
        return int(emcc.run(argv))
    return int(emcc.main(argv))


if __name__ == "__main__":
    sys.exit(main())
